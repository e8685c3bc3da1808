"""torch's intra-op threads following the cores the machine gives now (``threads=auto``).

On a shared machine a second torch thread that has to fight for a core makes every matmul
wait for the slower thread: measured on 2 cores, one SAC update took 9.5 ms with one thread
and 97 ms with two while one other job ran, yet 11 ms with two against 19 ms with one on a
quiet machine. So a fixed count is wrong one way or the other; :class:`ThreadGovernor` reads
the whole machine's CPU time (``/proc/stat``) less this process's own (``os.times``: every
thread of it, torch's spinning workers included), every ``period_s``, and sets
``torch.set_num_threads`` to the cores nobody else is using, between 1 and ``limit``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

PROC_STAT = "/proc/stat"


def machine_busy_seconds(proc_stat: str = PROC_STAT) -> float | None:
    """CPU seconds spent busy on all cores since boot (``/proc/stat``'s first line: user,
    nice, system, irq, softirq, steal), or ``None`` where the file is not there (not Linux)."""
    try:
        with open(proc_stat, encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds this process has used, all its threads together."""
    t = os.times()
    return t.user + t.system


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ThreadGovernor:
    """Keeps torch at the number of cores other processes leave idle, within ``[1, limit]``.

    Args:
        limit: the most threads to use (the cores the actor leaves).
        period_s: how often :meth:`poll` measures (between two measurements it returns at
            once: a monotonic-clock comparison, cheap enough for every env step).
        busy, own, clock, set_threads: the measurements and the effect (the machine's busy
            CPU seconds, this process's, the wall clock, torch's setter); replaced only by
            tests that need a load this machine cannot produce on demand.

    Where the machine's CPU time cannot be read (no ``/proc/stat``) it stays at one thread,
    the setting that is never badly wrong.
    """

    def __init__(self, limit: int, period_s: float = 5.0,
                 busy: Callable[[], float | None] = machine_busy_seconds,
                 own: Callable[[], float] = own_seconds,
                 clock: Callable[[], float] = time.monotonic,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit, self.period_s = limit, period_s
        self._busy, self._own, self._clock, self._set = busy, own, clock, set_threads
        self.threads = 1
        self._mark = self._sample()

    def _sample(self) -> tuple[float, float | None, float]:
        return self._clock(), self._busy(), self._own()

    def start(self, window_s: float = 0.2) -> int:
        """Measure over ``window_s`` and set the first count (before torch starts its thread
        pool, so call it before any torch work); returns it."""
        time.sleep(window_s)
        self.threads = min(self.limit, max(1, self._measure()))
        self._set(self.threads)
        return self.threads

    def poll(self) -> int | None:
        """Measure if ``period_s`` has passed since the last measurement and set the count;
        returns the new count when it changed, else ``None``."""
        if self._clock() - self._mark[0] < self.period_s:
            return None
        before = self.threads
        self._apply(self._measure())
        return self.threads if self.threads != before else None

    def _measure(self) -> int:
        then, now = self._mark, self._sample()
        self._mark = now
        wall = now[0] - then[0]
        if then[1] is None or now[1] is None or wall <= 0:
            return 1
        others = max(0.0, (now[1] - then[1]) - (now[2] - then[2])) / wall  # cores in use
        return int(usable_cpus() - others + 0.5)  # a core counts as free when half idle

    def _apply(self, free: int) -> None:
        threads = min(self.limit, max(1, free))
        if threads != self.threads:
            self._set(threads)
        self.threads = threads


@dataclass(frozen=True)
class ThreadPolicy:
    """The run's ``threads`` key, resolved: ``spec`` is ``"auto"`` or a count, ``limit`` the
    cores the actor leaves (what ``auto`` may use). Picklable, for the learner process."""

    spec: str = "1"
    limit: int = 1

    def apply(self) -> ThreadGovernor | None:
        """Set torch's threads, before torch starts its pool: a fixed count, or (``auto``) a
        started :class:`ThreadGovernor`, returned so the caller's loop can :meth:`poll` it."""
        if self.spec != "auto":
            torch.set_num_threads(int(self.spec))
            return None
        governor = ThreadGovernor(self.limit)
        governor.start()
        return governor

    def describe(self, governor: ThreadGovernor | None) -> str:
        """``1 torch thread`` or ``auto torch threads (2 now, up to 2, following the idle
        cores)``; ``governor``: the one :meth:`apply` started, for the count now."""
        if self.spec != "auto":
            n = int(self.spec)
            return f"{n} torch thread{'s' * (n > 1)}"
        now = f"{governor.threads} now, " if governor is not None else ""
        return f"auto torch threads ({now}up to {self.limit}, following the idle cores)"


ONE_THREAD = ThreadPolicy()  # threads=1
