"""Offscreen video frames: the twin's cameras, and the reach target drawn where the camera
sees it (a pixel test at the target's projection through the ``workspace`` camera's pose and
field of view).

The OpenGL backend is fixed when mujoco is first imported, so each backend is tried in a fresh
interpreter: ``MUJOCO_GL=egl`` first, then ``osmesa``. Skipped only when neither can start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import numpy as np
from mbpo_arm.sim.twin import TwinRobot
twin = TwinRobot()
img = twin.render()
small = twin.render(width=64, height=48)
assert img.shape == (360, 480, 3) and img.dtype == np.uint8, (img.shape, img.dtype)
assert small.shape == (48, 64, 3), small.shape
assert img.std() > 5, "blank frame"
try:
    twin.render(camera="nope")
except ValueError as err:
    assert "front" in str(err)
else:
    raise AssertionError("unknown camera accepted")
twin.close()

# The reach target, projected with the camera's pose and fovy, is the marker's green there.
from mbpo_arm.envs.reach import TARGET_RGB, VIDEO_CAMERA, ArmReachEnv
from mbpo_arm.launch.video import CaptionedVideo
import mujoco
env = ArmReachEnv(render_mode="rgb_array")
twin = env.robot
cam = mujoco.mj_name2id(twin.model, mujoco.mjtObj.mjOBJ_CAMERA, VIDEO_CAMERA)

def project(point, height, width):  # pixel (column, row); the camera looks along its -z
    rel = twin.data.cam_xmat[cam].reshape(3, 3).T @ (point - twin.data.cam_xpos[cam])
    depth = -rel[2]
    assert depth > 0, f"{point} is behind the camera"
    f = (height / 2) / np.tan(np.radians(twin.model.cam_fovy[cam]) / 2)
    return width / 2 + f * rel[0] / depth, height / 2 - f * rel[1] / depth

def colour_at(img, col, row):
    patch = img[int(row) - 1:int(row) + 2, int(col) - 1:int(col) + 2].reshape(-1, 3)
    return np.median(patch, axis=0)

def is_marker(rgb):
    r, g, b = rgb.astype(float)
    return g > 150 and g - r > 80 and g - b > 50

targets = [np.array(t) for t in ([0.2, -0.15, 0.3], [0.0, 0.22, 0.35], [0.25, 0.12, 0.1],
                                 [-0.12, -0.2, 0.2])]
frames = []
for target in targets:
    env.reset(seed=0, options={"target": target})
    frames.append(env.render())
for i, target in enumerate(targets):
    img = frames[i]
    assert img.shape == (360, 480, 3) and img.dtype == np.uint8, (img.shape, img.dtype)
    col, row = project(target, *img.shape[:2])
    assert 0 <= col < 480 and 0 <= row < 360, (target, col, row)
    assert is_marker(colour_at(img, col, row)), (target, col, row, colour_at(img, col, row))
    # the same pixel without the target there: not the marker's green (so the marker made it)
    other = frames[(i + 1) % len(frames)]
    assert not is_marker(colour_at(other, col, row)), (target, colour_at(other, col, row))
assert TARGET_RGB[1] > TARGET_RGB[0] and TARGET_RGB[1] > TARGET_RGB[2]

# The caption band darkens the top of the frame; the scene below it is untouched.
video = CaptionedVideo(env, episodes=3)
video.reset(seed=1)
video.step(np.zeros(env.action_space.shape))
raw, captioned = env.render(), video.render()
assert captioned.shape == raw.shape and captioned.dtype == np.uint8
assert captioned[:30].mean() < raw[:30].mean() - 20, "no caption band"
assert (captioned[:30] > 240).all(axis=-1).any(), "no white caption text"
assert np.array_equal(captioned[60:], raw[60:])
env.close()
print("OK")
"""


@pytest.mark.slow
def test_render_cameras_and_target_marker() -> None:
    failures = []
    for backend in ("egl", "osmesa"):
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend,
               "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 and proc.stdout.strip().endswith("OK"):
            return
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if "AssertionError" in proc.stderr:
            pytest.fail(f"MUJOCO_GL={backend}: {proc.stderr}")
        failures.append(f"MUJOCO_GL={backend}: {tail}")
    pytest.skip("no OpenGL backend could be created: " + "; ".join(failures))
