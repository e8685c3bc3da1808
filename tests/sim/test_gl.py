"""``sim.gl``: the MUJOCO_GL check that runs before mujoco is imported (no OpenGL imported)."""

from __future__ import annotations

import ctypes.util
import os

import pytest

from mbpo_arm.sim.gl import DISABLED, GLBackendError, backend_problem, use_gl


def test_a_command_that_does_not_render_runs_with_gl_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    with use_gl(renders=False) as backend:
        assert backend == DISABLED and os.environ["MUJOCO_GL"] == DISABLED
    assert os.environ["MUJOCO_GL"] == "osmesa"  # the caller's value comes back
    monkeypatch.delenv("MUJOCO_GL")
    with use_gl(renders=False):
        pass
    assert "MUJOCO_GL" not in os.environ


@pytest.mark.parametrize("value", ["no-such-backend", "off"])
def test_a_rendering_command_gets_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", value)
    with pytest.raises(GLBackendError) as err, use_gl(renders=True):
        pass
    assert "\n" not in str(err.value) and "MUJOCO_GL=egl" in str(err.value)


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="libOSMesa here")
def test_missing_osmesa_names_the_package() -> None:
    problem = backend_problem("osmesa")
    assert problem is not None and "libosmesa6" in problem and "MUJOCO_GL=egl" in problem
