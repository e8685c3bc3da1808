"""The supervisor: the actor in this (main) process, the learner as a spawned child.

It watches the learner between ticks. When the learner dies the actor keeps acting (with the
last weights, or holding position with zero actions: ``runtime.on_learner_death``) and, after
``restart_delay_s``, a new learner starts from the newest checkpoint plus the replay log: every
transition is in the log before it is queued, so none is lost. Each learner gets a fresh queue:
a process killed inside ``Queue.get`` would leave the old queue's lock held forever.

SIGINT / SIGTERM: the actor stops sending commands (holding position), syncs the log, the
learner ingests up to the actor's last transition and checkpoints, everything exits 0.

A learner that cannot go on (training diverged, a damaged checkpoint: exit status
:data:`~mbpo_arm.agent.runtime.learner.FATAL_EXIT`) is not restarted: the actor stops and
:meth:`Supervisor.run` raises the learner's error after the figures are written. The learner
dies with this process whatever kills it (see :func:`~mbpo_arm.agent.runtime.learner.
die_with_parent`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from mbpo_arm.agent.checkpoint import CheckpointError, Diverged
from mbpo_arm.agent.io import atomic_save_npz, atomic_write_text
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import Actor, run_actor
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.learner import FATAL_EXIT, learner_main
from mbpo_arm.agent.runtime.priority import other_cpus
from mbpo_arm.agent.runtime.replay_log import read_log
from mbpo_arm.agent.threads import ONE_THREAD, ThreadPolicy

PID_FILE = "learner.pid"
STATS_FILE = "runtime_stats.json"
TICKS_FILE = "runtime_ticks.npz"


def spawn_learner(ctx: BaseContext, make_run: Callable[[], Any], runtime: RuntimeConfig,
                  threads: ThreadPolicy, log_path: Path, weights_name: str, control: Any
                  ) -> tuple[Any, Any, Any]:
    """Start a learner process on ``log_path`` (it restores from its run's newest checkpoint
    and reads the log up to ``control[ACTOR_STEPS]``) with a fresh queue; returns ``(process,
    queue, reports)``, ``reports`` the receiving end of its failure pipe."""
    q = ctx.Queue(runtime.queue_size)
    control[ctl.READY] = 0
    reports, send = ctx.Pipe(duplex=False)
    main = threading.current_thread() is threading.main_thread()  # see die_with_parent
    proc = ctx.Process(target=learner_main, name="mbpo-learner", daemon=True,
                       args=(make_run, runtime, threads, str(log_path), weights_name, q,
                             control, send, main))
    proc.start()
    send.close()  # the child has its copy
    return proc, q, reports


def drop_queue(q: Any) -> None:
    """Close a learner's queue without waiting for its feeder (it may be stuck on a full
    pipe: the learner that would have emptied it is dead)."""
    if q is not None:
        q.cancel_join_thread()
        q.close()


class Supervisor:
    """Runs ``actor`` until ``total_steps`` (or a signal), keeping a learner alive.

    Args:
        actor: the fixed-rate actor (its log, reader and control block set up).
        runtime: runtime settings; ``make_run``: a picklable builder of the learner's
            :class:`agent.run.Run`; ``run_dir``: where the pid and stats files go.
        weights_name: the shared-memory block's name; ``ctx``: a spawn context.
        threads: torch threads of the learner process (the run's ``threads``, resolved).
    """

    def __init__(self, actor: Actor, runtime: RuntimeConfig, make_run: Callable[[], Any],
                 run_dir: Path, weights_name: str, ctx: BaseContext,
                 threads: ThreadPolicy = ONE_THREAD) -> None:
        if runtime.learner_cpus is None and runtime.actor_cpus is not None:  # before pinning
            runtime = dataclasses.replace(runtime, learner_cpus=other_cpus(runtime.actor_cpus))
        self.actor, self.runtime, self.make_run, self.run_dir = actor, runtime, make_run, run_dir
        self.weights_name, self.ctx, self.control = weights_name, ctx, actor.control
        self.threads = threads
        self.proc: Any = None
        self.queue: Any = None
        self.stopping = False
        self.restarts, self.deaths = 0, 0
        self.learner_events: list[tuple[str, int]] = []  # (death | restart, actor tick)
        self.died_at: float | None = None
        self.learner_exitcodes: list[int | None] = []
        self.failure: tuple[str, str] | None = None  # (kind, line) of a learner that gave up
        self.reports: Any = None  # the receiving end of the learner's failure pipe

    # -------------------------------------------------------------------- the learner
    def start_learner(self) -> None:
        """A fresh queue and a new learner process (restores and catches up by itself)."""
        self._drop_queue()
        self.proc, self.queue, self.reports = spawn_learner(
            self.ctx, self.make_run, self.runtime, self.threads, self.actor.log.path,
            self.weights_name, self.control)
        atomic_write_text(self.run_dir / PID_FILE, str(self.proc.pid))
        self.actor.queue = self.queue
        self.died_at = None

    def _drop_queue(self) -> None:
        self.actor.queue = None
        drop_queue(self.queue)
        self.queue = None

    def watch(self) -> None:
        """Between ticks: notice a dead learner, hold or act, restart after the delay."""
        if self.proc is not None and self.died_at is None and not self.proc.is_alive():
            self.deaths += 1
            self.learner_events.append(("death", self.actor.ticks))
            self.learner_exitcodes.append(self.proc.exitcode)
            self.died_at = time.monotonic()
            self.actor.hold = self.runtime.on_learner_death == "hold"
            self._drop_queue()
            if self.proc.exitcode == FATAL_EXIT:
                self._gave_up()
        if (self.died_at is not None and self.failure is None
                and self.restarts < self.runtime.max_restarts
                and time.monotonic() - self.died_at >= self.runtime.restart_delay_s):
            self.restarts += 1
            self.learner_events.append(("restart", self.actor.ticks))
            self.start_learner()
        if self.actor.hold and self.died_at is None and self.control[ctl.READY]:
            self.actor.hold = False

    # -------------------------------------------------------------------------- run
    def run(self, total_steps: int) -> dict[str, Any]:
        """Act until ``total_steps`` transitions are logged or a signal arrives; then the
        orderly stop. Returns the figures (also written to ``runtime_stats.json``)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT,
                                                                    signal.SIGTERM)}
        try:
            self.start_learner()
            self.actor.start(self.watch)
            run_actor(self.actor, lambda: self.stopping or self.actor.steps >= total_steps
                      or self.control[ctl.REACHED] >= 0, self.watch)
            self.actor.stop()
            clean = self.stop_learner()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._drop_queue()
        stats = self.report(clean)
        if self.failure is not None:
            kind, line = self.failure
            raise (Diverged if kind == "Diverged" else CheckpointError)(line)
        return stats

    def _gave_up(self) -> None:
        """The learner exited with its error: stop the run, no restart."""
        line = ("CheckpointError", "the learner stopped without saying why")
        if self.reports.poll():
            line = self.reports.recv()
        self.failure, self.stopping = line, True

    def _on_signal(self, signum: int, frame: Any) -> None:
        del frame
        self.stopping = True
        self.signal = signal.Signals(signum).name

    def stop_learner(self) -> bool:
        """Ask the learner to ingest everything and checkpoint; restart it for that if it is
        dead. ``True`` when the final checkpoint holds every logged transition."""
        if self.failure is not None:
            return False  # its last good checkpoint stays; the log holds every transition
        target = self.actor.steps
        self.control[ctl.STOP_AT] = target
        deadline = time.monotonic() + self.runtime.stop_timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or not self.proc.is_alive():
                if self.proc is not None and self.proc.exitcode == FATAL_EXIT:
                    self._gave_up()
                    return False
                if self.proc is not None and self.proc.exitcode == 0 \
                        and int(self.control[ctl.CHECKPOINT_STEP]) >= target:
                    return True
                if self.proc is not None:
                    self.learner_exitcodes.append(self.proc.exitcode)
                self.start_learner()  # it restores, reads the log, sees STOP_AT, checkpoints
            self.proc.join(timeout=0.1)
        self.proc.kill()
        return False

    def extra_figures(self) -> dict[str, Any]:
        """More figures for ``runtime_stats.json`` (a subclass's)."""
        return {}

    def report(self, clean: bool) -> dict[str, Any]:
        """Counts of the log, the actor and the learner, plus the actor's figures."""
        log = self.actor.log
        log.close()
        records = read_log(log.path, log.obs_dim, log.act_dim)
        stats = {**self.actor.summary(), "log_records": len(records),
                 "log_steps": int(records.seq[-1]) + 1 if len(records) else log.next_seq,
                 "learner_steps": int(self.control[ctl.LEARNER_STEPS]),
                 "checkpoint_steps": int(self.control[ctl.CHECKPOINT_STEP]),
                 "learner_updates": int(self.control[ctl.UPDATES]),
                 "weights_version": int(self.control[ctl.PUBLISHED]),
                 "reached_target_at": int(self.control[ctl.REACHED])
                 if self.control[ctl.REACHED] >= 0 else None,
                 "learner_deaths": self.deaths, "learner_restarts": self.restarts,
                 "learner_events": self.learner_events,
                 "learner_exitcodes": self.learner_exitcodes, "clean_stop": clean,
                 "learner_error": self.failure[1] if self.failure else None,
                 "signal": getattr(self, "signal", None), **self.extra_figures()}
        atomic_write_text(self.run_dir / STATS_FILE, json.dumps(stats, indent=1))
        atomic_save_npz(self.run_dir / TICKS_FILE, **self.actor.series())
        return stats
