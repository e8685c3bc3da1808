"""The ROS 2 backend's settings, checked at start-up: the only source of their defaults.

Light on purpose (no rclpy, no DDS, no numpy): the config layer imports it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from mbpo_arm.hardware.config import JOINTS

TRANSPORTS = ("auto", "rclpy", "cyclonedds")
# Samples taken from one reader per poll; more than a control period's worth is never queued.

COMMAND_TYPES = ("position", "trajectory")
# ROS 2 domain ids that map to valid DDS ports on every platform (ROS 2 docs, "The ROS_DOMAIN_ID").
MAX_DOMAIN_ID = 232


@dataclass
class Ros2Config:
    """An arm behind ros2_control: joint states in, position commands out."""

    transport: str = "auto"  # auto: rclpy where ROS 2 is sourced, else cyclonedds; or name one
    domain_id: int | None = None  # DDS domain; None: $ROS_DOMAIN_ID, else 0
    node_name: str = "mbpo_arm"  # the node's name (rclpy transport)
    joint_names: tuple[str, ...] = JOINTS  # our joint names (task, kinematics), command order
    ros_joint_names: tuple[str, ...] | None = None  # the same joints as named on the wire and
    # in the controller's `joints` parameter, in the same order; None: same as joint_names
    state_topic: str = "/joint_states"  # sensor_msgs/JointState from joint_state_broadcaster
    command_type: str = "position"  # position: Float64MultiArray; trajectory: JointTrajectory
    command_topic: str = "/forward_position_controller/commands"  # command_type=position
    trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory"  # =trajectory
    estop_topic: str = "/mbpo_arm/estop"  # std_msgs/Bool; true stops the arm (latched)
    reset_topic: str = "/mbpo_arm/estop_reset"  # std_msgs/Bool; true releases the e-stop
    status_topic: str = "/mbpo_arm/status"  # std_msgs/String, one JSON object per period
    next_episode_topic: str = "/mbpo_arm/next_episode"  # std_msgs/Bool; true starts the next
    #   episode when runtime.episode_gate=topic holds the arm between episodes
    state_qos_depth: int = 5  # keep-last depth of the best-effort joint-state subscription
    lower: tuple[float, ...] = (-1.92, -1.75, -1.69, -1.66, -2.74, -0.17)  # rad, per joint
    upper: tuple[float, ...] = (1.92, 1.75, 1.69, 1.66, 2.74, 1.75)  # rad, per joint
    velocity: tuple[float, ...] = (4.7,) * 6  # rad/s, per joint
    effort: tuple[float, ...] = (3.0,) * 6  # N m, per joint
    home: tuple[float, ...] | None = (0.0, -0.2, 1.0, -0.8, 0.0, 0.0)  # None: mid-range
    model_path: str | None = None  # MJCF for forward kinematics; None: the shipped arm
    ee_site: str = "ee_site"  # end-effector site of that model
    connect_timeout_s: float = 10.0  # wait this long for the first joint state
    state_timeout_s: float = 1.0  # a newest joint state older than this stops the run
    status_every_s: float = 1.0  # period of the status message

    def __post_init__(self) -> None:
        self.joint_names = _names(self.joint_names, "joint_names")
        self.ros_joint_names = (self.joint_names if self.ros_joint_names is None
                                else _names(self.ros_joint_names, "ros_joint_names"))
        n = len(self.joint_names)
        if len(self.ros_joint_names) != n:
            raise ValueError(f"backend.ros_joint_names has {len(self.ros_joint_names)} names "
                             f"for {n} joint_names; give one wire name per joint, in order")
        for name in ("lower", "upper", "velocity", "effort") + (("home",) if self.home else ()):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != n:
                raise ValueError(f"backend.{name} has {len(values)} values for {n} joints "
                                 f"{list(self.joint_names)}; give one per joint")
            setattr(self, name, values)
        if self.transport not in TRANSPORTS:
            raise ValueError(f"backend.transport={self.transport!r} is unknown; choose one of "
                             f"{TRANSPORTS}")
        if self.command_type not in COMMAND_TYPES:
            raise ValueError(f"backend.command_type={self.command_type!r} is unknown; choose "
                             f"one of {COMMAND_TYPES}")
        for name in ("state_topic", "command_topic", "trajectory_topic", "estop_topic",
                     "reset_topic", "status_topic", "next_episode_topic"):
            check_topic(str(getattr(self, name)), f"backend.{name}")
        if self.domain_id is None:
            self.domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
        if not 0 <= self.domain_id <= MAX_DOMAIN_ID:
            raise ValueError(f"backend.domain_id={self.domain_id} is out of range; use 0-"
                             f"{MAX_DOMAIN_ID} (the ROS_DOMAIN_ID of your ROS 2 machines)")
        for name in ("connect_timeout_s", "state_timeout_s", "status_every_s"):
            setattr(self, name, float(getattr(self, name)))
            if not getattr(self, name) > 0:
                raise ValueError(f"backend.{name} must be > 0, got {getattr(self, name)}")
        if self.state_qos_depth < 1:
            raise ValueError(f"backend.state_qos_depth must be >= 1, got {self.state_qos_depth}")
        bad = [j for j, (lo, hi) in enumerate(zip(self.lower, self.upper, strict=True))
               if not lo < hi]
        if bad:
            raise ValueError(f"backend.lower >= backend.upper for joint index {bad}; each "
                             "joint needs lower < upper")

    @property
    def topics(self) -> dict[str, str]:
        """The topics this config uses, by role (what a launch file remaps)."""
        command = self.command_topic if self.command_type == "position" \
            else self.trajectory_topic
        return {"state": self.state_topic, "command": command, "estop": self.estop_topic,
                "reset": self.reset_topic, "status": self.status_topic,
                "next_episode": self.next_episode_topic}


def _names(value: Sequence[str] | str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"backend.{key} must be a list of names, got the string {value!r}")
    names = tuple(str(v) for v in value)
    if not names:
        raise ValueError(f"backend.{key} is empty; name the arm's joints")
    if len(set(names)) != len(names):
        raise ValueError(f"backend.{key} has duplicates: {list(names)}")
    return names


def check_topic(topic: str, what: str) -> str:
    """``topic`` if it is an absolute ROS 2 name, else ValueError naming ``what``."""
    parts = topic.split("/")
    if not topic.startswith("/") or topic.endswith("/") or not all(
            p and (p[0].isalpha() or p[0] == "_") and all(c.isalnum() or c == "_" for c in p)
            for p in parts[1:]):
        raise ValueError(f"{what}={topic!r} is not an absolute ROS 2 topic name; write it like "
                         "/joint_states (letters, digits and _ between slashes)")
    return topic

