"""The MuJoCo twin of an SO-101-class arm: the twin robot, its config, and forward kinematics."""

from sim.kinematics import ArmKinematics
from sim.twin import TwinConfig, TwinRobot, load_model

__all__ = ["ArmKinematics", "TwinConfig", "TwinRobot", "load_model"]
