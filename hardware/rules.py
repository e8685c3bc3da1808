"""The shield's joint rules (2-4) as pure functions, and the geometry protocol of rules 5-6.

Each joint rule is an interval per joint for the next command ``c`` (rad), ``[J]`` each:

- ``position``: ``[lower + margin, upper - margin]``;
- ``step``: ``[q - max_step, q + max_step]`` around the measured position ``q``;
- ``velocity``: the command may move by at most ``velocity * dt`` from the last command; with
  an acceleration limit the speed towards a position limit is also capped so that the command
  can still brake before it (``v dt + v^2 / 2a <= distance``);
- ``acceleration``: the command's speed changes by at most ``acceleration * dt`` per period;
- ``jerk``: its acceleration changes by at most ``jerk * dt`` per period.

:func:`intersect` intersects them in that (priority) order. When a rule's interval misses
what the rules before it allow (the arm lags its command by more than ``max_step`` plus one
period's motion, or a stop left the command stream at a speed it cannot brake from), that rule
*yields*: the command goes to the nearest point the earlier rules allow, and the rule's name is
reported as yielded. Everything else is always satisfied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from mbpo_arm.hardware.shield_config import ShieldConfig

JOINT_RULES = ("position", "step", "velocity", "acceleration", "jerk")


@runtime_checkable
class ArmGeometry(Protocol):
    """Forward kinematics and a collision test of the arm, evaluated without moving it
    (implemented in ``sim.geometry`` from the arm's MJCF; ``hardware`` never imports ``sim``)."""

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        """``[3]`` world position of the end effector (m) at joint positions ``q`` ``[J]``."""

    def collides(self, q: np.ndarray) -> bool:
        """Whether the arm at ``q`` ``[J]`` touches the table or itself (within clearance)."""

    def penetration(self, q: np.ndarray) -> float:
        """How deep (m) the arm at ``q`` ``[J]`` is inside the clearance; 0 when it does not
        collide."""

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The ``P`` pairs of parts (names) that :meth:`pair_depths` reports, in its order."""

    def pair_depths(self, q: np.ndarray) -> np.ndarray:
        """``[P]`` how deep (m) each pair of :attr:`pairs` is inside the clearance at ``q``
        ``[J]``; 0 for a pair not in contact (the maximum is :meth:`penetration`). An array
        over a fixed pair list, so that comparing two configurations is one vector op."""


@dataclass
class CommandHistory:
    """The command stream so far: the last sent command ``[J]`` (rad), its speed ``[J]``
    (rad/s) and acceleration ``[J]`` (rad/s^2), as finite differences over control periods."""

    command: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray

    @classmethod
    def at_rest(cls, command: np.ndarray) -> CommandHistory:
        zero = np.zeros_like(command)
        return cls(command.copy(), zero, zero.copy())

    def advanced(self, command: np.ndarray, dt: float) -> CommandHistory:
        """The history after sending ``command`` one period ``dt`` after the last one."""
        velocity = (command - self.command) / dt
        return CommandHistory(command.copy(), velocity, (velocity - self.velocity) / dt)


def braking_speed(distance: np.ndarray, acceleration: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed ``v`` (rad/s) from which one period at ``v`` and then braking at
    ``acceleration`` stay within ``distance`` (rad): the root of ``v dt + v^2 / 2a = d``.
    This bound is invariant: obeying it now leaves a speed that obeys it next period."""
    a, d = acceleration, np.maximum(distance, 0.0)
    return -a * dt + np.sqrt((a * dt) ** 2 + 2.0 * a * d)


def joint_intervals(cfg: ShieldConfig, q: np.ndarray, history: CommandHistory,
                    dt: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(rule, lower [J], upper [J])`` for each configured joint rule, in priority order."""
    lo_p, hi_p = cfg.lower + cfg.margin, cfg.upper - cfg.margin
    c, v = history.command, history.velocity
    out = [("position", lo_p, hi_p), ("step", q - cfg.max_step, q + cfg.max_step)]
    up = down = cfg.velocity
    a = cfg.acceleration
    if a is not None:
        up = np.minimum(up, braking_speed(hi_p - c, a, dt))
        down = np.minimum(down, braking_speed(c - lo_p, a, dt))
    out.append(("velocity", c - down * dt, c + up * dt))
    if a is not None:
        out.append(("acceleration", c + (v - a * dt) * dt, c + (v + a * dt) * dt))
    if cfg.jerk is not None:
        acc, jdt = history.acceleration, cfg.jerk * dt
        out.append(("jerk", c + (v + (acc - jdt) * dt) * dt, c + (v + (acc + jdt) * dt) * dt))
    return out


def intersect(intervals: list[tuple[str, np.ndarray, np.ndarray]]
              ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Nested intervals: the ``k``-th is the intersection of the first ``k + 1``; where a
    rule's interval misses, it collapses to the point nearest to it (the rule yields).

    Returns:
        ``(rule, lower [J], upper [J])`` cumulative, and the names of the rules that yielded.
    """
    name, lo, hi = intervals[0]
    out = [(name, lo, hi)]
    yielded = []
    for name, a, b in intervals[1:]:
        new_lo, new_hi = np.maximum(lo, a), np.minimum(hi, b)
        empty = new_lo > new_hi
        if empty.any():
            yielded.append(name)
            nearest = np.where(b < lo, lo, hi)
            new_lo = np.where(empty, nearest, new_lo)
            new_hi = np.where(empty, nearest, new_hi)
        lo, hi = new_lo, new_hi
        out.append((name, lo, hi))
    return out, tuple(yielded)
