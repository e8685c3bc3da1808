"""Evaluation off the learner for ``runtime=ray`` (``runtime.ray.evaluate_on=twin``).

:class:`EvalTwin` is a Ray actor placed like the twins (``runtime.ray.twin_num_cpus``,
``twin_resources``). It polls the learner host's status; each time the learner's merged env
steps cross the next ``trainer.eval_every`` multiple (from the first SAC update on) it loads
the latest weights and runs ``trainer.eval_episodes`` deterministic episodes on its own twin
with :func:`~agent.run.evaluate_policy` (the learner's evaluation, same seeds), and reports the
row to the host. The learner process then evaluates nothing (``Learner.maybe_evaluate``).

:class:`EvalLog` is the host's side: the one writer of the rows, one JSON line each (flushed and
fsynced) in ``eval.jsonl`` of the learner's run directory, with the learner's field names
(``env_steps``, ``updates``, ``eval_success_rate``, ``eval_return``), and the rule
(:func:`~agent.train.reached_target`) that sets ``REACHED`` in the host's control block, which
ends the robot's run as the learner's own evaluation would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from mbpo_arm.agent.run import evaluate_policy
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import percentiles
from mbpo_arm.agent.runtime.ray_link import call
from mbpo_arm.agent.runtime.weights import unflatten
from mbpo_arm.agent.train import EVAL_SEED, eval_figures, reached_target

EVAL_FILE = "eval.jsonl"  # in the learner's run directory


class EvalLog:
    """The evaluation rows of one learner host (its one writer; see the module docstring).

    Args:
        path: the ``eval.jsonl`` to append to (rows a restarted host finds are kept).
        schedule: ``trainer`` (``eval_every``, ``stop_at``, ``stop_metric``).
        control: the host's control block (``REACHED`` is set in it).
    """

    def __init__(self, path: Path, schedule: Any, control: Any) -> None:
        self.path, self.schedule, self.control = Path(path), schedule, control
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last_steps = self._last_steps()

    def _last_steps(self) -> int:
        """The env steps of the newest complete row already on disk (-1: none)."""
        if not self.path.exists():
            return -1
        steps = -1
        for line in self.path.read_text().splitlines():
            try:
                steps = int(json.loads(line)["env_steps"])
            except (ValueError, KeyError, TypeError):  # a line cut by a crash
                continue
        return steps

    def period(self) -> int:
        """The last ``eval_every`` period evaluated (-1: none)."""
        return self.last_steps // self.schedule.eval_every if self.last_steps >= 0 else -1

    def report(self, row: dict[str, Any]) -> bool:
        """Append ``row`` unless its period is done; ``True`` when it reached the target."""
        steps = int(row["env_steps"])
        if self.last_steps >= 0 and steps // self.schedule.eval_every <= self.period():
            return False
        reached = reached_target(row, self.schedule)
        if reached:
            row = {**row, "stopped_at_target": self.schedule.stop_at}
        with self.path.open("a+b") as f:
            torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
            f.write((("\n" if torn else "") + json.dumps(row) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        self.last_steps = steps
        if reached and self.control[ctl.REACHED] < 0:
            self.control[ctl.REACHED] = steps
        return reached


class EvalTwin:
    """The evaluation actor (a Ray actor; see the module docstring).

    Args:
        rc: the run's config (a simulated backend: its twin; ``trainer``, ``runtime.ray``).
        host: the learner host's handle (``poll``, ``eval_period``, ``report_eval``).
    """

    def __init__(self, rc: Any, host: Any) -> None:
        import torch

        from mbpo_arm.launch.build import build_policy

        torch.set_num_threads(1)
        self.rc = dataclasses.replace(rc, device="cpu")
        self.cfg, self.schedule, self.host = rc.runtime.ray, rc.trainer, host
        self.env, self.policy = build_policy(self.rc, realtime=False)
        self.template = {k: v.clone() for k, v in self.policy.acting_state().items()}
        self.figures: dict[str, Any] = {"evaluations": 0, "failed_calls": 0, "weights": 0}
        self.seconds: list[float] = []  # per evaluation
        self.stopping = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="mbpo-eval-twin").start()

    def _run(self) -> None:
        done = None
        while done is None and not self.stopping.is_set():
            done = call(self.host.eval_period.remote(), self.cfg.call_timeout_s)
        done = max(done or 0, 0)  # as the learner: none in the first period
        instance, version = None, -1
        while not self.stopping.wait(self.cfg.weights_every_s):
            status = call(self.host.poll.remote(instance, version), self.cfg.call_timeout_s)
            if status is None:
                self.figures["failed_calls"] += 1
                continue
            if "weights" in status:
                vector, version, _ = status["weights"]
                instance = status["instance"]
                self.policy.load_acting_state(unflatten(vector, self.template))
                self.figures["weights"] += 1
            period = status["learner_steps"] // self.schedule.eval_every
            if status["updates"] == 0 or status["reached"] >= 0 or period <= done \
                    or version < 0:
                continue
            done = period
            row = self.evaluate(status, version)
            if call(self.host.report_eval.remote(row), self.cfg.call_timeout_s) is None:
                self.figures["failed_calls"] += 1

    def evaluate(self, status: dict[str, Any], version: int) -> dict[str, Any]:
        """``trainer.eval_episodes`` deterministic episodes with the loaded weights: the row
        for ``eval.jsonl``."""
        t0, steps = time.monotonic(), int(status["learner_steps"])
        result = evaluate_policy(self.policy, self.env, self.schedule.eval_episodes,
                                 seed=EVAL_SEED + steps)
        self.seconds.append(time.monotonic() - t0)
        self.figures["evaluations"] += 1
        return {"env_steps": steps, "updates": int(status["updates"]),
                "weights_version": version, **eval_figures(result), "episodes": result["episodes"],
                "returns": result["returns"], "eval_s": self.seconds[-1]}

    def stats(self) -> dict[str, Any]:
        """Evaluations done, weights loaded, failed calls, seconds per evaluation
        (p50/p99/max/mean)."""
        return {**self.figures, "pid": os.getpid(), "eval_s": percentiles(self.seconds)}

    def stop(self) -> None:
        self.stopping.set()


def start_eval_twin(ray: Any, rc: Any, host: Any) -> Any:
    """The :class:`EvalTwin` of a run with ``runtime.ray.evaluate_on=twin`` (placed with the
    twins' resources, restarted by Ray when it dies); ``None`` otherwise."""
    from mbpo_arm.launch.build import twin_run_config

    cfg = rc.runtime.ray
    if cfg.evaluate_on != "twin":
        return None
    return ray.remote(EvalTwin).options(
        max_restarts=-1, max_concurrency=2, num_cpus=cfg.twin_num_cpus,
        resources=dict(cfg.twin_resources)).remote(twin_run_config(rc), host)


def stop_eval_twin(evaluator: Any, timeout_s: float) -> dict[str, Any] | None:
    """Stop ``evaluator`` (if any); its :meth:`EvalTwin.stats` (``None``: none, or no answer)."""
    if evaluator is None:
        return None
    figures = call(evaluator.stats.remote(), timeout_s)
    call(evaluator.stop.remote(), timeout_s)
    return figures
