"""The task settings, as typed dataclasses: the only source of their defaults.

Light on purpose (no gymnasium): the config layer and ``mbpo-arm --help`` import it without
loading the envs. That ``task.id`` names a registered env is checked where the envs are built
(:func:`mbpo_arm.envs.factory.check_task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ARM_JOINTS = ("base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch", "wrist_roll")



@dataclass
class ReachConfig:
    """The reach task. Joint names must be among the backend's joints."""

    joints: tuple[str, ...] = ARM_JOINTS  # joints the policy moves; others hold their home pose
    action_scale: float = 0.1  # largest joint-position change per step (rad)
    action_cost: float = 0.01  # weight of ||a||^2 in the reward
    success_threshold: float = 0.02  # end-effector distance counted as success (m)
    init_noise: float = 0.1  # uniform noise on the home pose at reset (rad)
    target_fraction: float = 0.6  # targets come from joint configs in this fraction of the range
    min_target_height: float = 0.05  # lowest target above the table (m)
    home: tuple[float, ...] | None = None  # home pose of `joints`; None: the backend's

    def __post_init__(self) -> None:
        self.joints = tuple(str(j) for j in self.joints)
        if self.home is not None:
            self.home = tuple(float(h) for h in self.home)
            if len(self.home) != len(self.joints):
                raise ValueError(f"task.reach.home has {len(self.home)} values for "
                                 f"{len(self.joints)} joints {self.joints}")
        for name in ("action_scale", "success_threshold", "target_fraction"):
            if not getattr(self, name) > 0:
                raise ValueError(f"task.reach.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.target_fraction <= 1:
            raise ValueError(f"task.reach.target_fraction must be in (0, 1], "
                             f"got {self.target_fraction}")
        if self.action_cost < 0 or self.init_noise < 0:
            raise ValueError("task.reach.action_cost and task.reach.init_noise must be >= 0")



@dataclass
class TaskConfig:
    """Which task to run, and its settings."""

    id: str = "ArmReach-v0"  # gymnasium id; ArmReach-* runs on the configured backend
    max_episode_steps: int | None = 100  # time limit (reported as truncated); None: id's own
    reach: ReachConfig = field(default_factory=ReachConfig)  # used by ArmReach-* only
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra gymnasium.make arguments

    def __post_init__(self) -> None:
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"task.max_episode_steps must be >= 1, got {self.max_episode_steps}")

