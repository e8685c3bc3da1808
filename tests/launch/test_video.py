"""``mbpo-arm eval --video`` and the rendering errors, end to end in subprocesses: a broken
``MUJOCO_GL`` does not touch commands that never render, and is one line where it matters."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--backend", "mujoco", "task=reach", "agent=sac", "logger.wandb=disabled",
         "agent.sac.learning_starts=50", "agent.sac.batch_size=32", "agent.sac.hidden=[32,32]",
         "trainer.eval_episodes=1", "trainer.total_steps=100", "trainer.eval_every=100",
         "trainer.checkpoint_every=100", "trainer.log_every=100"]
NO_OSMESA = ctypes.util.find_library("OSMesa") is None


def cli(*args: str, gl: str | None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MUJOCO_GL", None)
    env.pop("PYOPENGL_PLATFORM", None)
    if gl is not None:
        env["MUJOCO_GL"] = gl
    return subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("mbpo-arm: error: ")
    return lines[0]


@pytest.mark.slow
def test_eval_zero_episodes_is_a_clear_error(tmp_path: Path) -> None:
    for extra in ([], ["--json"]):
        line = one_line_error(cli("eval", str(tmp_path), "--episodes", "0", *extra, gl=None))
        assert "--episodes 0" in line and ">= 1" in line
        assert "NaN" not in line


@pytest.mark.slow
def test_eval_of_missing_run_names_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "nope"
    line = one_line_error(cli("eval", str(run), gl=None))
    assert "resume=" not in line and f"{run}: no config.yaml" in line


@pytest.mark.slow
@pytest.mark.skipif(not NO_OSMESA, reason="libOSMesa is installed here")
def test_osmesa_without_libosmesa() -> None:
    for args in (["--help"], ["train", "--help"], ["eval", "--help"]):
        proc = cli(*args, gl="osmesa", timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr
        assert "Traceback" not in proc.stderr
    line = one_line_error(cli("eval", "runs/x", "--video", "x.gif", gl="osmesa", timeout=60))
    assert "libosmesa6" in line and "MUJOCO_GL=egl" in line


def test_a_display_backend_without_a_display_is_one_line() -> None:
    env_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if env_display:
        pytest.skip("a display is there")
    line = one_line_error(cli("eval", "runs/x", "--video", "x.gif", gl="glfw", timeout=60))
    assert "needs a display" in line and "MUJOCO_GL=egl" in line


@pytest.mark.slow
def test_train_ignores_a_broken_mujoco_gl_and_eval_records_a_captioned_video(
        tmp_path: Path) -> None:
    run = tmp_path / "run"
    broken = "osmesa" if NO_OSMESA else "no-such-backend"  # both crash `import mujoco` as is
    proc = cli("train", *QUICK, f"run_dir={run}", gl=broken)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OpenGL" not in proc.stderr
    failures = []
    for backend in ("egl", "osmesa"):
        video = tmp_path / backend / "eval.gif"
        proc = cli("eval", str(run), "--episodes", "2", "--video", str(video), gl=backend)
        if proc.returncode == 0:
            break
        failures.append(proc.stderr.strip().splitlines()[-1])
    else:
        pytest.skip("no OpenGL backend could render: " + "; ".join(failures))
    assert f"video: {video}" in proc.stdout.splitlines()
    frames = iio.imread(video)
    # 2 episodes of 100 steps; the GIF merges each episode's held last frame into one
    assert frames.shape[1:] == (360, 480, 3) and len(frames) == 200, frames.shape
    top, scene = frames[:, :40].astype(float), frames[:, 50:].astype(float)
    assert top.mean() < scene.mean(), "no caption band"
    assert (frames[:, :40] > 230).all(axis=-1).any(axis=(1, 2)).all(), "a frame lacks text"
    green = (scene[..., 1] > 150) & (scene[..., 1] - scene[..., 0] > 80)
    assert green.any(axis=(1, 2)).mean() > 0.9, "the target marker is missing from frames"
    assert np.ptp(frames[:, 50:].astype(float), axis=0).max() > 0, "the arm never moved"
