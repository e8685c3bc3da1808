"""Interop across DDS implementations with real processes and real ROS 2 (rclpy wheels in a
cached venv, :mod:`tests.hardware.ros2_venvs`): joint states one way, commands the other, at
50 Hz for 10 s, both directions at once in each pair and the three pairs concurrently, each in
its own domain. Each direction must deliver more than 95 %:

- the project over plain DDS (Cyclone) <-> an rclpy arm on ROS 2 Kilted (Fast DDS 3);
- the project over plain DDS <-> an rclpy arm on ROS 2 Jazzy (Fast DDS 2);
- the project over rclpy (Kilted) <-> the project over plain DDS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cyclonedds")

from mbpo_arm.hardware.config import JOINTS  # noqa: E402
from tests.hardware.ros2_helpers import fresh_domain  # noqa: E402
from tests.hardware.ros2_venvs import ROOT, ros2_python  # noqa: E402

PEER = str(Path(__file__).with_name("ros2_interop_peer.py"))
HZ, SECONDS = 50.0, 10.0


def ros2(distro: str) -> str:
    python, why = ros2_python(distro)
    if python is None:
        pytest.skip(why)
    return str(python)


def start(python: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([python, PEER, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, f"{proc.args[2:4]} failed: {err[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_states_and_commands_cross_implementations(capsys: pytest.CaptureFixture[str]) -> None:
    kilted, jazzy = ros2("kilted"), ros2("jazzy")
    joints = json.dumps(list(JOINTS))
    pairs = {}
    for name, (node_py, transport, arm) in {
        "plain DDS <-> rclpy Kilted (Fast DDS 3)":
            (sys.executable, "cyclonedds", (kilted, "arm-rclpy", joints)),
        "plain DDS <-> rclpy Jazzy (Fast DDS 2)":
            (sys.executable, "cyclonedds", (jazzy, "arm-rclpy", joints)),
        "project rclpy (Kilted) <-> project plain DDS":
            (kilted, "rclpy", (sys.executable, "arm-project", "cyclonedds")),
    }.items():
        domain = fresh_domain()
        pairs[name] = (start(node_py, "node", domain, transport, HZ),
                       start(arm[0], arm[1], domain, arm[2], SECONDS, HZ))
    failures = []
    for name, (node_proc, arm_proc) in pairs.items():
        node, arm = result(node_proc), result(arm_proc)
        states = node["states_received"] / arm["states_sent"]
        commands = arm["commands_received"] / node["commands_sent"]
        with capsys.disabled():  # the fractions belong in the test log, passed or not
            print(f"\n{name}: states {node['states_received']}/{arm['states_sent']} = "
                  f"{states:.1%}, commands {arm['commands_received']}/{node['commands_sent']}"
                  f" = {commands:.1%}")
        assert arm["states_sent"] >= 0.99 * HZ * SECONDS and node["states_rejected"] == 0
        if not (states > 0.95 and commands > 0.95):
            failures.append(f"{name}: states {states:.1%}, commands {commands:.1%}")
    assert not failures, failures
