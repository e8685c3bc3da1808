"""Build an env from the config: the backend's robot, then the task over it.

Any gymnasium id works as a task (``Hopper-v5``, ``InvertedPendulum-v5``) so the agent can be
measured on the tasks the literature reports; ``ArmReach-*`` runs over the configured backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

import mbpo_arm.envs.reach  # noqa: F401  (registers ArmReach-v0)
from mbpo_arm.envs.config import TaskConfig
from mbpo_arm.envs.reach import ArmReachEnv
from mbpo_arm.envs.tasks import TaskFunctions, task_functions
from mbpo_arm.hardware.config import LIMITS_DIR, SerialConfig, ShieldSettings, limits_path
from mbpo_arm.hardware.estop import process_estop
from mbpo_arm.hardware.robot import Robot
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.node import Ros2Robot
from mbpo_arm.hardware.serial_robot import SerialRobot
from mbpo_arm.hardware.shield import Shield, ShieldedRobot
from mbpo_arm.hardware.shield_config import ShieldConfig
from mbpo_arm.sim.config import ASSET, TwinConfig
from mbpo_arm.sim.geometry import MujocoGeometry
from mbpo_arm.sim.kinematics import ArmKinematics
from mbpo_arm.sim.twin import TwinRobot


def check_task(task: TaskConfig) -> None:
    """``task.id`` names a registered gymnasium env, or a one-line ValueError with near ids."""
    if task.id not in gym.registry:
        near = [k for k in gym.registry if k.split("-")[0].lower() in task.id.lower()]
        raise ValueError(f"task.id={task.id!r} is not a registered gymnasium id"
                         + (f"; did you mean one of {near}?" if near else ""))


BACKENDS = {"mujoco": (TwinConfig, TwinRobot), "serial": (SerialConfig, SerialRobot),
            "ros2": (Ros2Config, Ros2Robot)}
# Every backend not named here drives hardware: it refuses to start without the shield and a
# limits file (check_shield_settings).
SIMULATED_BACKENDS = frozenset({"mujoco"})


def make_robot(backend: str, config: Any, shield: ShieldSettings | None = None) -> Robot:
    """The robot of backend ``backend`` (a key of ``BACKENDS``) built from its config, behind
    the safety shield (:class:`hardware.shield.ShieldedRobot`) unless ``shield.enabled`` is
    false (simulated backends only). ``shield``: the run's ``shield:`` section (defaults)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {sorted(BACKENDS)}")
    settings = shield if shield is not None else ShieldSettings()
    check_shield_settings(backend, settings)  # before a port opens
    robot = BACKENDS[backend][1](config)
    return shield_robot(robot, backend, settings) if settings.enabled else robot


def check_shield_settings(backend: str, settings: ShieldSettings) -> None:
    """A hardware backend (not in ``SIMULATED_BACKENDS``) needs the shield and a limits
    file; raise a one-line ValueError saying how to give them."""
    if backend in SIMULATED_BACKENDS:
        return
    if not settings.enabled:
        raise ValueError(f"shield.enabled=false is not allowed for backend={backend}: it drives "
                         "hardware; only simulated backends run without the shield")
    if settings.limits_file is None:
        shipped = ", ".join(sorted(p.stem for p in LIMITS_DIR.glob("*.yaml")))
        raise ValueError(f"backend={backend} drives hardware and needs a limits file: set "
                         "shield.limits_file=<name under configs/limits/ or a path> "
                         f"(shipped: {shipped})")


def shield_robot(robot: Robot, backend: str, settings: ShieldSettings) -> ShieldedRobot:
    """``robot`` behind a shield from ``settings``: its limits file (or, for a simulated
    backend without one, the backend's own limits and model), the geometry of rules 5-6,
    the process's e-stop. Inconsistent limits raise a one-line ValueError."""
    twin = getattr(robot, "config", None)
    if settings.limits_file is not None:
        config = ShieldConfig.load(limits_path(settings.limits_file))
    else:
        config = ShieldConfig.from_joint_limits(
            robot.joint_names, robot.limits, model=getattr(twin, "path", None),
            ee_site=getattr(twin, "ee_site", "ee_site"),
            home=getattr(robot, "home_position", None))
    config.check_robot(robot.joint_names, robot.limits)
    geometry = None
    if config.model is not None:
        geometry = MujocoGeometry.from_limits(config)
        if config.home is not None:
            config.check_home(geometry.ee_position(config.home),
                              settings.collision and geometry.collides(config.home))
    e = settings.estop
    shield = Shield(config, robot.control_period, geometry, settings.collision,
                    settings.watchdog, process_estop(e.key, e.signal, e.file))
    if hasattr(robot, "on_estop"):  # a backend with its own e-stop input (the ROS 2 topics)
        robot.on_estop = shield.estop.trigger
        robot.on_estop_reset = lambda source: shield.estop.reset()  # raises while a file holds
        robot.status_sources.append(shield.summary)
    hardware = backend not in SIMULATED_BACKENDS
    slow = settings.slow_reset if settings.slow_reset is not None else hardware
    thread = settings.watchdog.thread if settings.watchdog.thread is not None else hardware
    return ShieldedRobot(robot, shield, clock=getattr(robot, "clock", None), slow_reset=slow,
                         watchdog_thread=thread)


def make_env(task: TaskConfig, backend: str = "mujoco", backend_config: Any = None,
             render_mode: str | None = None, shield: ShieldSettings | None = None) -> gym.Env:
    """The task env; ``ArmReach-*`` runs on ``make_robot(backend, backend_config, shield)``."""
    kwargs = dict(task.kwargs)
    if task.max_episode_steps is not None:
        kwargs["max_episode_steps"] = task.max_episode_steps
    if task.id.startswith("ArmReach"):
        config = backend_config if backend_config is not None else BACKENDS[backend][0]()
        kwargs.update(robot=make_robot(backend, config, shield), config=task.reach)
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
