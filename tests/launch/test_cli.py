"""The ``mbpo-arm`` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.replay import ReplayBuffer

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--backend", "mujoco", "task=reach", "agent=sac", "logger.wandb=disabled",
         "agent.sac.learning_starts=100", "agent.sac.batch_size=64",
         "agent.sac.hidden=[64,64]", "trainer.eval_episodes=2"]


def cli(*args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mbpo-arm {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_train_then_eval_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = cli("train", *QUICK, "trainer.total_steps=300", "trainer.eval_every=150",
              "trainer.checkpoint_every=150", "trainer.log_every=100", "seed=3",
              f"run_dir={run}")
    assert "learning_curve.png" in out.stdout and "checkpoint" in out.stdout
    assert (run / "learning_curve.png").stat().st_size > 1000
    evals = [e for e in read_metrics(run) if "eval_return" in e]
    assert [e["env_steps"] for e in evals] == [150, 300]
    assert all(e["eval_success_rate"] is not None for e in evals)
    assert any("critic_loss" in e for e in evals), "SAC updates never ran"
    result = json.loads(cli("eval", str(run), "--episodes", "2", "--json").stdout)
    assert result["episodes"] == 2
    assert set(result) >= {"mean_return", "success_rate", "episodes"}
    assert 0.0 <= result["success_rate"] <= 1.0
    video = tmp_path / "eval.gif"
    result = json.loads(cli("eval", str(run), "--episodes", "1", "--json", "--video",
                            str(video)).stdout)
    assert result["video"] == str(video) and video.stat().st_size > 10_000


@pytest.mark.slow
def test_bad_override_is_one_line_error() -> None:
    proc = cli("train", "--backend", "mujoco", "trainer.total_steps=abc", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer.total_steps" in lines[0]


@pytest.mark.slow
def test_missing_model_file_is_one_line_error(tmp_path: Path) -> None:
    proc = cli("train", "--backend", "mujoco", f"backend.model_path={tmp_path}/arm.xml",
               check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "arm.xml" in lines[0] and "backend.model_path" in lines[0]


@pytest.mark.slow
def test_unknown_backend_lists_the_choices() -> None:
    proc = cli("train", "--backend", "warp", check=False)
    assert proc.returncode == 2 and "mujoco" in proc.stderr


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_step_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "mbpo_arm.launch.cli", "train", *QUICK,
            "trainer.total_steps=100000",
            "trainer.checkpoint_every=200", "trainer.eval_every=100000",
            "trainer.log_every=100000", f"run_dir={run}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    pointer = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if pointer.exists() and pointer.read_text().strip() >= "step_00000400":
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(pointer.read_text().strip().split("_")[1])
    assert killed_at >= 400
    cli("train", f"resume={run}", f"trainer.total_steps={killed_at + 200}",
        "trainer.eval_every=100", "trainer.checkpoint_every=100")
    evals = [e["env_steps"] for e in read_metrics(run) if "eval_return" in e]
    assert evals and evals[0] == killed_at + 100 and evals[-1] == killed_at + 200
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{killed_at + 200:08d}"
    replay = ReplayBuffer.load(run / "checkpoints" / f"step_{killed_at + 200:08d}" / "replay.npz")
    assert replay.total_added == killed_at + 200  # no step counted twice, none lost before it


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["nonexistent_run"])
def test_eval_of_missing_run_is_clear(bad: str, tmp_path: Path) -> None:
    proc = cli("eval", str(tmp_path / bad), check=False)
    assert proc.returncode == 2 and "config.yaml" in proc.stderr
