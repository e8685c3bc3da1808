"""Build an env from the config: the backend's robot, then the task over it.

Any gymnasium id works as a task (``Hopper-v5``, ``InvertedPendulum-v5``) so the agent can be
measured on the tasks the literature reports; ``ArmReach-*`` runs over the configured backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import envs  # noqa: F401  (registers ArmReach-v0)
from envs.reach import ArmReachEnv, ReachConfig
from envs.tasks import TaskFunctions, task_functions
from hardware.robot import Robot
from hardware.ros2 import Ros2Config, Ros2Robot
from hardware.serial_robot import SerialConfig, SerialRobot
from sim.kinematics import ArmKinematics
from sim.twin import ASSET, TwinConfig, TwinRobot


@dataclass
class TaskConfig:
    """Which task to run, and its settings."""

    id: str = "ArmReach-v0"  # gymnasium id; ArmReach-* runs on the configured backend
    max_episode_steps: int | None = 100  # time limit (reported as truncated); None: id's own
    reach: ReachConfig = field(default_factory=ReachConfig)  # used by ArmReach-* only
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra gymnasium.make arguments

    def __post_init__(self) -> None:
        if self.id not in gym.registry:
            near = [k for k in gym.registry if k.split("-")[0].lower() in self.id.lower()]
            raise ValueError(f"task.id={self.id!r} is not a registered gymnasium id"
                             + (f"; did you mean one of {near}?" if near else ""))
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"task.max_episode_steps must be >= 1, got {self.max_episode_steps}")


BACKENDS = {"mujoco": (TwinConfig, TwinRobot), "serial": (SerialConfig, SerialRobot),
            "ros2": (Ros2Config, Ros2Robot)}


def make_robot(backend: str, config: Any) -> Robot:
    """The robot of backend ``backend`` (a key of ``BACKENDS``) built from its config."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {sorted(BACKENDS)}")
    return BACKENDS[backend][1](config)


def make_env(task: TaskConfig, backend: str = "mujoco", backend_config: Any = None,
             render_mode: str | None = None) -> gym.Env:
    """The task env; ``ArmReach-*`` runs on ``make_robot(backend, backend_config)``."""
    kwargs = dict(task.kwargs)
    if task.max_episode_steps is not None:
        kwargs["max_episode_steps"] = task.max_episode_steps
    if task.id.startswith("ArmReach"):
        config = backend_config if backend_config is not None else BACKENDS[backend][0]()
        kwargs.update(robot=make_robot(backend, config), config=task.reach)
        if not isinstance(config, TwinConfig):  # a real arm: kinematics from its own MJCF
            kwargs["kinematics"] = arm_kinematics(config)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(task.id, **kwargs)


def arm_kinematics(config: SerialConfig | Ros2Config) -> ArmKinematics:
    """Forward kinematics of a hardware arm from its MJCF (``backend.model_path``, the shipped
    arm by default): the configured joints and end-effector site."""
    path = Path(config.model_path).expanduser() if config.model_path else ASSET
    if not path.is_file():
        raise FileNotFoundError(f"backend.model_path={config.model_path!r} not found; give the "
                                "arm's MJCF (for forward kinematics) or null for the shipped arm")
    import mujoco

    try:
        model = mujoco.MjModel.from_xml_path(str(path))
    except ValueError as err:
        raise ValueError(f"MuJoCo cannot load {str(path)!r}: {' '.join(str(err).split())}") \
            from err
    return ArmKinematics(model, config.joint_names, config.ee_site)


def env_task_functions(env: gym.Env) -> TaskFunctions:
    """The pure reward and termination for ``env``'s task (see :mod:`envs.tasks`)."""
    inner = env.unwrapped
    if isinstance(inner, ArmReachEnv):
        return inner.task_functions()
    return task_functions(env.spec.id if env.spec else type(inner).__name__)
