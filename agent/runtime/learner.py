"""The learner process: owns the replay and model buffers, trains without pausing the actor.

It works on a :class:`~mbpo_arm.agent.run.Run` with the phases of :mod:`mbpo_arm.agent.train`
(``model_due``, ``train_model``, ``rollout_model``, ``update_policy``, ``evaluate``) and
:func:`~mbpo_arm.agent.run.save_run`; only the order differs
from the sync loop: transitions arrive from the actor's queue (gaps, e.g. while the queue was
full or this process was dead, are read from the replay log), SAC updates run whenever the
achieved update-to-data ratio is below the target, the model trains when ``model_due`` says
so (checked at every step that arrives, so none is skipped when several arrive at once).

Every ``trainer.eval_every`` env steps it evaluates the current policy on its own eval env
(in the twin: an unpaced copy, so robot time is not spent on it) and logs
``eval_success_rate``/``eval_return`` as the sync loop does; once ``trainer.stop_at`` is reached
it tells the supervisor (``REACHED``), which ends the run.

Start-up: restore the newest checkpoint, then re-add every logged transition newer than it,
so a restart loses nothing. Shutdown: when the supervisor sets ``STOP_AT`` to the actor's
count, ingest up to it, checkpoint, exit.

It dies with its actor, however the actor dies (``kill -9`` included): the kernel kills it
when its parent ends (Linux ``PR_SET_PDEATHSIG``), and everywhere a thread watches the pipe
that ``multiprocessing`` keeps open from the parent and exits when it closes. A learner left
running would go on writing the run's metrics and checkpoints beside the next one.
Training that diverges (a NaN loss or weight) or a damaged checkpoint ends it with
:data:`FATAL_EXIT`, its one line sent to the supervisor, which ends the run instead of
restarting it; the last good checkpoint stays.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from mbpo_arm.agent.checkpoint import CheckpointError, Diverged
from mbpo_arm.agent.planning import acting_state
from mbpo_arm.agent.run import Run, restore, save_run
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.priority import pin
from mbpo_arm.agent.runtime.replay_log import LogRecords, read_log, record_dtype, unpack_records
from mbpo_arm.agent.runtime.weights import WeightsPublisher, attach_block, flatten
from mbpo_arm.agent.threads import ThreadPolicy
from mbpo_arm.agent.train import (
    evaluate,
    model_due,
    model_figures,
    reached_target,
    rollout_due,
    rollout_model,
    train_model,
    update_policy,
)

LOG_FALLBACK_S = 0.2  # read from the log when the queue has been silent this long
FATAL_EXIT = 3  # the learner's exit status when it cannot go on: not restarted
ORPHANED_EXIT = 4  # ... when its actor died first
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Learner:
    """Ingest, train, publish, checkpoint; see the module docstring."""

    def __init__(self, run: Run, runtime: RuntimeConfig, log_path: Path,
                 publisher: WeightsPublisher, q: Any, control: Any) -> None:
        self.run, self.runtime, self.log_path = run, runtime, log_path
        self.agent, self.progress, self.counters = run.agent, run.progress, run.progress.counters
        self.q, self.control, self.publisher = q, control, publisher
        obs_dim, act_dim = run.env.observation_space.shape[0], run.env.action_space.shape[0]
        self.dims = (obs_dim, act_dim)
        self.dtype = record_dtype(obs_dim, act_dim)
        self.sac_cfg = run.agent.sac.cfg
        self.target_utd = runtime.target_utd if runtime.target_utd is not None \
            else self.sac_cfg.utd
        self.model_pending = False
        self.updates_at_rollout = 0  # SAC updates done when the last model rollout ran
        self.updates_at_model = 0  # ... and when the model last trained
        now = time.monotonic()
        self.t_publish = self.t_checkpoint = self.t_log = self.t_heard = now
        self.updates_published = -1
        self.window = (now, self.counters.env_steps, self.counters.updates)
        self.evaluated_at = self.counters.env_steps // run.schedule.eval_every

    @property
    def next_seq(self) -> int:
        return self.counters.env_steps

    # ----------------------------------------------------------------------- ingesting
    def ingest(self, records: LogRecords) -> int:
        """Add the records that continue the replay (``seq == next_seq``, in order); older
        ones are skipped. Stops right after a step at which ``model_due`` when the model may
        train then, so it trains on exactly the data the sync loop would give it; the rest is
        read back from the log later. A learner behind the sync loop's ratio goes on ingesting
        (the replay never lags the robot) and trains the model once it has caught up (see
        :meth:`model_allowed`). Returns how many were added."""
        added, progress = 0, self.progress
        if self.model_blocks():  # the model trains first, on the data up to its step
            return 0
        missing = set(records.missing.tolist())  # lost to damage (resume.accept_log_damage)
        for i in range(len(records)):
            seq = int(records.seq[i])
            while self.next_seq < seq and self.next_seq in missing:
                self.counters.env_steps += 1  # a step the log lost: counted, not replayed
            if seq != self.next_seq:
                continue
            done = bool(records.terminated[i] or records.truncated[i])
            self.agent.replay.add(records.obs[i], records.action[i], float(records.reward[i]),
                                  records.next_obs[i], bool(records.terminated[i]),
                                  bool(records.truncated[i]))
            self.counters.env_steps += 1
            progress.episode_return += float(records.reward[i])
            if done:
                progress.end_episode(None)
            added += 1
            if model_due(self.agent.model, self.next_seq):
                self.model_pending = True
                if self.model_blocks():
                    break
        self.control[ctl.LEARNER_STEPS] = self.next_seq
        return added

    def from_log(self, stop: int | None = None) -> int:
        """Ingest logged transitions ``next_seq <= seq < stop`` (``None``: all)."""
        if stop is not None and stop <= self.next_seq:
            return 0
        return self.ingest(read_log(self.log_path, *self.dims, start=self.next_seq, stop=stop))

    def take(self, raw: bytes) -> int:
        """Ingest one queued message (a record, or a run of consecutive records from the
        ray intake), reading any gap before it from the log."""
        record = unpack_records(self.dtype, raw)
        if not len(record):
            return 0  # a damaged message; the log has the transition
        seq = int(record.seq[0])
        added = self.from_log(seq) if seq > self.next_seq else 0
        return added + self.ingest(record)

    def drain(self, limit: int = 1000) -> int:
        """Everything queued now (at most ``limit``), without blocking."""
        added = 0
        for _ in range(limit):
            if self.model_blocks():
                break
            try:
                raw = self.q.get_nowait()
            except queue_mod.Empty:
                break
            added += self.take(raw)
            self.t_heard = time.monotonic()
        if not added and time.monotonic() - self.t_heard > LOG_FALLBACK_S:
            added += self.from_log(int(self.control[ctl.ACTOR_STEPS]))
        return added

    # ------------------------------------------------------------------------ learning
    def updates_due(self) -> float:
        """Updates the target UTD allows now minus those done (as the sync loop counts:
        ``utd`` per step from ``learning_starts`` on)."""
        steps = self.next_seq - self.sac_cfg.learning_starts + 1
        return self.target_utd * max(steps, 0) - self.counters.updates

    def learn(self) -> bool:
        """One unit of work: the model when due, else one ``update_policy`` chunk when the
        UTD allows it. ``False``: nothing to do."""
        if self.model_blocks():
            self.train_model()
            return True
        if rollout_due(self.agent.model, self.next_seq, self.progress.rolled_out_at) \
                and self.rollout_allowed():
            self.rollout()
            return True
        if self.updates_due() >= self.sac_cfg.utd:
            update_policy(self.agent, self.progress)
            return True
        return False

    def rollout_allowed(self) -> bool:
        """Keep the sync loop's ratio of rollouts to updates (``target_utd x rollout_period``
        updates between rollouts): a learner slower than the actor would otherwise spend all
        its time on the rollouts that ``rollout_every`` asks for and update nothing."""
        return self._caught_up(self.updates_at_rollout, self.agent.model.mbpo.rollout_period)

    def model_allowed(self) -> bool:
        """The same for model training (``target_utd x model_train_every`` updates between
        trainings; the first one at once): at 20 Hz a model retrained every 250 steps takes
        more than the 12.5 s between them on a busy CPU, and the learner did nothing else."""
        model = self.agent.model
        return not model.elites or self._caught_up(self.updates_at_model,
                                                   model.mbpo.model_train_every)

    def _caught_up(self, updates_then: int, env_steps: int) -> bool:
        """The updates since ``updates_then`` are the ``target_utd x env_steps`` that the sync
        loop does in ``env_steps``."""
        return self.counters.updates - updates_then >= self.target_utd * env_steps

    def model_blocks(self) -> bool:
        """A model training is due and allowed: it goes before ingesting and updating."""
        return self.model_pending and self.model_allowed()

    def train_model(self) -> None:
        """Train the model on the replay as it is now, then roll out."""
        report = train_model(self.agent, self.run.run_dir, self.next_seq)
        self.progress.model_log.update(model_figures(report))
        self.updates_at_model = self.counters.updates
        self.model_pending = False
        self.rollout()

    def rollout(self) -> None:
        self.progress.model_log.update(rollout_model(self.agent, self.next_seq))
        self.progress.rolled_out_at = self.next_seq
        self.updates_at_rollout = self.counters.updates

    def publish(self, force: bool = False) -> None:
        """Publish the actor's weights every ``publish_every_updates`` updates or
        ``publish_every_s`` seconds; versions stay monotonic across restarts."""
        updates = self.counters.updates
        since = updates - self.updates_published
        due = since >= self.runtime.publish_every_updates or (
            since > 0 and time.monotonic() - self.t_publish >= self.runtime.publish_every_s)
        if not (force or due):
            return
        sac, model = self.agent.sac, self.agent.model
        version = max(sac.updates, int(self.control[ctl.PUBLISHED]) + 1)
        state = acting_state(sac, model.ensemble, model.elites) if self.agent.planner \
            else sac.acting_state()  # a planning actor needs the ensemble too
        self.publisher.publish(flatten(state), version)
        self.control[ctl.PUBLISHED] = version
        self.updates_published, self.t_publish = updates, time.monotonic()

    def maybe_checkpoint(self, force: bool = False) -> None:
        """Checkpoint when ``trainer.checkpoint_every`` steps are crossed or
        ``checkpoint_every_s`` passed with new data (or ``force``)."""
        every = self.run.schedule.checkpoint_every
        last = int(self.control[ctl.CHECKPOINT_STEP])
        crossed = last >= 0 and self.next_seq // every > last // every
        timed = time.monotonic() - self.t_checkpoint >= self.runtime.checkpoint_every_s
        if force or crossed or (timed and self.next_seq != last):
            save_run(self.run)
            self.control[ctl.CHECKPOINT_STEP] = self.next_seq
            self.t_checkpoint = time.monotonic()

    def maybe_evaluate(self) -> None:
        """Evaluate once per ``trainer.eval_every`` env steps crossed (from the first SAC
        update on); set ``REACHED`` when ``trainer.stop_at`` is met. Not with ``runtime=ray``
        and ``runtime.ray.evaluate_on=twin``: an evaluation actor does it off the learner."""
        schedule, ray_cfg = self.run.schedule, self.runtime.ray
        if self.runtime.mode == "ray" and ray_cfg.evaluate_on == "twin":
            return  # launch/ray_eval.py's EvalTwin evaluates
        period = self.next_seq // schedule.eval_every
        if period <= self.evaluated_at or self.counters.updates == 0 \
                or self.control[ctl.REACHED] >= 0:  # the run is ending: no more evaluations
            return
        self.evaluated_at = period
        if reached_target(evaluate(self.run), schedule):
            self.control[ctl.REACHED] = self.next_seq
            self.run.logger.log({"env_steps": self.next_seq,
                                 "stopped_at_target": schedule.stop_at})

    def maybe_log(self, force: bool = False) -> None:
        """A progress event in ``metrics.jsonl`` every ``log_every_s``: counts, achieved UTD
        (cumulative and over the window since the last event), the last update's figures."""
        now = time.monotonic()
        if not force and now - self.t_log < self.runtime.log_every_s:
            return
        c, (t0, s0, u0), progress = self.counters, self.window, self.progress
        steps = c.env_steps - self.sac_cfg.learning_starts + 1
        self.run.logger.log({
            "env_steps": c.env_steps, "episodes": c.episodes, "updates": c.updates,
            "achieved_utd": c.updates / steps if steps > 0 else None,
            "achieved_utd_window": (c.updates - u0) / (c.env_steps - s0)
            if c.env_steps > s0 else None,
            "updates_per_s": (c.updates - u0) / max(now - t0, 1e-9),
            "target_utd": self.target_utd, "weights_version": int(self.control[ctl.PUBLISHED]),
            "episode_return": progress.returns[-1] if progress.returns else None,
            **progress.last_update, **progress.model_log})
        self.window, self.t_log = (now, c.env_steps, c.updates), now

    # ------------------------------------------------------------------------ the loop
    def loop(self) -> None:
        """Until ``STOP_AT``: ingest, learn, publish, checkpoint, log."""
        while True:
            self.control[ctl.HEARTBEAT_NS] = time.monotonic_ns()
            self.control[ctl.UPDATES] = self.counters.updates
            got = self.drain()
            stop_at = int(self.control[ctl.STOP_AT])
            if stop_at >= 0:
                self.from_log(stop_at)
                if self.next_seq >= stop_at:
                    if self.model_pending:  # due at the very last step
                        self.train_model()
                    break
            worked = self.learn()
            if self.run.threads is not None:
                self.run.threads.poll()
            self.publish()
            self.maybe_evaluate()
            self.maybe_checkpoint()
            self.maybe_log()
            if not (got or worked):
                self._wait_for_data()
        self.control[ctl.UPDATES] = self.counters.updates
        self.maybe_checkpoint(force=True)
        self.maybe_log(force=True)

    def _wait_for_data(self) -> None:
        try:
            raw = self.q.get(timeout=0.05)
        except queue_mod.Empty:
            return
        self.take(raw)
        self.t_heard = time.monotonic()


