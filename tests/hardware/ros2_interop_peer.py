"""One side of an interop run, as a process: ``python ros2_interop_peer.py ROLE DOMAIN ...``.

Roles (each prints one JSON line of its counts at the end):

- ``arm-rclpy JOINTS_JSON SECONDS HZ``: a ROS 2 arm written with plain rclpy (no project
  code): once its ``/joint_states`` publisher has a subscriber, publishes ``sensor_msgs/
  JointState`` at HZ for SECONDS, counting the ``std_msgs/Float64MultiArray`` commands that
  arrive on ``/forward_position_controller/commands``; lingers 2 s for the last ones.
- ``arm-project TRANSPORT SECONDS HZ``: the same arm through the project's transport.
- ``node TRANSPORT HZ``: the project's :class:`Ros2Robot` (the actor's side): connects, waits
  until its command publisher is matched, then reads and writes at HZ until the states stop.
"""

from __future__ import annotations

import json
import sys
import time

STATE, COMMAND = "/joint_states", "/forward_position_controller/commands"


def arm_rclpy(domain: int, joints: list[str], seconds: float, hz: float) -> dict:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    rclpy.init(domain_id=domain)
    node = rclpy.create_node("interop_arm")
    got = [0]
    node.create_subscription(Float64MultiArray, COMMAND, lambda _: got.__setitem__(
        0, got[0] + 1), QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    pub = node.create_publisher(JointState, STATE, qos_profile_sensor_data)

    def spin_until(end: float) -> None:
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=min(0.002, max(0.0, end - time.monotonic())))

    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        spin_until(time.monotonic() + 0.05)
    spin_until(time.monotonic() + 1.0)  # the reader side matches too
    sent, next_t = 0, time.monotonic()
    for _ in range(int(seconds * hz)):
        pub.publish(JointState(name=joints, position=[0.0] * len(joints),
                               velocity=[0.0] * len(joints)))
        sent += 1
        next_t += 1 / hz
        spin_until(next_t)
    spin_until(time.monotonic() + 2.0)
    node.destroy_node()
    rclpy.shutdown()
    return {"states_sent": sent, "commands_received": got[0]}


def arm_project(domain: int, transport: str, seconds: float, hz: float) -> dict:
    from mbpo_arm.hardware.config import JOINTS
    from mbpo_arm.hardware.ros2 import messages as m
    from mbpo_arm.hardware.ros2.transport import COMMANDS, SENSOR_DATA, make_transport

    t = make_transport(transport, domain, "interop_arm")
    got = [0]
    t.subscribe(COMMAND, m.Float64MultiArray, COMMANDS, lambda _: got.__setitem__(0, got[0] + 1))
    pub = t.publisher(STATE, m.JointState, SENSOR_DATA)
    deadline = time.monotonic() + 30
    while t.endpoints(STATE)[1] == 0 and time.monotonic() < deadline:
        t.poll()
        time.sleep(0.02)

    def poll_until(end: float) -> None:
        while time.monotonic() < end:
            t.poll()
            time.sleep(0.002)

    poll_until(time.monotonic() + 0.5)
    sent, next_t = 0, time.monotonic()
    for _ in range(int(seconds * hz)):
        pub(m.JointState(name=list(JOINTS), position=[0.0] * 6, velocity=[0.0] * 6))
        sent += 1
        next_t += 1 / hz
        poll_until(next_t)
    poll_until(time.monotonic() + 2.0)
    t.close()
    return {"states_sent": sent, "commands_received": got[0]}


def node(domain: int, transport: str, hz: float) -> dict:
    import numpy as np

    from mbpo_arm.hardware.errors import RobotError
    from mbpo_arm.hardware.ros2.config import Ros2Config
    from mbpo_arm.hardware.ros2.node import Ros2Robot
    from mbpo_arm.hardware.ros2.transport import make_transport

    cfg = Ros2Config(domain_id=domain, transport=transport, connect_timeout_s=30)
    robot = Ros2Robot(cfg, make_transport(transport, domain, cfg.node_name), control_hz=hz)
    robot.connect()
    deadline = time.monotonic() + 10
    settle = float("inf")  # read on (as the control loop would) until commands can flow
    while time.monotonic() < min(deadline, settle):
        robot.read()
        if settle == float("inf") and robot._transport.endpoints(COMMAND)[1]:
            settle = time.monotonic() + 0.3
        time.sleep(1 / hz)
    home, next_t = robot.home_position, time.monotonic()
    while True:
        try:
            robot.read()
        except RobotError:  # the arm stopped publishing: the run is over
            break
        robot.write(np.asarray(home))
        next_t += 1 / hz
        time.sleep(max(0.0, next_t - time.monotonic()))
    counts = dict(robot.counts)
    robot.close()
    return {"states_received": counts["joint_states_received"],
            "states_rejected": counts["joint_states_rejected"],
            "commands_sent": counts["commands_sent"]}


def main(argv: list[str]) -> None:
    role, domain = argv[0], int(argv[1])
    if role == "arm-rclpy":
        out = arm_rclpy(domain, json.loads(argv[2]), float(argv[3]), float(argv[4]))
    elif role == "arm-project":
        out = arm_project(domain, argv[2], float(argv[3]), float(argv[4]))
    elif role == "node":
        out = node(domain, argv[2], float(argv[3]))
    else:
        raise SystemExit(f"unknown role {role!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
