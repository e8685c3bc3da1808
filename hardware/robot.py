"""The interface every backend implements: the MuJoCo twin, serial servo buses, ROS 2.

A backend is passive (:class:`Backend`: ``connect``, ``read``, ``write`` returning what was
sent, ``close``); the one thread that calls it is the control loop's
(:class:`hardware.loop.ControlLoop`). Optional capabilities are typed protocols checked once
where the loop is built: :class:`Torque` (release and enable), :class:`Simulated` (the twin,
stepped on simulated time).

Units: radians, radians per second, seconds. Arrays are float64 with shape ``[J]`` for the
``J`` joints the backend drives, in the order of ``joint_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class RobotState:
    """One reading of the arm.

    Attributes:
        position: ``[J]`` joint positions (rad).
        velocity: ``[J]`` joint velocities (rad/s).
        stamp: time of the reading in seconds on the backend's clock (simulated time for the
            twin, ``time.monotonic()`` for hardware).
    """

    position: np.ndarray
    velocity: np.ndarray
    stamp: float


@dataclass(frozen=True)
class JointLimits:
    """Hardware limits per joint, each ``[J]``.

    Attributes:
        lower, upper: position range (rad).
        velocity: largest speed (rad/s).
        effort: largest torque (N m).
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.lower)
        for name in ("upper", "velocity", "effort"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"JointLimits.{name} has {len(getattr(self, name))} entries, "
                                 f"lower has {n}: give one value per joint")
        bad = np.flatnonzero(~(np.asarray(self.lower) < np.asarray(self.upper)))
        if bad.size:
            raise ValueError(f"JointLimits: lower >= upper for joint index {bad.tolist()}; "
                             "each joint needs lower < upper")

    def clip(self, position: np.ndarray) -> np.ndarray:
        """Clip ``[..., J]`` positions into ``[lower, upper]``."""
        return np.clip(position, self.lower, self.upper)


def check_command(position: np.ndarray, joint_names: tuple[str, ...]) -> np.ndarray:
    """``position`` as a float64 ``[J]`` command; ValueError on a wrong shape or a
    non-finite value (a backend must never guess what to send)."""
    command = np.asarray(position, dtype=np.float64)
    if command.shape != (len(joint_names),):
        raise ValueError(f"command has shape {command.shape}, expected "
                         f"({len(joint_names)},) for joints {list(joint_names)}")
    if not np.isfinite(command).all():
        raise ValueError(f"command has non-finite values {command.tolist()} for joints "
                         f"{list(joint_names)}")
    return command


@runtime_checkable
class Backend(Protocol):
    """A passive arm: reads and writes, never sleeps, paces, moves on its own or threads.

    ``joint_names`` ``[J]``; ``limits``: their :class:`JointLimits`; arrays float64 ``[J]``.
    """

    joint_names: tuple[str, ...]
    limits: JointLimits
    home_position: np.ndarray  # [J] the rest pose episodes start from

    def connect(self) -> None:
        """Open the port, the topics or the model; hold the present pose. Idempotent."""

    def read(self) -> RobotState:
        """The latest state."""

    def write(self, command: np.ndarray) -> np.ndarray:
        """Send ``[J]`` joint positions; return the ``[J]`` command actually sent."""

    def close(self) -> None:
        """Hold, release torque where the hardware has it, close. Idempotent."""


@runtime_checkable
class Torque(Protocol):
    """A backend that can release its servos' torque and enable it again."""

    def release_torque(self) -> None: ...

    def enable_torque(self) -> None: ...


@runtime_checkable
class Simulated(Protocol):
    """A simulated arm (the MuJoCo twin): the loop steps its physics on simulated time."""

    def step(self) -> None:
        """Integrate one control period."""

    def place(self, position: np.ndarray) -> RobotState:
        """Put the arm at ``[J]`` ``position`` at rest, at time 0."""

    def clock(self) -> float:
        """Now on the clock of the state stamps (simulated seconds)."""
