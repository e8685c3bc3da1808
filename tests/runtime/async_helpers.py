"""Helpers of the ``runtime=async`` end-to-end tests: start ``mbpo-arm train runtime=async`` in
a subprocess, watch its log, check that no transition was lost.

Timing (missed deadlines, jitter) is never asserted in tests: it belongs to
``bench/runtime_jitter.py``; the tests run on a loaded CI machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mbpo_arm.agent.checkpoint import latest_checkpoint
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.runtime.replay_log import HEADER, read_log, record_dtype

ROOT = Path(__file__).resolve().parents[2]
HZ = 50
QUICK = ["--backend", "mujoco", "task=reach", "agent=sac", "logger.wandb=disabled",
         "agent.sac.learning_starts=100", "agent.sac.batch_size=32", "agent.sac.hidden=[32,32]",
         "trainer.checkpoint_every=200", f"runtime.control_hz={HZ}",
         "runtime.restart_delay_s=0.5", "runtime.checkpoint_every_s=2"]
RECORD = record_dtype(19, 5).itemsize


def start(*args: str) -> subprocess.Popen:
    """``mbpo-arm train runtime=async *args`` (a resume keeps the run's saved runtime)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    mode = [] if any(a.startswith("resume=") for a in args) else ["runtime=async"]
    return subprocess.Popen([sys.executable, "-m", "mbpo_arm.launch.cli", "train", *mode, *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def logged(run: Path) -> int:
    """Records in the log, from its size (cheap enough to poll)."""
    path = run / "replay.log"
    return max(path.stat().st_size - HEADER.size, 0) // RECORD if path.exists() else 0


def wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def finish(proc: subprocess.Popen, run: Path, code: int = 0) -> dict:
    """Wait for the run; its exit status must be ``code`` (128 + the signal that stopped it);
    returns ``runtime_stats.json``."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    return json.loads((run / "runtime_stats.json").read_text())


def check_nothing_lost(run: Path, n: int, stats: dict, learned: bool = True) -> None:
    """log == actor == learner == checkpoint == n, the log contiguous, the replay complete;
    ``learned``: SAC updates ran too (not asked where a loaded machine may stop the run
    before the learner's first update)."""
    assert stats["log_records"] == stats["log_steps"] == stats["actor_steps"] == n
    assert stats["learner_steps"] == n
    assert stats["checkpoint_steps"] == n and stats["clean_stop"]
    assert read_log(run / "replay.log", 19, 5).seq.tolist() == list(range(n))
    ckpt = latest_checkpoint(run)
    state = torch.load(ckpt / "state.pt", weights_only=False)
    assert state["counters"]["env_steps"] == n
    assert state["counters"]["updates"] > 0 or not learned
    replay = ReplayBuffer.load(ckpt / "replay.npz")
    assert len(replay) == n
    log = read_log(run / "replay.log", 19, 5)
    np.testing.assert_array_equal(replay.all()["obs"], log.obs)


