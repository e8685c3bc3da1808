"""A ros2_control arm as a robot backend: the ROS 2 message types, the transport (rclpy, or
plain DDS through cyclonedds) and the node (:class:`Ros2Robot`)."""

from hardware.ros2.config import Ros2Config
from hardware.ros2.node import Ros2Robot

__all__ = ["Ros2Config", "Ros2Robot"]
