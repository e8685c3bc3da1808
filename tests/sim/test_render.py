"""Offscreen video frames from the twin's ``front`` camera.

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
twin.disconnect()
print("OK")
"""


def test_render_front_camera() -> None:
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
