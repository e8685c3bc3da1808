"""ROS 2 message types as DDS IDL structs, byte-compatible with what a ROS 2 node puts on the wire.

A ROS 2 ``pkg/msg/Name`` is the DDS type ``pkg::msg::dds_::Name_`` (ROS 2 design article
"Topic and Service name mapping to DDS"); its fields, in the order and with the types of the
``.msg`` file, are serialized as XCDR1 (classic CDR, encapsulation ``CDR_LE``) by
rmw_cyclonedds and rmw_fastrtps. The structs below mirror the ``.msg`` files field by field, so
``ros2 topic echo`` on a ROS 2 machine decodes our samples and we decode its.

Field names are the ROS names, so code that reads ``msg.header.stamp.sec`` or
``msg.position`` works on these structs and on rclpy's message objects alike.

Needs the ``cyclonedds`` Python package (``pip install cyclonedds``). No ``from __future__ import
annotations`` here: cyclonedds resolves the field annotations at run time.
"""

from dataclasses import dataclass, field

import cyclonedds.idl.annotations as annotate
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, int32, sequence, uint32

# ----------------------------------------------------------------- builtin_interfaces/msg


@dataclass
@annotate.final
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    """``builtin_interfaces/Time``: seconds and nanoseconds since the epoch (ROS time)."""

    sec: int32 = 0
    nanosec: uint32 = 0

    @classmethod
    def from_seconds(cls, seconds: float) -> "Time":
        """The stamp of ``seconds`` (float, s), nanoseconds rounded down."""
        ns = int(seconds * 1e9)
        return cls(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
@annotate.final
class Duration(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    """``builtin_interfaces/Duration``."""

    sec: int32 = 0
    nanosec: uint32 = 0


# ------------------------------------------------------------------------- std_msgs/msg


@dataclass
@annotate.final
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    """``std_msgs/Header``."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
@annotate.final
class Bool(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):
    """``std_msgs/Bool``."""

    data: bool = False


@dataclass
@annotate.final
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    """``std_msgs/String``."""

    data: str = ""


@dataclass
@annotate.final
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    """``std_msgs/MultiArrayDimension``."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
@annotate.final
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    """``std_msgs/MultiArrayLayout``."""

    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
@annotate.final
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    """``std_msgs/Float64MultiArray``: what ``forward_position_controller`` takes, ``data`` in
    the order of the controller's ``joints`` parameter (an empty layout is what ros2_control's
    own examples send)."""

    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float64] = field(default_factory=list)


# ---------------------------------------------------------------------- sensor_msgs/msg


@dataclass
@annotate.final
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    """``sensor_msgs/JointState``: ``position``/``velocity``/``effort`` parallel to ``name``;
    ``velocity`` and ``effort`` may be empty."""

    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


# ------------------------------------------------------------------ trajectory_msgs/msg


@dataclass
@annotate.final
class JointTrajectoryPoint(IdlStruct,
                           typename="trajectory_msgs::msg::dds_::JointTrajectoryPoint_"):
    """``trajectory_msgs/JointTrajectoryPoint``."""

    positions: sequence[float64] = field(default_factory=list)
    velocities: sequence[float64] = field(default_factory=list)
    accelerations: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
@annotate.final
class JointTrajectory(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectory_"):
    """``trajectory_msgs/JointTrajectory``: what ``joint_trajectory_controller`` takes."""

    header: Header = field(default_factory=Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[JointTrajectoryPoint] = field(default_factory=list)


def ros_type_name(msg_type: type) -> str:
    """``"sensor_msgs/msg/JointState"`` for :class:`JointState` (the name rclpy imports)."""
    dds = msg_type.__idl_typename__  # e.g. sensor_msgs::msg::dds_::JointState_
    package, _, _, name = dds.split("::")
    return f"{package}/msg/{name.removesuffix('_')}"
