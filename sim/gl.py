"""The OpenGL backend of MuJoCo's offscreen renderer, checked before anything imports OpenGL.

``MUJOCO_GL`` is read once, when mujoco is first imported: with ``MUJOCO_GL=osmesa`` and no
libOSMesa, ``import mujoco`` itself fails deep in PyOpenGL (``'NoneType' object has no
attribute 'glGetError'``), so every command would crash, even one that never renders. The
command line therefore runs each command inside :func:`use_gl`, entered before it imports
mujoco: a command that renders gets its backend checked (one line naming the package to
install and the alternative); one that does not runs with ``MUJOCO_GL=disable``, so mujoco
never loads OpenGL there.

Imports nothing but the standard library (no mujoco, no PyOpenGL): it only looks for the
shared libraries, with :func:`ctypes.util.find_library` (the names PyOpenGL loads).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

DISABLED = "disable"  # mujoco then imports no OpenGL context (no renderer can be made)
DEFAULT = "egl"  # headless, GPU or Mesa; what a rendering command uses if MUJOCO_GL is unset
# backend: (the shared libraries PyOpenGL loads for it, each a tuple of alternatives, and the
# Debian/Ubuntu packages that provide them). EGL loads desktop GL as libOpenGL or libGL.
LIBRARIES = {"egl": ((("EGL",), ("OpenGL", "GL")), "libegl1 libopengl0"),
             "osmesa": ((("OSMesa",),), "libosmesa6")}
DISPLAY_BACKENDS = ("glfw", "glx", "")  # need a display (X11 or Wayland)
OFF_VALUES = ("disable", "disabled", "off", "false", "0")


class GLBackendError(RuntimeError):
    """No usable OpenGL backend for rendering; the message is one line that says what to do."""


def gl_backend() -> str:
    """``MUJOCO_GL`` as mujoco reads it (lower case, stripped; ``""`` when unset)."""
    return os.environ.get("MUJOCO_GL", "").lower().strip()


def backend_problem(backend: str) -> str | None:
    """Why ``MUJOCO_GL=backend`` cannot render here (one line), or ``None`` if it looks usable.

    Only looks for the libraries (and a display); creating a context can still fail, e.g. EGL
    without a GPU driver or Mesa, which :meth:`sim.twin.TwinRobot.render` reports.
    """
    if backend in OFF_VALUES:
        return (f"MUJOCO_GL={backend} turns rendering off; set MUJOCO_GL={DEFAULT} (or osmesa) "
                "to record a video")
    if backend in LIBRARIES:
        names, package = LIBRARIES[backend]
        missing = [" or ".join(f"lib{n}" for n in group) for group in names
                   if all(ctypes.util.find_library(n) is None for n in group)]
        if missing:
            other = "osmesa (software)" if backend == "egl" else "egl (GPU or Mesa)"
            return (f"MUJOCO_GL={backend} needs {' and '.join(missing)}, which is not installed:"
                    f" `sudo apt-get install {package}`, or use MUJOCO_GL={other}")
        return None
    if backend in DISPLAY_BACKENDS or backend in ("enable", "enabled", "on", "true", "1"):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            shown = backend or "(unset)"
            return (f"MUJOCO_GL={shown} needs a display, and there is none (no DISPLAY); "
                    f"use MUJOCO_GL={DEFAULT} to render headless (or osmesa, software)")
        return None
    if backend in ("wgl", "cgl"):
        return None
    return (f"MUJOCO_GL={backend} is not an OpenGL backend; use MUJOCO_GL={DEFAULT} (headless, "
            "GPU or Mesa), osmesa (software) or glfw (a display)")


@contextmanager
def use_gl(renders: bool) -> Iterator[str]:
    """``MUJOCO_GL`` set up for a command, entered before mujoco is imported; yields the
    backend in effect and restores the caller's ``MUJOCO_GL`` on exit (``main()`` can be
    called in-process, by tests, and must not leave ``disable`` behind).

    ``renders``: the command records frames. Then ``MUJOCO_GL`` defaults to ``egl`` and is
    checked; otherwise it is ``disable`` while the command runs (its child processes inherit
    it), so importing mujoco loads no OpenGL at all, whatever the user's ``MUJOCO_GL``: a
    command that never renders has no use for it.

    Raises:
        GLBackendError: ``renders`` and the backend cannot work here (one line).
    """
    before = os.environ.get("MUJOCO_GL")
    if not renders:
        backend = DISABLED
    elif "mujoco" in sys.modules:  # too late to choose: mujoco read MUJOCO_GL on import
        backend = gl_backend()
    else:
        backend = gl_backend() or DEFAULT
    problem = backend_problem(backend) if renders else None
    if problem is not None:
        raise GLBackendError(problem)
    os.environ["MUJOCO_GL"] = backend
    try:
        yield backend
    finally:
        if before is None:
            os.environ.pop("MUJOCO_GL", None)
        else:
            os.environ["MUJOCO_GL"] = before
