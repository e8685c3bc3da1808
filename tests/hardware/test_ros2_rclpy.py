"""The rclpy transport for real (ROS 2 Kilted wheels in the cached venv,
:mod:`tests.hardware.ros2_venvs`): the twin driver over rclpy in one process, the node over
rclpy in another (:mod:`tests.hardware.ros2_rclpy_scenario`: commands, e-stop, release, the
next-episode gate); and the launch file where ROS's ``launch`` packages import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardware.ros2_helpers import fresh_domain
from tests.hardware.ros2_venvs import ROOT, ros2_python

SCENARIO = str(Path(__file__).with_name("ros2_rclpy_scenario.py"))


@pytest.mark.slow
def test_node_twin_driver_estop_and_gate_over_rclpy() -> None:
    python, why = ros2_python("kilted")
    if python is None:
        pytest.skip(why)
    domain = fresh_domain()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([str(python), "-m", "mbpo_arm.sim.ros2_twin_driver",
                               "--seconds", "40", "backend.transport=rclpy",
                               f"backend.domain_id={domain}", "runtime.control_hz=50"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=ROOT)
    try:
        run = subprocess.run([str(python), SCENARIO, str(domain)], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=90)
    finally:
        driver.send_signal(2)
        said = driver.communicate(timeout=20)[0]
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr[-2000:]
    assert f"(domain {domain}, rclpy)" in said, said
    assert '"commands_received": 0' not in said and '"commands_rejected": 0' in said, said


def test_generate_launch_description_where_launch_imports() -> None:
    launch = pytest.importorskip("launch")  # this repository's launch/ may shadow ROS's
    if not hasattr(launch, "LaunchDescription"):
        pytest.skip("ROS's launch packages are not installed here (they come with a ROS 2 "
                    "install; no wheel of them is on the package registry)")
    sys.path.insert(0, str(ROOT / "launch"))
    try:
        import train_arm
    finally:
        sys.path.pop(0)
    description = train_arm.generate_launch_description()
    names = {a.name for a in description.entities if hasattr(a, "name")}
    assert {"backend", "domain_id", "overrides"} <= names


def test_the_launch_file_runs_without_ros() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "launch/train_arm.py"), "backend:=nope"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "backend:=nope is unknown" in run.stderr
