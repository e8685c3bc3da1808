"""The IDL types put the bytes a ROS 2 node would on the wire (XCDR1, little endian).

The expected bytes are worked out by hand from the CDR rules (OMG DDS-XTypes 1.3, 7.4.1: each
primitive aligned to its size from the start of the payload, after the 4-byte encapsulation
header; strings as a uint32 length counting the terminating NUL, then the bytes and the NUL;
sequences as a uint32 count, then the elements).
"""

from __future__ import annotations

import pytest

pytest.importorskip("cyclonedds")

from mbpo_arm.hardware.ros2 import messages as m  # noqa: E402

CDR_LE = bytes.fromhex("00010000")  # encapsulation: PLAIN_CDR, little endian, no options


def test_joint_state_bytes_match_hand_computed_cdr() -> None:
    msg = m.JointState(header=m.Header(stamp=m.Time(sec=1, nanosec=2), frame_id="a"),
                       name=["j1"], position=[1.0], velocity=[], effort=[])
    expected = CDR_LE + bytes.fromhex(
        "01000000"          # header.stamp.sec = 1                      offset 0
        "02000000"          # header.stamp.nanosec = 2                  4
        "02000000" "6100"   # frame_id: length 2 ("a" + NUL)            8
        "0000"              # padding to the next uint32                14
        "01000000"          # name: 1 element                           16
        "03000000" "6a3100" "00"  # "j1" + NUL, padding                 20
        "01000000"          # position: 1 element                       28
        "000000000000f03f"  # 1.0, already 8-aligned                    32
        "00000000"          # velocity: empty                           40
        "00000000")         # effort: empty                             44
    assert msg.serialize() == expected
    assert m.JointState.deserialize(expected) == msg


def test_float64_multi_array_bytes_match_hand_computed_cdr() -> None:
    msg = m.Float64MultiArray(layout=m.MultiArrayLayout(
        dim=[m.MultiArrayDimension(label="x", size=2, stride=2)], data_offset=0),
        data=[1.0, -2.0])
    expected = CDR_LE + bytes.fromhex(
        "01000000"                  # layout.dim: 1 element
        "02000000" "7800" "0000"    # label "x" + NUL, padding
        "02000000" "02000000"       # size, stride
        "00000000"                  # data_offset
        "02000000" "00000000"       # data: 2 elements, padding to 8 (offset 28 -> 32)
        "000000000000f03f"          # 1.0
        "00000000000000c0")         # -2.0
    assert msg.serialize() == expected
    assert m.Float64MultiArray.deserialize(expected) == msg


def test_small_messages_bytes() -> None:
    assert m.Bool(data=True).serialize() == CDR_LE + b"\x01"
    assert m.String(data="ab").serialize() == CDR_LE + bytes.fromhex("03000000616200")
    traj = m.JointTrajectory(joint_names=["a"], points=[m.JointTrajectoryPoint(
        positions=[1.0], time_from_start=m.Duration(sec=0, nanosec=5))])
    expected = CDR_LE + bytes.fromhex(
        "00000000" "00000000" "01000000" "00"  # header: stamp 0 0, frame_id "" (NUL only)
        "000000"                               # padding
        "01000000" "02000000" "6100" "0000"    # joint_names ["a"]
        "01000000"                             # points: 1 element
        "01000000" "00000000"                  # positions: 1 element, padding (36 -> 40)
        "000000000000f03f"                     # 1.0
        "00000000" "00000000" "00000000"       # velocities, accelerations, effort: empty
        "00000000" "05000000")                 # time_from_start 0 s 5 ns
    assert traj.serialize() == expected


def test_ros_type_names() -> None:
    names = {m.JointState: "sensor_msgs::msg::dds_::JointState_",
             m.Header: "std_msgs::msg::dds_::Header_",
             m.Time: "builtin_interfaces::msg::dds_::Time_",
             m.Float64MultiArray: "std_msgs::msg::dds_::Float64MultiArray_",
             m.MultiArrayLayout: "std_msgs::msg::dds_::MultiArrayLayout_",
             m.MultiArrayDimension: "std_msgs::msg::dds_::MultiArrayDimension_",
             m.Bool: "std_msgs::msg::dds_::Bool_", m.String: "std_msgs::msg::dds_::String_",
             m.JointTrajectory: "trajectory_msgs::msg::dds_::JointTrajectory_",
             m.JointTrajectoryPoint: "trajectory_msgs::msg::dds_::JointTrajectoryPoint_"}
    for cls, dds in names.items():
        assert cls.__idl_typename__ == dds
    assert m.ros_type_name(m.JointState) == "sensor_msgs/msg/JointState"
    assert m.Time.from_seconds(1.5) == m.Time(sec=1, nanosec=500_000_000)
