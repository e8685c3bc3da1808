"""The rclpy path end to end, run in the ROS 2 venv by ``test_ros2_rclpy.py``:
``python ros2_rclpy_scenario.py DOMAIN``, against the twin driver (over rclpy) in another
process. The node (rclpy transport) connects, moves the twin, takes an e-stop, a refused and
an accepted release and a next-episode signal from a third rclpy node; prints ``ok`` and
its counts, or fails with the first broken step."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import numpy as np

from mbpo_arm.hardware.gate import topic_gate
from mbpo_arm.hardware.ros2 import messages as m
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.node import Ros2Robot
from mbpo_arm.hardware.ros2.transport import EVENTS, RclpyTransport


def until(cond: Callable[[], bool], step: Callable[[], object], what: str, s: float = 10.0
          ) -> None:
    end = time.monotonic() + s
    while time.monotonic() < end:
        step()
        if cond():
            return
        time.sleep(0.02)
    raise SystemExit(f"step failed: {what}")


def main(domain: int) -> None:
    robot = Ros2Robot(Ros2Config(domain_id=domain, transport="rclpy", connect_timeout_s=20),
                      control_hz=50.0)
    operator = RclpyTransport(domain, "operator")
    estop = operator.publisher("/mbpo_arm/estop", m.Bool, EVENTS)
    reset = operator.publisher("/mbpo_arm/estop_reset", m.Bool, EVENTS)
    nxt = operator.publisher("/mbpo_arm/next_episode", m.Bool, EVENTS)
    gate = topic_gate(robot)  # runtime.episode_gate=topic, as the composition root builds it
    robot.connect()
    assert robot.transport_name == "rclpy"
    start = robot.read().position.copy()
    target = start + np.array([0.2, -0.1, 0.1, 0.0, 0.0, 0.0])
    until(lambda: np.abs(robot.read().position - target).max() < 0.05,
          lambda: robot.write(target), "the twin follows rclpy commands")
    until(lambda: robot.estopped, lambda: (estop(m.Bool(data=True)), robot.read()),
          "an e-stop on /mbpo_arm/estop latches")
    held = robot.write(start)
    assert np.allclose(held, target, atol=1e-9), "the e-stop holds the last target"
    refused: list[str] = []

    def refuse(source: str) -> None:
        refused.append(source)
        raise RuntimeError("stop file present")

    robot.on_estop_reset = refuse
    until(lambda: bool(refused), lambda: (reset(m.Bool(data=True)), robot.read()),
          "a release reaches on_estop_reset")
    assert robot.estopped, "a refused release keeps the e-stop"
    robot.on_estop_reset = refused.append
    until(lambda: not robot.estopped, lambda: (reset(m.Bool(data=True)), robot.read()),
          "an accepted release clears the e-stop")
    gate.arm()
    until(gate.released, lambda: (nxt(m.Bool(data=True)), robot.read()),
          "next_episode opens the gate")
    assert gate.source == "ros2:/mbpo_arm/next_episode", gate.source
    counts = dict(robot.counts)
    robot.close()
    operator.close()
    print("ok", json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
