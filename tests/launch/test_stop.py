"""Ctrl-C and SIGTERM in the sync loop end a run gracefully: the current step finishes, a
final checkpoint and the plot are written, one line says how to continue, and the exit code
is 128 + the signal; resuming a finished run says so instead of re-printing old results.
Real processes and real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbpo_arm.agent.checkpoint import latest_checkpoint
from mbpo_arm.launch.commands import GracefulStop

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["logger.wandb=disabled", "agent.sac.learning_starts=100", "agent.sac.batch_size=32",
         "agent.sac.hidden=[32,32]", "trainer.eval_episodes=1", "trainer.log_every=100",
         "trainer.eval_every=100000", "trainer.checkpoint_every=100000"]


def train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.Popen([sys.executable, "-m", "mbpo_arm.launch.cli", "train", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_for_progress(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the first progress line (the loop is running; stderr joins stdout)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith("step"):
            return
        assert line or proc.poll() is None, "the run ended before its first progress line"
    raise AssertionError("no progress line")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_with_a_checkpoint_a_plot_and_the_resume_line(
        tmp_path: Path, sig: signal.Signals) -> None:
    run = tmp_path / "run"
    proc = train(*QUICK, "trainer.total_steps=100000", f"run_dir={run}")
    wait_for_progress(proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out[-2000:]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    steps = int(ckpt.name.removeprefix("step_"))
    assert f"stopped at step {steps}; continue with: mbpo-arm train resume={run}" in out
    assert (run / "learning_curve.png").stat().st_size > 0
    assert "Traceback" not in out
    # the run continues from that checkpoint, and a finished run says so
    done = subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", "train",
                           f"resume={run}", f"trainer.total_steps={steps + 20}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert latest_checkpoint(run).name == f"step_{steps + 20:08d}"
    again = subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", "train",
                            f"resume={run}", f"trainer.total_steps={steps + 20}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0 and "is finished at step" in again.stdout
    assert "final eval" not in again.stdout


def test_a_second_ctrl_c_aborts_at_once() -> None:
    """The first SIGINT only sets the flag the loop reads; the second raises at once; the
    handlers before are back afterwards. (In-process: two signals sent together to a child
    would merge into one.)"""
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes
        assert stop.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)
    assert signal.getsignal(signal.SIGINT) is before
