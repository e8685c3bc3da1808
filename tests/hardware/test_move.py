"""Slow moves through the shield on the real twin: ``between`` runs after every tick, the
move stops at its tick bound when the shield refuses the rest of the way, and at its
wall-clock bound when the ticks stall; a slow reset that times out says so; a reset that
starts inside the collision clearance gets out of it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from mbpo_arm.hardware.config import WatchdogSettings
from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.move import move_to
from mbpo_arm.hardware.shield import Shield, ShieldedRobot
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import TwinRobot
from tests.hardware.conftest import shielded_twin


def counting(robot) -> list[int]:
    """Count the twin's ticks: ``[ticks]``."""
    count = [0]
    original = robot.robot.advance

    def advance() -> None:
        original()
        count[0] += 1

    robot.robot.advance = advance
    return count


def test_between_runs_after_every_tick(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry)
    robot.robot.reset(robot.home_position + np.array([0.6, 0.2, -0.3, 0.2, 0.5, 0.0]))
    robot.shield.restart(robot.read_state(), robot.clock())
    ticks = counting(robot)
    seen: list[int] = []
    move = move_to(robot, robot.home_position, between=lambda: seen.append(ticks[0]))
    assert not move.timed_out and move.ticks == ticks[0] > 10
    assert seen == list(range(1, ticks[0] + 1))  # once after each tick, in order
    assert np.abs(move.state.position - robot.home_position).max() < 0.05


def test_a_refused_move_stops_at_its_tick_bound(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry)
    target = robot.home_position + np.array([0.0, 1.2, 0.0, 0.0, 0.0, 0.0])
    target = np.clip(target, robot.shield.lower, robot.shield.upper)
    assert geometry.collides(target)  # the shield never lets the arm reach it
    ticks = counting(robot)
    distance = np.abs(target - robot.shield.history.command).max()
    dt, speed = robot.control_period, so101.home_speed
    bound = 2 * math.ceil(distance / (speed * dt)) + math.ceil(1.0 / dt) + 10
    move = move_to(robot, target)
    assert ticks[0] == move.ticks == bound and not move.timed_out
    assert robot.last_result.reasons == ("collision",)


@pytest.mark.slow
def test_stalled_ticks_stop_at_the_wall_clock_bound(so101, geometry, capsys) -> None:
    robot = shielded_twin(so101, geometry)
    original = robot.robot.advance

    def stalled() -> None:  # a backend whose ticks take 4 periods of wall-clock time
        original()
        time.sleep(4 * robot.control_period)

    robot.robot.advance = stalled
    far = robot.home_position + np.array([1.0, 0.3, -0.4, 0.3, 1.0, 0.2])
    t0 = time.monotonic()
    move = move_to(robot, far, timeout_s=0.5)
    assert move.timed_out and 0.5 <= time.monotonic() - t0 < 2.0
    assert move.ticks < 0.5 / robot.control_period
    # A slow reset with that bound reports it on stderr and counts it.
    robot.slow_reset, robot.reset_timeout_s = True, 0.5
    robot.robot.reset(far)
    state = robot.reset(robot.home_position)
    assert robot.reset_timeouts == 1
    assert np.abs(state.position - robot.home_position).max() > 0.1
    assert "slow reset stopped at its time bound" in capsys.readouterr().err


def test_a_slow_reset_from_inside_the_clearance_reaches_home(so101, geometry) -> None:
    twin = TwinRobot(TwinConfig(control_hz=100))  # from rest, one tick reaches 0.01 rad
    shield = Shield(so101, twin.control_period, geometry, True, WatchdogSettings(), EStop())
    robot = ShieldedRobot(twin, shield, clock=twin.clock, slow_reset=True)
    robot.connect()
    inside = robot.home_position.copy()
    inside[1] += 0.30  # the shoulder 4 cm of motion past the clearance's boundary
    assert geometry.collides(inside)
    twin.reset(inside)
    ticks = counting(robot)
    state = robot.reset(robot.home_position)
    assert np.abs(state.position - robot.home_position).max() < 0.05
    assert robot.reset_timeouts == 0 and ticks[0] < 300  # it arrived, not its tick bound
