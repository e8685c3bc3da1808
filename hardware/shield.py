"""The safety shield: nothing the learning code proposes reaches a motor unless it is safe.

:class:`Shield` turns a proposed joint-position command into the command actually sent, by
rules applied in this fixed order (each counted in :attr:`Shield.counts` when it intervenes):

1. ``nonfinite``: a command with NaN or inf is replaced by the last safe command (held),
   which then passes the rules below like any other proposal.
2. ``position``: joint limits, ``margin`` inside the hardware limits.
3. ``step`` (largest jump from the measured position) and ``velocity`` (largest command
   speed, and a speed from which the command can still brake before a position limit).
4. ``acceleration`` and, optionally, ``jerk`` of the command stream.
5. ``workspace``: the end effector stays in a box, ``min_height`` above the table.
6. ``collision``: the commanded configuration keeps ``clearance`` from the table and the arm.
   An unsafe command is replaced by the farthest safe one on the way from the last command
   (bisection), or the last command is held. Where the last command is unsafe itself (the
   stream restarted at a measured position inside the clearance), a command that goes no
   deeper in (and no farther outside the workspace) passes: the way out.
7. ``watchdog``: state older than ``state_timeout_periods`` (or not finite): hold position,
   then (``on_timeout: release``) the control loop releases torque. A loop that stalls
   entirely is reported by its stall monitor (:class:`hardware.loop.StallMonitor`).
8. ``estop``: a latched emergency stop (:mod:`hardware.estop`) holds position until reset.

Rules 7 and 8 are checked first: when either applies the command is the *hold* (the measured
position when the stop began, within the position limits) and rules 1-6 do not run. Rules 2-4
are intervals per joint (:mod:`hardware.rules`); a rule lower in the order yields only where
it cannot hold together with the ones above it, and :attr:`ShieldResult.yielded` names it.

:class:`Shield` is a pure filter over (state, proposal) -> command; the control loop
(:class:`hardware.loop.ControlLoop`) runs it on its one thread before every write, so the env
stores the executed action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mbpo_arm.hardware.config import ShieldSettings, WatchdogSettings
from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.robot import RobotState
from mbpo_arm.hardware.rules import ArmGeometry, CommandHistory, intersect, joint_intervals
from mbpo_arm.hardware.shield_config import ShieldConfig

__all__ = ["RULES", "ArmGeometry", "EStop", "Shield", "ShieldConfig", "ShieldResult",
           "ShieldSettings"]

RULES = ("nonfinite", "position", "step", "velocity", "acceleration", "jerk", "workspace",
         "collision", "watchdog", "estop")
BISECTIONS = 8  # rules 5-6: the safe fraction of a step is found to 1/256
DEPTH_TOL = 1e-9  # m: "no deeper" for an arm already inside the clearance (rules 5-6)


@dataclass(frozen=True)
class ShieldResult:
    """What the shield let through.

    Attributes:
        command: ``[J]`` the joint positions to send (rad).
        reasons: names of the rules that changed the proposal, in rule order (see ``RULES``).
        stopped: the command is a hold of rule 7 or 8 (rules 1-6 did not run).
        yielded: joint rules that could not hold together with those above them.
    """

    command: np.ndarray
    reasons: tuple[str, ...]
    stopped: bool = False
    yielded: tuple[str, ...] = ()


class Shield:
    """The rules of the module docstring for one robot.

    Args:
        config: the robot's limits (:class:`~hardware.shield_config.ShieldConfig`).
        control_period: seconds between commands (``dt`` of the rate rules).
        geometry: kinematics and collisions for rules 5-6; ``None`` switches them off.
        collision: run rule 6 (needs ``geometry``).
        watchdog: rule 7's settings; ``estop``: rule 8's stop (a fresh one by default).
    """

    def __init__(self, config: ShieldConfig, control_period: float,
                 geometry: ArmGeometry | None = None, collision: bool = True,
                 watchdog: WatchdogSettings | None = None, estop: EStop | None = None) -> None:
        self.config, self.dt, self.geometry = config, float(control_period), geometry
        self.collision = collision and geometry is not None
        self.workspace = config.workspace if geometry is not None else None
        self.watchdog = watchdog if watchdog is not None else WatchdogSettings()
        self.estop = estop if estop is not None else EStop()
        self.counts = dict.fromkeys(RULES, 0)
        self.ticks = 0
        self.history: CommandHistory | None = None
        self.last_command_time: float | None = None
        self.holding: str | None = None  # the rule holding position, if any
        self.hold_since: float | None = None
        self.released = False  # torque released by the watchdog; cleared by restart()
        self.lower = config.lower + config.margin  # [J] the commands' position range (rad)
        self.upper = config.upper - config.margin

    # ------------------------------------------------------------------------ the filter
    def filter(self, proposed: np.ndarray, state: RobotState, now: float) -> ShieldResult:
        """The command to send for ``proposed`` ``[J]`` (rad) given the latest ``state`` and
        ``now`` on the clock of ``state.stamp`` (s)."""
        if self.history is None:
            self.restart(state, now)
        self.ticks += 1
        self.last_command_time = now  # the command stream is alive (rule 7)
        stop = self.stop_reason(state, now)
        if stop is not None:
            return self.hold(stop, state, now)
        if self.holding is not None:  # the stop is over: start again from the hold, at rest
            self.holding = self.hold_since = None
        p = np.asarray(proposed, dtype=np.float64)
        if p.shape != self.history.command.shape:
            raise ValueError(f"proposed command has shape {p.shape}, expected "
                             f"{self.history.command.shape} for joints "
                             f"{list(self.config.joint_names)}")
        reasons = []
        if not np.isfinite(p).all():
            p, reasons = self.history.command.copy(), ["nonfinite"]
        q = np.asarray(state.position, dtype=np.float64)
        intervals = joint_intervals(self.config, q, self.history, self.dt)
        cumulative, yielded = intersect(intervals)
        c = p
        for name, lo, hi in cumulative:
            clipped = np.clip(c, lo, hi)
            if np.any(clipped != c):
                reasons.append(name)
            c = clipped
        if self.geometry is not None and (self.collision or self.workspace is not None):
            c, unsafe, held = self._geometry(c, intervals, cumulative[-1][1:])
            if unsafe is not None:
                reasons.append(unsafe)
                yielded = yielded + held
        for name in reasons:
            self.counts[name] += 1
        self.history = self.history.advanced(c, self.dt)
        return ShieldResult(c.copy(), tuple(reasons), False, yielded)

    def stop_reason(self, state: RobotState, now: float) -> str | None:
        """``"estop"``, ``"watchdog"`` (released torque, state stale or not finite), or None."""
        if self.estop.poll():
            return "estop"
        if self.released:
            return "watchdog"
        q = np.asarray(state.position)
        if not np.isfinite(q).all() or not math.isfinite(state.stamp):
            return "watchdog"
        if now - state.stamp > self.watchdog.state_timeout_periods * self.dt:
            return "watchdog"
        return None

    def hold(self, reason: str, state: RobotState, now: float) -> ShieldResult:
        """Hold position for rule ``reason``: the measured position at the start of the stop
        (within the position limits), sent every tick until the stop ends."""
        if self.holding is None:
            q = np.asarray(state.position, dtype=np.float64)
            at = np.clip(q, self.lower, self.upper) if np.isfinite(q).all() \
                else self.history.command
            self.history = CommandHistory.at_rest(at)
            self.hold_since = now
        self.holding = reason
        self.counts[reason] += 1
        return ShieldResult(self.history.command.copy(), (reason,), True)

    def restart(self, state: RobotState, now: float) -> None:
        """Start a new command stream at the measured position (after a reset); a latched
        e-stop stays latched, a torque release is cleared."""
        q = np.asarray(state.position, dtype=np.float64)
        start = np.clip(q, self.lower, self.upper) if np.isfinite(q).all() \
            else (self.lower + self.upper) / 2
        self.history = CommandHistory.at_rest(start)
        self.last_command_time = now
        self.holding = self.hold_since = None
        self.released = False

    # ------------------------------------------------------------------- rules 5 and 6
    def unsafe(self, start: np.ndarray, end: np.ndarray) -> str | None:
        """``"workspace"`` or ``"collision"`` if a configuration on the way from ``start`` to
        ``end`` (``collision_points`` of them, ``end`` included) breaks rule 5 or 6."""
        n, geometry, ws = self.config.collision_points, self.geometry, self.workspace
        for k in range(1, n + 1):
            x = end if k == n else start + (k / n) * (end - start)
            if ws is not None and not ws.contains(geometry.ee_position(x)):
                return "workspace"
            if self.collision and geometry.collides(x):
                return "collision"
        return None

    def _no_deeper(self, start: np.ndarray, end: np.ndarray) -> bool:
        """Whether no configuration on the way from ``start`` to ``end`` (those
        :meth:`unsafe` checks) is farther outside the workspace than ``start``, or brings
        any pair of parts into the collision clearance that is not in it at ``start``, or
        any pair that is deeper than at ``start`` (by ``DEPTH_TOL``). Comparing only the
        deepest contact let a second pair come in while the first one eased (issue 15)."""
        n, geometry, ws = self.config.collision_points, self.geometry, self.workspace
        outside = ws.excess(geometry.ee_position(start)) if ws is not None else 0.0
        if self.collision:
            depth = geometry.pair_depths(start)
            allowed = np.where(depth > 0.0, depth + DEPTH_TOL, 0.0)  # [P] 0: a new pair
        for k in range(1, n + 1):
            x = end if k == n else start + (k / n) * (end - start)
            if ws is not None and ws.excess(geometry.ee_position(x)) > outside + DEPTH_TOL:
                return False
            if self.collision and np.any(geometry.pair_depths(x) > allowed):
                return False
        return True

    def _geometry(self, c: np.ndarray, intervals: list[tuple[str, np.ndarray, np.ndarray]],
                  bounds: tuple[np.ndarray, np.ndarray]
                  ) -> tuple[np.ndarray, str | None, tuple[str, ...]]:
        """``c`` if safe; else the farthest safe point on the way towards ``c`` from the
        joint-feasible point nearest the last command (all joint rules hold on the way: their
        intersection is a box); else the last command, held (the joint rules it breaks are
        returned as yielded)."""
        last, (lo, hi) = self.history.command, bounds
        unsafe = self.unsafe(last, c)
        if unsafe is None:
            return c, None, ()
        if self.unsafe(last, last) is not None:
            # The last command is unsafe itself: the stream (re)started at a measured position
            # (a reset, a stop) near the table or a link, or one that gravity sags there.
            # From rest one tick reaches only acceleration * dt^2 (0.01 rad at 100 Hz), often
            # not out of the zone, so asking for a safe command held the arm there for good
            # (a collision every tick, resets that never moved). A command that, at every
            # point checked on the way, brings no pair of parts in and none deeper (nor the
            # hand farther outside the workspace) is a way out; else hold.
            if self._no_deeper(last, c):
                return c, None, ()
            return last.copy(), unsafe, ()
        base = np.clip(last, lo, hi)
        if np.array_equal(base, last) or self.unsafe(last, base) is None:
            good, bad = 0.0, 1.0
            for _ in range(BISECTIONS):
                mid = (good + bad) / 2
                if self.unsafe(last, base + mid * (c - base)) is None:
                    good = mid
                else:
                    bad = mid
            return base + good * (c - base), unsafe, ()
        held = tuple(name for name, a, b in intervals if np.any((last < a) | (last > b)))
        return last.copy(), unsafe, held

    # ------------------------------------------------------------------------ figures
    def summary(self) -> dict[str, int]:
        """``{"shield_ticks": n, "shield_<rule>": count, ...}`` for the run's metrics."""
        return {"shield_ticks": self.ticks, **{f"shield_{k}": v for k, v in self.counts.items()}}
