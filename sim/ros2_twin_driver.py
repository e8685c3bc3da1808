"""The MuJoCo twin behind ROS 2 topics, as a ros2_control arm presents itself.

Publishes ``sensor_msgs/JointState`` on ``state_topic`` at the control rate (what
``joint_state_broadcaster`` does) and follows ``std_msgs/Float64MultiArray`` on
``command_topic`` (a ``forward_position_controller``) and ``trajectory_msgs/JointTrajectory``
on ``trajectory_topic`` (the last point of a ``joint_trajectory_controller`` goal), paced at
wall-clock time. With it, ``backend=ros2`` runs end to end with no arm::

    python -m mbpo_arm.sim.ros2_twin_driver [--seconds S] [--stats PATH] [key=value ...]

The ``key=value`` overrides are those of the ros2 backend's settings
(:class:`mbpo_arm.hardware.ros2.config.Ros2Config`: the training run's ``backend.*`` keys, with
or without the ``backend.`` prefix), so both sides agree on the topics, joint names, domain
and rate. SIGINT or SIGTERM stops it; ``--stats`` then holds a JSON object of its counts
(states published, commands received and rejected).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from mbpo_arm.hardware.loop import Pace
from mbpo_arm.hardware.ros2 import messages as msg
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.transport import COMMANDS, SENSOR_DATA, Transport, make_transport
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import TwinRobot


class TwinDriver:
    """The twin as a ros2_control arm on ``transport`` (see the module docstring).

    Args:
        config: the topics and joint names (``joint_names`` in the twin, ``ros_joint_names``
            on the wire) of the ros2 backend.
        transport: where to publish and subscribe.
        control_hz: the driver's own rate (a ros2_control arm's controller manager has its
            own, independent of the learner's control loop).
        twin: the twin to drive; None builds the shipped arm (or ``config.model_path``).
    """

    def __init__(self, config: Ros2Config, transport: Transport, control_hz: float = 20.0,
                 twin: TwinRobot | None = None) -> None:
        self.config, self.control_hz = config, float(control_hz)
        self.twin = twin if twin is not None else TwinRobot(TwinConfig(
            model_path=config.model_path, joint_names=config.joint_names,
            actuator_names=tuple(f"{j}_act" for j in config.joint_names),
            ee_site=config.ee_site), control_hz=self.control_hz)
        self.pace = Pace(self.twin.control_period)  # the driver paces itself: it is the arm
        self.transport = transport
        self.counts = {"ticks": 0, "states_published": 0, "commands_received": 0,
                       "commands_rejected": 0}
        self.last_rejection = ""
        self._target: np.ndarray | None = None
        self._wire = list(config.ros_joint_names)
        transport.subscribe(config.command_topic, msg.Float64MultiArray, COMMANDS,
                            self._on_command)
        transport.subscribe(config.trajectory_topic, msg.JointTrajectory, COMMANDS,
                            self._on_trajectory)
        self._publish = transport.publisher(config.state_topic, msg.JointState, SENSOR_DATA)

    def tick(self) -> None:
        """Take the commands, integrate one control period (waiting for the wall clock),
        publish the joint state."""
        self.transport.poll()
        if self._target is not None:
            self.twin.write(self._target)
            self._target = None
        self.twin.step()
        self.pace.wait()
        state = self.twin.read()
        self._publish(msg.JointState(
            header=msg.Header(stamp=msg.Time.from_seconds(time.time())), name=self._wire,
            position=state.position.tolist(), velocity=state.velocity.tolist()))
        self.counts["ticks"] += 1
        self.counts["states_published"] += 1

    def stats(self) -> dict[str, Any]:
        """The counts, the last rejection and the rate."""
        return {**self.counts, "last_rejection": self.last_rejection,
                "control_hz": self.control_hz}

    def _reject(self, reason: str) -> None:
        self.counts["commands_rejected"] += 1
        self.last_rejection = reason

    def _accept(self, target: np.ndarray) -> None:
        if not np.isfinite(target).all():
            return self._reject("non-finite command")
        self.counts["commands_received"] += 1
        self._target = target

    def _on_command(self, command: Any) -> None:
        data = np.asarray(command.data, dtype=np.float64)
        if data.shape != (len(self._wire),):
            return self._reject(f"{data.size} values for {len(self._wire)} joints {self._wire}")
        self._accept(data)

    def _on_trajectory(self, trajectory: Any) -> None:
        names = list(trajectory.joint_names)
        if not trajectory.points or sorted(names) != sorted(self._wire):
            return self._reject(f"trajectory for joints {names} with "
                                f"{len(trajectory.points)} points; expected joints {self._wire}")
        positions = np.asarray(trajectory.points[-1].positions, dtype=np.float64)
        if positions.shape != (len(names),):
            return self._reject(f"{positions.size} positions for {len(names)} joint names")
        self._accept(positions[[names.index(n) for n in self._wire]])


def load_config(overrides: list[str]) -> Ros2Config:
    """The ros2 backend's defaults with ``key=value`` (or ``backend.key=value``) overrides.

    Raises:
        ValueError: a bad key or value (one line).
    """
    dots = [o.removeprefix("backend.") for o in overrides]
    bad = [o for o in dots if "=" not in o]
    if bad:
        raise ValueError(f"{bad[0]!r} is not an override; write key=value")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Ros2Config), OmegaConf.from_dotlist(dots))
        return OmegaConf.to_object(merged)
    except Exception as err:  # OmegaConf's and __post_init__'s errors, as one line
        first = str(err).splitlines()[0]
        if first.startswith("Key '") and "not in" in first:
            keys = ", ".join(f.name for f in fields(Ros2Config))
            first = f"{first}; keys of the ros2 backend: {keys}"
        raise ValueError(first) from None


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    """Write ``stats`` as JSON crash-safe (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mbpo_arm.sim.ros2_twin_driver",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--stats", type=Path, help="write the counts here as JSON on exit")
    parser.add_argument("--hz", type=float, default=None,
                        help="the driver's rate (default: runtime.control_hz= if given, else 20)")
    args, rest = parser.parse_known_args(argv)
    rate = [o for o in rest if o.startswith("runtime.control_hz=")]
    rest = [o for o in rest if o not in rate]
    try:
        hz = args.hz or (float(rate[-1].split("=", 1)[1]) if rate else 20.0)
        config = load_config(rest)
        driver = TwinDriver(config, make_transport(config.transport, config.domain_id,
                                                   "mbpo_arm_twin"), hz)
    except (ValueError, FileNotFoundError) as err:
        print(f"ros2_twin_driver: error: {err}", file=sys.stderr)
        return 2
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    print(f"ros2_twin_driver: {config.state_topic} at {hz:g} Hz, following "
          f"{config.command_topic} and {config.trajectory_topic} (domain {config.domain_id}, "
          f"{driver.transport.name})", flush=True)
    end = time.monotonic() + args.seconds if args.seconds else float("inf")
    try:
        while not stop and time.monotonic() < end:
            driver.tick()
    finally:
        driver.transport.close()
        if args.stats:
            write_stats(args.stats, driver.stats())
    print(json.dumps(driver.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
