"""Build an env from the config: the backend, the control loop with the shield inside it,
then the task over the loop.

Any gymnasium id works as a task (``Hopper-v5``, ``InvertedPendulum-v5``) so the agent can be
measured on the tasks the literature reports; ``ArmReach-*`` runs over the configured backend.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym

import mbpo_arm.envs.reach  # noqa: F401  (registers ArmReach-v0)
from mbpo_arm.envs.config import TaskConfig
from mbpo_arm.envs.reach import ArmReachEnv
from mbpo_arm.envs.tasks import TaskFunctions, task_functions
from mbpo_arm.hardware.config import LIMITS_DIR, SerialConfig, ShieldSettings, limits_path
from mbpo_arm.hardware.estop import process_estop
from mbpo_arm.hardware.loop import ControlLoop, StallMonitor
from mbpo_arm.hardware.robot import Backend
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.node import Ros2Robot
from mbpo_arm.hardware.serial_robot import SerialRobot
from mbpo_arm.hardware.shield import Shield
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
# limits file, and its resets always move through the shield (check_shield_settings).
SIMULATED_BACKENDS = frozenset({"mujoco"})


def make_backend(backend: str, config: Any, control_hz: float) -> Backend:
    """The passive backend ``backend`` (a key of ``BACKENDS``) built from its config."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {sorted(BACKENDS)}")
    if backend == "serial":
        return SerialRobot(config)
    return BACKENDS[backend][1](config, control_hz=control_hz)


def make_loop(backend: str, config: Any, shield: ShieldSettings | None = None,
              control_hz: float = 20.0, realtime: bool = False) -> ControlLoop:
    """The control loop of backend ``backend`` at ``control_hz``, the safety shield inside it
    unless ``shield.enabled`` is false (simulated backends only). ``shield``: the run's
    ``shield:`` section (defaults); ``realtime``: pace the twin by the wall clock (hardware
    always is). Bad settings fail here, before a port opens."""
    settings = shield if shield is not None else ShieldSettings()
    check_shield_settings(backend, settings)
    robot = make_backend(backend, config, control_hz)
    guard = make_shield(robot, settings, 1.0 / control_hz) if settings.enabled else None
    hardware = backend not in SIMULATED_BACKENDS
    place = not (settings.slow_reset if settings.slow_reset is not None else hardware)
    loop = ControlLoop(robot, guard, control_hz, realtime=realtime or hardware,
                       place_resets=place)
    wd = settings.watchdog
    if guard is not None and (wd.stall_monitor if wd.stall_monitor is not None else hardware):
        loop.monitor = StallMonitor(loop, wd.command_timeout_periods / control_hz)
    if guard is not None and isinstance(robot, Ros2Robot):  # the ROS 2 topics' own e-stop
        robot.on_estop = guard.estop.trigger
        robot.on_estop_reset = lambda source: guard.estop.reset()  # raises while a file holds
        robot.status_sources += [guard.summary, loop.stats]
    return loop


def check_shield_settings(backend: str, settings: ShieldSettings) -> None:
    """A hardware backend (not in ``SIMULATED_BACKENDS``) needs the shield, a limits file
    and resets through the shield; raise a one-line ValueError saying how to give them."""
    if backend in SIMULATED_BACKENDS:
        return
    if not settings.enabled:
        raise ValueError(f"shield.enabled=false is not allowed for backend={backend}: it drives "
                         "hardware; only simulated backends run without the shield")
    if settings.slow_reset is False:
        raise ValueError(f"shield.slow_reset=false is not allowed for backend={backend}: a "
                         "hardware arm moves to its reset pose only through the shield")
    if settings.limits_file is None:
        shipped = ", ".join(sorted(p.stem for p in LIMITS_DIR.glob("*.yaml")))
        raise ValueError(f"backend={backend} drives hardware and needs a limits file: set "
                         "shield.limits_file=<name under configs/limits/ or a path> "
                         f"(shipped: {shipped})")


def make_shield(robot: Backend, settings: ShieldSettings, control_period: float) -> Shield:
    """A shield for ``robot`` from ``settings``: its limits file (or, for a simulated backend
    without one, the backend's own limits and model), the geometry of rules 5-6, the
    process's e-stop. Inconsistent limits raise a one-line ValueError."""
    twin = robot.config if isinstance(robot, TwinRobot) else None
    if settings.limits_file is not None:
        config = ShieldConfig.load(limits_path(settings.limits_file))
    else:
        config = ShieldConfig.from_joint_limits(
            robot.joint_names, robot.limits, model=twin.path if twin else None,
            ee_site=twin.ee_site if twin else "ee_site", home=robot.home_position)
    config.check_robot(robot.joint_names, robot.limits)
    geometry = None
    if config.model is not None:
        geometry = MujocoGeometry.from_limits(config)
        if config.home is not None:
            config.check_home(geometry.ee_position(config.home),
                              settings.collision and geometry.collides(config.home))
    e = settings.estop
    return Shield(config, control_period, geometry, settings.collision, settings.watchdog,
                  process_estop(e.key, e.signal, e.file))


def make_env(task: TaskConfig, backend: str = "mujoco", backend_config: Any = None,
             render_mode: str | None = None, shield: ShieldSettings | None = None,
             control_hz: float = 20.0, realtime: bool = False) -> gym.Env:
    """The task env. ``ArmReach-*`` is built directly over
    ``make_loop(backend, backend_config, shield, control_hz, realtime)`` (a live arm is never
    handed through ``gym.make``, which deep-copies its arguments), with gymnasium's
    ``TimeLimit`` and order checks; any other id is ``gym.make(task.id)``."""
    kwargs = dict(task.kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if not task.id.startswith("ArmReach"):
        if task.max_episode_steps is not None:
            kwargs["max_episode_steps"] = task.max_episode_steps
        return gym.make(task.id, **kwargs)
    spec = gym.spec(task.id)
    config = backend_config if backend_config is not None else BACKENDS[backend][0]()
    loop = make_loop(backend, config, shield, control_hz, realtime)
    kinematics = None if isinstance(config, TwinConfig) else arm_kinematics(config)
    env: gym.Env = ArmReachEnv(loop, kinematics, task.reach, **kwargs)
    steps = task.max_episode_steps or spec.max_episode_steps
    env.unwrapped.spec = dataclasses.replace(spec, max_episode_steps=steps,
                                             kwargs={**spec.kwargs, **kwargs})
    env = gym.wrappers.OrderEnforcing(gym.wrappers.TimeLimit(env, steps))
    return env


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
