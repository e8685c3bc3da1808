"""The robot interface every backend implements: the MuJoCo twin, serial servo buses, ROS 2.

The learning code never talks to a backend directly; the env does, through this small
interface (the shape of lerobot's `connect / get_observation / send_action`, where sending
returns what was actually sent).

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
class Robot(Protocol):
    """A joint-position-controlled arm.

    The control loop is: ``read_state`` -> decide -> ``send_command`` -> ``advance`` (wait for
    the next control tick). The twin integrates its physics substeps inside ``advance``; a
    hardware backend sleeps to the next period boundary there.
    """

    joint_names: tuple[str, ...]
    limits: JointLimits
    control_period: float

    def connect(self) -> None:
        """Open the connection (port, topics, model). Idempotent."""

    def disconnect(self) -> None:
        """Close the connection; hardware backends hold position or release torque first."""

    def read_state(self) -> RobotState:
        """Return the latest state."""

    def send_command(self, position: np.ndarray) -> np.ndarray:
        """Command ``[J]`` joint positions; return the ``[J]`` command actually sent."""

    def advance(self) -> None:
        """Block until the next control tick (the twin steps its physics here)."""

    def reset(self, position: np.ndarray, rng: np.random.Generator | None = None) -> RobotState:
        """Bring the arm to ``[J]`` ``position`` and return the state there.

        The twin places the arm there at once; hardware moves there slowly.
        """
