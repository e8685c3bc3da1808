"""``runtime.ray.evaluate_on=twin``: the evaluation actor evaluates, the learner does not.

Real ``mbpo-arm train runtime=ray`` processes on a local Ray instance
(``runtime.ray.address=null``): the rows land in ``eval.jsonl`` of the learner's run
directory with increasing env steps, ``metrics.jsonl`` (the learner's) has no evaluation, and a
``trainer.stop_at`` that any evaluation meets ends the run early at that evaluation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mbpo_arm.agent.runtime.config import RayConfig
from tests.runtime.async_helpers import QUICK, ROOT

EVERY = 100


def train(run: Path, total: int, *extra: str) -> dict:
    """One run with ``evaluate_on=twin``; returns ``runtime_stats.json``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    args = [*QUICK, "runtime=ray", "runtime.ray.address=null", "runtime.ray.evaluate_on=twin",
            "runtime.ray.twin_num_cpus=0", "runtime.ray.learner_num_cpus=0",
            "runtime.control_hz=200", f"trainer.eval_every={EVERY}", "trainer.eval_episodes=1",
            f"trainer.total_steps={total}", f"run_dir={run}", *extra]
    proc = subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", "train", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run / "runtime_stats.json").read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_eval_twin_evaluates_off_the_learner(tmp_path: Path) -> None:
    run = tmp_path / "run"
    stats = train(run, 700)
    evals = rows(run / "eval.jsonl")
    steps = [r["env_steps"] for r in evals]
    assert len(evals) >= 2 and steps == sorted(set(steps)), evals
    assert all(s // EVERY >= 1 and r["updates"] > 0 and r["episodes"] == 1
               and "eval_return" in r and "eval_success_rate" in r
               for s, r in zip(steps, evals, strict=True))
    assert not [m for m in rows(run / "metrics.jsonl") if "eval_return" in m]
    assert stats["ray"]["evaluator"]["evaluations"] == len(evals)
    assert stats["reached_target_at"] is None


@pytest.mark.slow
def test_eval_twin_stops_at_target(tmp_path: Path) -> None:
    run = tmp_path / "run"
    stats = train(run, 5000, "trainer.stop_metric=eval_return", "trainer.stop_at=-1e9")
    evals = rows(run / "eval.jsonl")
    assert evals and evals[-1]["stopped_at_target"] == -1e9
    assert stats["reached_target_at"] == evals[-1]["env_steps"]
    assert stats["actor_steps"] < 5000


def test_evaluate_on_is_checked() -> None:
    assert RayConfig(evaluate_on="twin").evaluate_on == "twin"
    with pytest.raises(ValueError, match=r"runtime\.ray\.evaluate_on='gpu'.*learner or twin"):
        RayConfig(evaluate_on="gpu")


def test_eval_log_keeps_rows_across_a_torn_line_and_skips_done_periods(tmp_path: Path) -> None:
    """A host killed mid-write leaves a torn last line: a restarted host's log goes on after
    the last whole row, on a new line, and a period already written is not written again."""
    import multiprocessing as mp

    from mbpo_arm.agent.config import TrainerConfig
    from mbpo_arm.agent.runtime import control as ctl
    from mbpo_arm.launch.ray_eval import EvalLog

    path = tmp_path / "eval.jsonl"
    schedule = TrainerConfig(eval_every=100, stop_at=0.9, stop_metric="eval_success_rate")
    control = ctl.make_control(mp.get_context("spawn"))
    log = EvalLog(path, schedule, control)
    assert not log.report({"env_steps": 100, "eval_success_rate": 0.2})
    with path.open("a") as f:
        f.write('{"env_steps": 200, "eval_succ')  # torn
    log = EvalLog(path, schedule, control)  # the restarted host
    assert log.period() == 1
    assert not log.report({"env_steps": 150, "eval_success_rate": 0.5})  # period 1: done
    assert log.report({"env_steps": 300, "eval_success_rate": 0.95})
    first, torn, last = path.read_text().splitlines()
    assert torn == '{"env_steps": 200, "eval_succ'
    assert [json.loads(r)["env_steps"] for r in (first, last)] == [100, 300]
    assert json.loads(last)["stopped_at_target"] == 0.9 and control[ctl.REACHED] == 300