def learner_main(make_run: Callable[[], Run], runtime: RuntimeConfig, threads: ThreadPolicy,
                 log_path: str, weights_name: str, q: Any, control: Any,
                 report: Any = None, pdeathsig: bool = True) -> None:
    """The learner process's target (spawn): build, restore, catch up, loop, checkpoint.

    SIGINT and SIGTERM are ignored: the supervisor decides when this process stops (a Ctrl-C
    reaches the whole process group, and the final checkpoint must come after the actor's
    last transition). ``report``: the sending end of a pipe for ``(kind, line)`` of a
    divergence or a damaged checkpoint;
    ``pdeathsig``: the parent started this process from its main thread, whose end (Linux
    ties the signal to the thread) is the parent's end.
    """
    die_with_parent(pdeathsig)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    governor = threads.apply()  # before any torch work starts its thread pool
    pin(runtime.learner_cpus)
    run = make_run()
    run.threads = governor
    block = None
    try:
        restore(run)
        control[ctl.CHECKPOINT_STEP] = run.progress.counters.env_steps
        try:
            block = attach_block(weights_name)
        except FileNotFoundError:  # the actor ended (it unlinks the block) before this came up
            raise SystemExit(ORPHANED_EXIT) from None
        learner = Learner(run, runtime, Path(log_path), WeightsPublisher(block), q, control)
        learner.from_log(int(control[ctl.ACTOR_STEPS]))
        learner.publish(force=True)
        control[ctl.READY] = 1
        learner.loop()
    except (Diverged, CheckpointError) as err:
        kind = type(err).__name__
        run.logger.log({"env_steps": run.progress.counters.env_steps, "learner_error": kind,
                        "message": str(err)})
        if report is not None:
            report.send((kind, str(err)))
        raise SystemExit(FATAL_EXIT) from None
    finally:
        run.logger.close()
        if block is not None:
            block.close()


def die_with_parent(pdeathsig: bool = True) -> None:
    """End this process when the process that started it ends: ``PR_SET_PDEATHSIG`` (Linux;
    SIGKILL the moment the parent's thread ends) and a thread that exits at once when the
    parent's end of ``multiprocessing``'s sentinel pipe closes (any platform)."""
    if pdeathsig and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if not parent.is_alive():  # it died before the signal was asked for
        os._exit(ORPHANED_EXIT)
    threading.Thread(target=_exit_when_closed, args=(parent.sentinel,), daemon=True,
                     name="mbpo-parent-watch").start()


def _exit_when_closed(sentinel: Any) -> None:
    wait([sentinel])
    os._exit(ORPHANED_EXIT)  # no cleanup: anything more it wrote would land in the next run
