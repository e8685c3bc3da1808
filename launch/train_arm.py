"""Train on an arm from ROS 2: ``ros2 launch launch/train_arm.py backend:=ros2|mujoco|serial``.

- ``backend:=ros2``: the actor joins the ROS 2 graph as the node ``mbpo_arm`` (rclpy where
  ROS 2 is sourced, else plain DDS) and drives the arm's ros2_control controllers.
- ``backend:=mujoco``: the same, against the MuJoCo twin behind the same topics
  (``python -m mbpo_arm.sim.ros2_twin_driver`` is started too), to rehearse the ROS 2 path
  with no arm.
- ``backend:=serial``: servos on a serial bus (``robot:=``, ``port:=``); no ROS topics.

The launch file stops everything when training ends. It also runs without ROS, starting the
same processes: ``python launch/train_arm.py backend:=mujoco overrides:="seed=1"``.
ROS's ``launch`` packages are imported only inside :func:`generate_launch_description`.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# name, default, description: every argument this launch file declares (the docs' ROS 2
# guide renders this table).
ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("backend", "ros2", "ros2: a ros2_control arm; mujoco: the twin behind the same ROS 2 "
                        "topics (starts its driver); serial: servos on a serial bus"),
    ("robot", "so101", "arm preset of the serial backend (configs/robot/)"),
    ("port", "/dev/ttyACM0", "serial port of the servo bus (backend:=serial)"),
    ("domain_id", "", "ROS_DOMAIN_ID of the arm's topics; empty: the environment's, else 0"),
    ("state_topic", "/joint_states", "sensor_msgs/JointState of the arm"),
    ("command_type", "position", "position: std_msgs/Float64MultiArray to command_topic; "
                                 "trajectory: trajectory_msgs/JointTrajectory to "
                                 "trajectory_topic"),
    ("command_topic", "/forward_position_controller/commands",
     "position commands (forward_position_controller)"),
    ("trajectory_topic", "/joint_trajectory_controller/joint_trajectory",
     "one-point trajectories (joint_trajectory_controller)"),
    ("estop_topic", "/mbpo_arm/estop", "std_msgs/Bool; true latches the e-stop"),
    ("reset_topic", "/mbpo_arm/estop_reset", "std_msgs/Bool; true releases the e-stop"),
    ("status_topic", "/mbpo_arm/status", "std_msgs/String, JSON status once a second"),
    ("control_hz", "20.0", "control rate (Hz) of every backend: runtime.control_hz"),
    ("limits_file", "", "the safety shield's limits file (a name under configs/limits/ or a "
                        "path); empty: so101 for backend:=mujoco, the robot preset's for "
                        "serial; a ros2 arm needs its own"),
    ("overrides", "", "more mbpo-arm overrides (Hydra key=value, space-separated), e.g. "
                      "'agent=mbpo_reach trainer.total_steps=5000 runtime=async'"),
)
# Launch arguments that set a key of the ros2 backend's config of the same name.
BACKEND_KEYS = ("domain_id", "state_topic", "command_type", "command_topic", "trajectory_topic",
                "estop_topic", "reset_topic", "status_topic")
BACKENDS = ("ros2", "mujoco", "serial")


@dataclass(frozen=True)
class Process:
    """One process to start: a name and its command line."""

    name: str
    cmd: list[str]


def parse(argv: list[str]) -> dict[str, str]:
    """``name:=value`` arguments over the declared defaults.

    Raises:
        ValueError: an argument not written ``name:=value``, or not declared (the message
            lists the declared ones).
    """
    values = {name: default for name, default, _ in ARGUMENTS}
    for arg in argv:
        name, sep, value = arg.partition(":=")
        if not sep or name not in values:
            raise ValueError(f"{arg!r} is not an argument of train_arm.py; write name:=value "
                             f"with name one of {', '.join(values)}")
        values[name] = value
    return values


def plan(values: dict[str, str]) -> list[Process]:
    """The processes for the argument ``values``: the twin driver (``backend:=mujoco``), then
    the training run (last; when it ends, the launch ends)."""
    backend = values["backend"]
    if backend not in BACKENDS:
        raise ValueError(f"backend:={backend} is unknown; choose one of {', '.join(BACKENDS)}")
    user = shlex.split(values["overrides"])
    user_keys = {o.partition("=")[0].lstrip("+~") for o in user}
    if backend == "serial":
        ours = [f"robot={values['robot']}", f"backend.port={values['port']}"]
    else:
        ours = [f"backend.{k}={values[k]}" for k in BACKEND_KEYS if values[k] != ""]
    ours.append(f"runtime.control_hz={values['control_hz']}")  # one rate, every backend
    limits = values["limits_file"] or ("so101" if backend == "mujoco" else "")
    if limits:  # the twin driver is the shipped arm: its limits by default
        ours.append(f"shield.limits_file={limits}")
    overrides = [o for o in ours if o.partition("=")[0] not in user_keys] + user
    processes = []
    if backend == "mujoco":
        driver_args = [o for o in overrides
                       if o.startswith(("backend.", "runtime.control_hz="))]
        processes.append(Process("twin_driver",
                                 [python(), "-m", "mbpo_arm.sim.ros2_twin_driver", *driver_args]))
    train_backend = "serial" if backend == "serial" else "ros2"
    processes.append(Process("mbpo_arm", [python(), "-m", "mbpo_arm.launch.cli", "train",
                                          "--backend", train_backend, *overrides]))
    return processes


def python() -> str:
    """The Python of the environment that has mbpo-arm (``ros2 launch`` itself may run on the
    system Python while mbpo-arm lives in a venv on PATH)."""
    exe = shutil.which("mbpo-arm")
    beside = Path(exe).parent / "python" if exe else None
    return str(beside) if beside is not None and beside.exists() else sys.executable


def generate_launch_description() -> Any:
    """The ROS 2 launch description: declared arguments, then the processes of :func:`plan`;
    the launch shuts down when training exits."""
    from launch import LaunchDescription
    from launch.actions import (
        DeclareLaunchArgument,
        EmitEvent,
        ExecuteProcess,
        OpaqueFunction,
        RegisterEventHandler,
    )
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration

    def processes(context: Any) -> list[Any]:
        values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
        actions: list[Any] = [ExecuteProcess(cmd=p.cmd, name=p.name, output="screen")
                              for p in plan(values)]
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=actions[-1], on_exit=[EmitEvent(event=Shutdown(reason="trained"))])))
        return actions

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=processes)])


def main(argv: list[str] | None = None) -> int:
    """Without ROS: start the :func:`plan` processes, wait for training, stop the rest."""
    try:
        processes = plan(parse(sys.argv[1:] if argv is None else argv))
    except ValueError as err:
        print(f"train_arm.py: error: {err}", file=sys.stderr)
        return 2
    helpers = [subprocess.Popen(p.cmd) for p in processes[:-1]]
    try:
        return subprocess.call(processes[-1].cmd)
    finally:
        for helper in helpers:
            helper.send_signal(signal.SIGINT)
        for helper in helpers:
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()


if __name__ == "__main__":
    sys.exit(main())
