"""A ros2_control arm as a robot backend: the ROS 2 message types, the transport (rclpy, or
plain DDS through cyclonedds) and the node (:class:`mbpo_arm.hardware.ros2.node.Ros2Robot`).
"""
