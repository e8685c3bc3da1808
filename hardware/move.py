"""Slow moves through the shield: :func:`move_to` steps the command stream towards a pose at
a safe speed (the reset to home of :class:`hardware.shield.ShieldedRobot`), bounded in ticks
and in wall-clock time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mbpo_arm.hardware.robot import RobotState

if TYPE_CHECKING:
    from mbpo_arm.hardware.shield import ShieldedRobot


@dataclass(frozen=True)
class MoveResult:
    """How a :func:`move_to` ended: the last ``state``, the ``ticks`` it took, and whether it
    stopped at its wall-clock bound (``timed_out``) rather than arriving or using up its
    ticks."""

    state: RobotState
    ticks: int
    timed_out: bool = False


def move_to(robot: ShieldedRobot, target: np.ndarray, speed: float | None = None,
            settle_s: float = 1.0, settle_speed: float = 0.05,
            between: Callable[[], None] | None = None,
            timeout_s: float | None = None) -> MoveResult:
    """Step commands from the last one towards ``[J]`` ``target`` at ``speed`` rad/s (the
    limits file's ``home_speed`` by default; all joints arrive together), through the shield,
    then wait up to ``settle_s`` for joint speeds below ``settle_speed``. Stops early, where
    it is, when the e-stop latches.

    Bounded twice: in ticks (twice those the distance needs at ``speed``, plus the settling
    time and 10) and in wall-clock seconds, ``timeout_s`` (default: 1.5 times those ticks'
    duration plus 1 s), checked after every tick so that a backend whose ticks stall cannot
    hold the caller for longer. ``between()`` runs after every tick (the actor polls new
    policy weights and watches its learner there, as between its own ticks)."""
    shield = robot.shield
    speed = float(speed if speed is not None else shield.config.home_speed)
    dt = robot.control_period
    target = np.clip(np.asarray(target, dtype=np.float64), shield.lower, shield.upper)
    command = shield.history.command.copy()
    distance = float(np.max(np.abs(target - command)))
    ticks = 2 * math.ceil(distance / (speed * dt)) + math.ceil(settle_s / dt) + 10
    limit = timeout_s if timeout_s is not None else 1.5 * ticks * dt + 1.0
    deadline = time.monotonic() + limit
    state = robot.read_state()
    for tick in range(1, ticks + 1):
        delta = target - command
        biggest = float(np.max(np.abs(delta)))
        proposal = target if biggest <= speed * dt else command + delta * (speed * dt / biggest)
        command = robot.send_command(proposal)
        robot.advance()
        state = robot.read_state()
        if between is not None:
            between()
        if shield.estop.latched:
            break
        if np.array_equal(command, target) and np.max(np.abs(state.velocity)) < settle_speed:
            break
        if time.monotonic() > deadline:
            return MoveResult(state, tick, timed_out=True)
    return MoveResult(state, tick)
