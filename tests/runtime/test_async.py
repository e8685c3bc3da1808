"""``runtime=async`` end to end in subprocesses, as a user runs it: the learner killed
mid-run comes back and loses nothing; SIGTERM then ``resume=`` continues the counts.

Timing (missed deadlines, jitter) is not asserted here: it belongs to
``bench/runtime_jitter.py``; these tests run on a loaded CI machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agent.checkpoint import latest_checkpoint
from agent.replay import ReplayBuffer
from agent.runtime.replay_log import HEADER, read_log, record_dtype

ROOT = Path(__file__).resolve().parents[2]
HZ = 50
QUICK = ["--backend", "mujoco", "task=reach", "agent=sac", "logger.wandb=disabled",
         "agent.sac.learning_starts=100", "agent.sac.batch_size=32", "agent.sac.hidden=[32,32]",
         "trainer.checkpoint_every=200", f"runtime.control_hz={HZ}",
         "runtime.restart_delay_s=0.5", "runtime.checkpoint_every_s=2"]
RECORD = record_dtype(19, 5).itemsize


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.Popen([sys.executable, "-m", "launch.runtime", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged(run: Path) -> int:
    """Records in the log, from its size (cheap enough to poll)."""
    path = run / "replay.log"
    return max(path.stat().st_size - HEADER.size, 0) // RECORD if path.exists() else 0


def wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def finish(proc: subprocess.Popen, run: Path) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads((run / "runtime_stats.json").read_text())


def check_nothing_lost(run: Path, n: int, stats: dict) -> None:
    """log == actor == learner == checkpoint == n, the log contiguous, the replay complete."""
    assert stats["log_records"] == stats["actor_steps"] == stats["learner_steps"] == n
    assert stats["checkpoint_steps"] == n and stats["clean_stop"]
    assert read_log(run / "replay.log", 19, 5).seq.tolist() == list(range(n))
    ckpt = latest_checkpoint(run)
    state = torch.load(ckpt / "state.pt", weights_only=False)
    assert state["counters"]["env_steps"] == n and state["counters"]["updates"] > 0
    replay = ReplayBuffer.load(ckpt / "replay.npz")
    assert len(replay) == n
    log = read_log(run / "replay.log", 19, 5)
    np.testing.assert_array_equal(replay.all()["obs"], log.obs)


def test_learner_killed_mid_run_comes_back_and_nothing_is_lost(tmp_path: Path) -> None:
    run, total = tmp_path / "run", 12 * HZ
    proc = start(*QUICK, f"trainer.total_steps={total}", f"run_dir={run}")
    try:
        wait_for(lambda: logged(run) >= 3 * HZ)
        first_pid = int((run / "learner.pid").read_text())
        os.kill(first_pid, signal.SIGKILL)
        n0, t0 = logged(run), time.monotonic()
        time.sleep(2.0)
        rate = (logged(run) - n0) / (time.monotonic() - t0)
        assert rate > 0.5 * HZ, f"the actor slowed to {rate:.1f} Hz without its learner"
        wait_for(lambda: int((run / "learner.pid").read_text()) != first_pid, timeout=20)
        stats = finish(proc, run)
    finally:
        proc.kill()
    assert stats["learner_deaths"] >= 1 and stats["learner_restarts"] >= 1
    assert stats["versions_applied"] >= 2 and stats["torn_weight_reads"] >= 0
    check_nothing_lost(run, total, stats)


def test_sigterm_then_resume_continues_the_counts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(*QUICK, "trainer.total_steps=100000", f"run_dir={run}")
    try:
        wait_for(lambda: logged(run) >= 4 * HZ)
        proc.send_signal(signal.SIGTERM)
        stats = finish(proc, run)
    finally:
        proc.kill()
    n = stats["actor_steps"]
    assert stats["signal"] == "SIGTERM" and n >= 4 * HZ
    check_nothing_lost(run, n, stats)
    proc = start(f"resume={run}", f"trainer.total_steps={n + 2 * HZ}")
    try:
        stats = finish(proc, run)
    finally:
        proc.kill()
    assert stats["ticks"] == 2 * HZ
    check_nothing_lost(run, n + 2 * HZ, stats)
