"""Operating-system scheduling for the actor: a real-time priority and, optionally, its own CPUs.

A fixed-rate loop on a general-purpose kernel misses deadlines when the scheduler runs something
else at its tick: the learner, the queue's feeder thread, any other process. Under
``SCHED_FIFO`` the actor's thread preempts every normal thread the moment its sleep ends, the
way ros2_control's controller manager runs its update loop (priority 50). The policy is set
with ``SCHED_RESET_ON_FORK``, so processes and threads it starts later (the learner) run at
normal priority; the replay log's writer thread and the console thread (status lines) are
raised to one level below it (:func:`raise_thread`), and the learner queue's feeder thread,
which the writer starts, inherits that. Without the privilege for it
(``CAP_SYS_NICE``, or an ``rtprio`` limit in ``/etc/security/limits.conf``) it falls back to
the highest ``nice`` allowed, then to nothing; what was applied is reported, never an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from mbpo_arm.agent.runtime.config import PRIORITIES

FIFO_PRIORITY = 50  # ros2_control's default for its real-time loop
NICE = -10


def raise_priority(kind: str) -> tuple[str, Callable[[], None]]:
    """Raise the calling thread's priority as far as ``kind`` (``fifo``, ``nice`` or
    ``normal``) asks and the system allows.

    Returns what was applied (``"fifo:50"``, ``"nice:-10"`` or the nice value reached, or
    ``"normal"``) and a function that puts the thread back as it was.
    """
    if kind not in PRIORITIES:
        raise ValueError(f"priority {kind!r} is not one of {', '.join(PRIORITIES)}")
    if not hasattr(os, "getpriority"):
        return "normal", lambda: None
    nice = os.getpriority(os.PRIO_PROCESS, 0)

    def undo() -> None:
        if hasattr(os, "SCHED_OTHER"):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        with contextlib.suppress(PermissionError, OSError):  # lowering needs no privilege
            os.setpriority(os.PRIO_PROCESS, 0, nice)

    if kind == "fifo" and hasattr(os, "SCHED_FIFO"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                                  os.sched_param(FIFO_PRIORITY))
            return f"fifo:{FIFO_PRIORITY}", undo
        except (PermissionError, OSError):
            pass
    if kind in ("fifo", "nice"):
        for value in (NICE, -5, -1):
            try:
                os.setpriority(os.PRIO_PROCESS, 0, value)
                return f"nice:{value}", undo
            except (PermissionError, OSError):
                continue
    return "normal", lambda: None


def raise_thread(tid: int | None, applied: str) -> None:
    """Give another thread of this process (kernel id ``tid``) the priority ``applied`` (as
    :func:`raise_priority` returned it), one FIFO level lower. The actor's helper threads (the
    replay log's writer) run just below its tick that way: a normal-priority helper holding
    the GIL, preempted by the learner, would stall the real-time thread waiting for it
    (priority inversion). Does nothing for ``normal`` or an unknown ``tid``."""
    if tid is None:
        return
    with contextlib.suppress(PermissionError, OSError):
        if applied.startswith("fifo:"):
            os.sched_setscheduler(tid, os.SCHED_FIFO,
                                  os.sched_param(int(applied.split(":")[1]) - 1))
        elif applied.startswith("nice:"):
            os.setpriority(os.PRIO_PROCESS, tid, int(applied.split(":")[1]))


def pin(cpus: Sequence[int] | None) -> Callable[[], None]:
    """Restrict the calling thread (and what it starts later) to ``cpus``; ``None`` leaves it.
    Returns a function that restores the CPUs it had."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return lambda: None
    before = os.sched_getaffinity(0)
    unknown = sorted(set(cpus) - before)
    if unknown or not cpus:
        raise ValueError(f"CPUs {list(cpus)}: {unknown or 'none'} not available; this process "
                         f"may use {sorted(before)} (runtime.actor_cpus / learner_cpus)")
    os.sched_setaffinity(0, cpus)
    return lambda: os.sched_setaffinity(0, before)


def other_cpus(cpus: Sequence[int] | None) -> list[int] | None:
    """The CPUs this process may use that are not in ``cpus`` (for the learner when the actor
    takes ``cpus``); ``None`` when ``cpus`` is ``None`` or it would leave none."""
    if cpus is None or not hasattr(os, "sched_getaffinity"):
        return None
    rest = sorted(os.sched_getaffinity(0) - set(cpus))
    return rest or None


def current_cpu() -> int:
    """The CPU the calling thread last ran on (``/proc/thread-self/stat``, field 39); -1 off
    Linux. A file read (~20 us): for rare events such as a missed deadline, not every tick."""
    try:
        stat = Path("/proc/thread-self/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[36])  # fields after the command name start at 3
