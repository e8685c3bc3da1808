"""The Ray actors of ``runtime=ray``: the learner's host and the twins.

:class:`LearnerHost` runs where Ray places it (``runtime.ray.learner_*`` resources: a GPU
node). It owns the learner's :class:`~agent.runtime.intake.Intake` (one merged replay log fed
by every source, with a ledger of each record's source) and runs today's learner process on
it (:func:`~agent.runtime.supervisor.spawn_learner`): the learner reads the merged log as the
async learner reads the actor's, publishes into a weights block on this node, checkpoints
into its run directory. The host answers the sources' calls: ``append`` (a batch of records
after the source's acknowledged seq; returns the new acknowledgement), ``acked``, and
``poll`` (the learner's status, and newer weights when there are). A learner process that dies
is restarted here from its checkpoint and the merged log; a host that dies (its process or its
node) is restarted by Ray (``max_restarts``): it reopens the intake (uncommitted records are
cut, the senders re-send them) and starts a learner, which restores from the checkpoint.

:class:`TwinActor` steps a MuJoCo twin unpaced with the latest weights (Gaussian action noise
of its own) and ships its transitions as source ``twin<i>``; its unacknowledged records wait in
memory (a twin that dies loses only transitions no one had yet). Ray replaces a dead twin; the
new one continues after the learner's acknowledgement of its source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.io import atomic_write_text
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import percentiles
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.intake import Intake
from mbpo_arm.agent.runtime.learner import FATAL_EXIT
from mbpo_arm.agent.runtime.ray_link import call
from mbpo_arm.agent.runtime.replay_log import LogRecords
from mbpo_arm.agent.runtime.supervisor import drop_queue, spawn_learner
from mbpo_arm.agent.runtime.weights import WeightsReader, create_block, unflatten
from mbpo_arm.agent.threads import ThreadPolicy
from mbpo_arm.launch.ray_eval import EVAL_FILE, EvalLog

STATUS_WORDS = ("LEARNER_STEPS", "UPDATES", "CHECKPOINT_STEP", "PUBLISHED", "READY", "REACHED")


class LearnerHost:
    """The learner's side of ``runtime=ray`` (a Ray actor; see the module docstring).

    Args:
        make_run: a picklable builder of the learner's :class:`agent.run.Run` (its run
            directory holds the checkpoints and the metrics).
        runtime: the runtime settings; ``threads``: the learner's torch threads.
        intake_dir: where the merged log and its ledger live (on this node's disk).
        dims: ``(obs_dim, act_dim)``; ``weights_size``: the length of the published vector.
        schedule: ``trainer`` when an :class:`~launch.ray_eval.EvalTwin` evaluates
            (``runtime.ray.evaluate_on=twin``): this host writes its rows; ``None``: the
            learner process evaluates.
    """

    def __init__(self, make_run: Any, runtime: RuntimeConfig, threads: ThreadPolicy,
                 intake_dir: str, dims: tuple[int, int], weights_size: int,
                 schedule: Any = None) -> None:
        self.make_run, self.runtime, self.threads = make_run, runtime, threads
        self.instance = uuid.uuid4().hex  # a restarted host is another instance
        self.intake = Intake.open(intake_dir, *dims)
        self.ctx = mp.get_context("spawn")
        self.control = ctl.make_control(self.ctx)
        self.control[ctl.ACTOR_STEPS] = self.intake.next_seq
        self.block = fresh_block(Path(intake_dir) / "weights_block", weights_size)
        self.reader = WeightsReader(self.block)
        self.latest: tuple[np.ndarray, int, int] | None = None  # (vector, version, stamp ns)
        self.lock = threading.Lock()  # the learner process and its queue
        self.read_lock = threading.Lock()  # the weights reader
        self.proc: Any = None
        self.queue: Any = None
        self.reports: Any = None
        self.starts: dict[str, int] = {}  # source -> how many times it said hello
        self.source_pids: dict[str, int | None] = {}  # source -> its process, as it said
        self.contact: dict[str, float] = {}  # source -> when it last called (monotonic s)
        self.done: set[str] = set()  # the listed arms that have finished
        self.learner_starts, self.failure = 0, None
        self.placed = {"node": socket.gethostname(), "gpus": gpu_ids()}  # where Ray put it
        self.evals = None if schedule is None else \
            EvalLog(Path(intake_dir).parent / EVAL_FILE, schedule, self.control)
        self._start_learner()
        threading.Thread(target=self._watch, daemon=True, name="mbpo-learner-watch").start()

    # ------------------------------------------------------------------- the learner
    def _start_learner(self) -> None:
        with self.lock:
            drop_queue(self.queue)
            self.proc, self.queue, self.reports = spawn_learner(
                self.ctx, self.make_run, self.runtime, self.threads, self.intake.path,
                self.block.name, self.control)
            self.learner_starts += 1

    def _watch(self) -> None:
        """Restart a learner process that died (not one that gave up: a diverged run or a
        damaged checkpoint is reported by :meth:`poll` and the run stops)."""
        while True:
            time.sleep(0.1)
            proc = self.proc
            if proc.is_alive() or int(self.control[ctl.STOP_AT]) >= 0:
                continue
            if proc.exitcode == FATAL_EXIT:
                self.failure = self.reports.recv() if self.reports.poll() else \
                    ("CheckpointError", "the learner stopped without saying why")
                return
            time.sleep(self.runtime.restart_delay_s)
            self._start_learner()

    # ------------------------------------------------------------------ the sources
    def admits(self, source: str) -> str | None:
        """``None`` when ``source`` may feed this learner, else why not (one line)."""
        robots = self.runtime.ray.robots
        if not robots or source in robots or source.startswith("twin"):
            return None
        return (f"the learner {self.runtime.ray.learner_name!r} takes the arms "
                f"runtime.ray.robots={list(robots)}, not runtime.ray.source={source}: use one "
                "of those names, or list this arm in the run that starts the learner")

    def finished(self, source: str) -> None:
        """Arm ``source`` has shipped everything and stopped."""
        self.done.add(source)

    def waiting_for(self) -> list[str]:
        """The listed arms still running: joined, not finished, heard from within
        ``10 x lost_after_s`` (an arm gone longer is not waited for)."""
        quiet = 10 * self.runtime.ray.lost_after_s
        return [s for s in self.runtime.ray.robots if s in self.contact and s not in self.done
                and time.monotonic() - self.contact[s] < quiet]

    def hello(self, source: str, pid: int | None = None) -> dict[str, Any]:
        """A source (re)starting (in process ``pid``): its acknowledged seq and this host's
        identity."""
        self.contact[source] = time.monotonic()
        self.starts[source] = self.starts.get(source, 0) + 1
        self.source_pids[source] = pid
        return {"acked": self.intake.acked(source), "instance": self.instance,
                "node": socket.gethostname(), "pid": os.getpid(),
                "learner_pid": self.proc.pid}

    def acked(self, source: str) -> int:
        """The next seq this host expects from ``source`` (all below it are on disk)."""
        return self.intake.acked(source)

    def append(self, source: str, since: int, records: LogRecords) -> int:
        """Commit ``records`` of ``source``, sent as everything the source has from seq
        ``since`` on (a hole in them is one its own log lost). A batch from beyond this host's
        acknowledgement (``since > acked``: records in between were never committed here, e.g.
        after a restart on an empty disk) is refused: the source re-sends from the returned
        acknowledgement. Returns the acknowledgement after the commit."""
        self.contact[source] = time.monotonic()
        if since > self.intake.acked(source):
            return self.intake.acked(source)
        acked, raws = self.intake.append(source, records)
        self.control[ctl.ACTOR_STEPS] = self.intake.next_seq
        if raws:  # one message per batch (the learner takes a run of records as one)
            with contextlib.suppress(Exception):  # full, or closed by a restart: the log has it
                self.queue.put_nowait(b"".join(raws))
        return acked

    def poll(self, instance: str | None = None, version: int = -1,
             source: str | None = None) -> dict[str, Any]:
        """The learner's status and, when this host (``instance``) has weights newer than
        ``version``, ``weights = (vector [N] float32, version, age_s)`` (age: since they were
        published here). ``source``: the arm asking (it counts as heard from)."""
        if source is not None:
            self.contact[source] = time.monotonic()
        with self.read_lock:  # calls come from several threads (max_concurrency)
            got = self.reader.poll()
            if got is not None:
                self.latest = got
        status = {name.lower(): int(self.control[getattr(ctl, name)]) for name in STATUS_WORDS}
        status.update(instance=self.instance, merged=self.intake.next_seq,
                      sources=self.intake.sources(), failure=self.failure,
                      learner_starts=self.learner_starts, starts=dict(self.starts),
                      source_pids=dict(self.source_pids), placed=self.placed)
        latest = self.latest
        if latest is not None and (instance != self.instance or latest[1] > version):
            vector, v, stamp = latest
            status["weights"] = (vector, v, (time.monotonic_ns() - stamp) / 1e9)
        return status

    def finish(self, timeout_s: float) -> bool:
        """Ingest everything committed, checkpoint, stop the learner; ``True`` when its
        final checkpoint holds every committed record. The weights block's name is removed
        (its mapping stays for the last polls)."""
        try:
            return self._finish(timeout_s)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.block.shm.unlink()

    def _finish(self, timeout_s: float) -> bool:
        target = self.intake.next_seq
        self.control[ctl.STOP_AT] = target
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.proc
            if not proc.is_alive():
                if proc.exitcode == 0 and int(self.control[ctl.CHECKPOINT_STEP]) >= target:
                    return True
                if proc.exitcode == FATAL_EXIT:
                    return False
                self._start_learner()  # it restores, reads the log, sees STOP_AT, checkpoints
            self.proc.join(timeout=0.1)
        self.proc.kill()
        return False

    def pids(self) -> dict[str, int]:
        """This host's process and its learner process (for the fault tests)."""
        return {"host": os.getpid(), "learner": self.proc.pid}

    def eval_period(self) -> int:
        """The last ``trainer.eval_every`` period with an evaluation row (-1: none)."""
        return self.evals.period() if self.evals is not None else -1

    def report_eval(self, row: dict[str, Any]) -> bool:
        """An :class:`~launch.ray_eval.EvalTwin`'s row: appended to ``eval.jsonl`` (``REACHED``
        set when it meets ``trainer.stop_at``); ``True`` when it did."""
        return self.evals is not None and self.evals.report(row)

    def spans(self) -> list[tuple[int, int, str, int]]:
        """The ledger: ``(merged_start, count, source, source_start)`` per committed batch."""
        return self.intake.spans()


class TwinActor:
    """One twin stepping unpaced (a Ray actor; see the module docstring): uniform actions
    until the learner has updated, then the latest policy's plus Gaussian noise of std
    ``noise``; transitions shipped as source ``twin<index>``.

    Args:
        rc: the run's config (its twin backend, seed and ``runtime.ray``); ``index``: this
            twin's number; ``host``: the learner host's handle.
    """

    def __init__(self, rc: Any, index: int, host: Any) -> None:
        import torch

        from mbpo_arm.launch.build import build_policy

        torch.set_num_threads(1)
        ray_cfg = rc.runtime.ray
        self.cfg, self.host, self.source = ray_cfg, host, f"twin{index}"
        self.noise = ray_cfg.twin_noise * (index + 1) / max(ray_cfg.twins, 1)
        self.rc = dataclasses.replace(rc, seed=rc.seed + 7919 * (index + 1), device="cpu")
        self.env, self.policy = build_policy(self.rc, realtime=False)
        self.template = {k: v.clone() for k, v in self.policy.acting_state().items()}
        self.figures: dict[str, Any] = {"source": self.source, "steps": 0, "shipped": 0,
                                        "failed_calls": 0, "weights": 0, "waits": 0}
        self.weight_age: list[float] = []  # s from the host's publish to the load here
        self.stopping = threading.Event()
        threading.Thread(target=self._run, daemon=True, name=f"mbpo-{self.source}").start()

    def _run(self) -> None:
        hello = None
        while hello is None and not self.stopping.is_set():
            hello = call(self.host.hello.remote(self.source, os.getpid()),
                         self.cfg.call_timeout_s)
        if hello is None:
            return
        seq = acked = hello["acked"]
        instance, version, updated = None, -1, False
        rng = np.random.default_rng([self.rc.seed, seq])
        obs, _ = self.env.reset(seed=self.rc.seed + seq)
        pending: list[tuple] = []
        t_ship = t_weights = 0.0
        space = self.env.action_space
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - t_weights >= self.cfg.weights_every_s:
                t_weights = now
                status = call(self.host.poll.remote(instance, version), self.cfg.call_timeout_s)
                if status is not None:
                    updated = updated or status["updates"] > 0
                    if "weights" in status:
                        vector, version, age_s = status["weights"]
                        self.weight_age.append(age_s + (time.monotonic() - now) / 2)
                        instance = status["instance"]
                        self.policy.load_acting_state(unflatten(vector, self.template))
                        self.figures["weights"] += 1
            if len(pending) >= 4 * self.cfg.batch_records:  # the learner is away: wait
                self.figures["waits"] += 1
                time.sleep(self.cfg.ship_every_s)
            else:
                if updated:
                    action = self.policy.act(obs) + rng.normal(0.0, self.noise, space.shape)
                else:
                    action = rng.uniform(-1.0, 1.0, space.shape)
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                executed = np.asarray(info.get("executed_action", action), dtype=np.float32)
                pending.append((seq, obs, executed, reward, next_obs, terminated, truncated))
                seq += 1
                self.figures["steps"] += 1
                obs = self.env.reset()[0] if terminated or truncated else next_obs
            if pending and (len(pending) >= self.cfg.batch_records
                            or time.monotonic() - t_ship >= self.cfg.ship_every_s):
                t_ship = time.monotonic()
                got = call(self.host.append.remote(self.source, acked, as_records(pending)),
                           self.cfg.call_timeout_s)
                if got is None:
                    self.figures["failed_calls"] += 1
                    continue
                acked = got
                self.figures["shipped"] += sum(1 for p in pending if p[0] < acked)
                pending = [p for p in pending if p[0] >= acked]
                if pending and pending[0][0] > acked:  # the host has less than we sent
                    seq, pending = acked, []  # (a host on a fresh disk): go on from there

    def stats(self) -> dict[str, Any]:
        """Steps taken, records acknowledged, failed calls, weights loaded (and their age:
        host publish to load here, p50/p99/max/mean s), waits."""
        return {**self.figures, "pid": os.getpid(), "weight_age_s": percentiles(self.weight_age)}

    def stop(self) -> None:
        self.stopping.set()


def fresh_block(registry: Path, n: int) -> Any:
    """A new weights block for ``n`` weights, its name kept in ``registry``; the block a
    killed host left (named there) is removed first, so restarts do not fill ``/dev/shm``."""
    from multiprocessing import shared_memory

    if registry.exists():
        with contextlib.suppress(FileNotFoundError):
            shared_memory.SharedMemory(name=registry.read_text().strip()).unlink()
    block = create_block(n)
    atomic_write_text(registry, block.name)
    return block


def gpu_ids() -> list[str]:
    """The GPUs Ray gave this actor (``runtime.ray.learner_num_gpus``; its learner process
    inherits them as ``CUDA_VISIBLE_DEVICES``)."""
    import ray

    return [str(g) for g in ray.get_gpu_ids()]


def as_records(rows: list[tuple]) -> LogRecords:
    """``(seq, obs, action, reward, next_obs, terminated, truncated)`` rows as
    :class:`LogRecords`."""
    seq, obs, action, reward, next_obs, terminated, truncated = zip(*rows, strict=True)
    return LogRecords(np.asarray(seq, dtype=np.uint64), np.asarray(obs, dtype=np.float32),
                      np.asarray(action, dtype=np.float32), np.asarray(reward, np.float32),
                      np.asarray(next_obs, dtype=np.float32), np.asarray(terminated, bool),
                      np.asarray(truncated, bool))
