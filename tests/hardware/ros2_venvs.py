"""Virtual environments with real ROS 2 (rclpy wheels from the package registry), built once
by the tests and cached under ``.cache/ros2-venvs/`` (git-ignored), keyed by the requirement
list: ``kilted`` (Fast DDS 3) and ``jazzy`` (Fast DDS 2), each with ``rmw_fastrtps_cpp``.

Each sees the project's own environment after its own packages (a ``.pth`` line that adds
this interpreter's site-packages), so ``python -m mbpo_arm...`` runs there with rclpy too.
Where the wheels cannot be installed (no registry), :func:`ros2_python` returns the reason,
and the tests skip with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "ros2-venvs"
DISTROS: dict[str, tuple[str, ...]] = {
    "kilted": ("ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-trajectory-msgs",
               "ros-rmw-fastrtps-cpp"),
    "jazzy": ("ros-jazzy-rclpy", "ros-jazzy-sensor-msgs", "ros-jazzy-std-msgs",
              "ros-jazzy-trajectory-msgs", "ros-jazzy-rmw-fastrtps-cpp"),
}
INSTALL_TIMEOUT_S = 900


def venv_dir(distro: str) -> Path:
    """Where the ``distro`` venv lives: keyed by its requirements and this Python."""
    key = hashlib.sha256(" ".join((*DISTROS[distro], sys.version)).encode()).hexdigest()[:12]
    return CACHE / f"{distro}-{key}"


def ros2_python(distro: str) -> tuple[Path | None, str]:
    """``(python, "")`` of the cached ``distro`` venv (building it first if needed), or
    ``(None, reason)`` where it cannot be built."""
    venv = venv_dir(distro)
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{distro}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, across processes
        if (venv / ".complete").exists():
            return python, ""
        t0 = time.monotonic()
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                           capture_output=True, timeout=120)
            done = subprocess.run([str(python), "-m", "pip", "install", "-q",
                                   "--disable-pip-version-check", *DISTROS[distro]],
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as err:
            return None, f"could not build the ROS 2 {distro} venv: {err}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            return None, f"the ROS 2 {distro} wheels did not install: {last}"
        site = Path(sysconfig.get_paths()["purelib"])
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                  "get_paths()['purelib'])"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        (Path(purelib) / "mbpo_arm_project.pth").write_text(
            f"import site; site.addsitedir({str(site)!r})\n")
        (venv / ".complete").write_text(f"built in {time.monotonic() - t0:.1f} s\n")
    return python, ""
