"""The MuJoCo twin of an SO-101-class arm: the twin robot (:mod:`.twin`), its settings
(:mod:`.config`), forward kinematics and collision geometry, and emulators of real hardware
driven by the twin (a servo bus on a pseudo-terminal, a ROS 2 joint-state driver).
"""
