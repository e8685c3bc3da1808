"""The control loop on the real twin: the reset move through the shield (``between`` after
every tick, its tick and wall-clock bounds, a way out of the collision clearance), the wall
clock, and the start-up checks that keep a hardware arm behind the shield."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from mbpo_arm.envs.factory import check_shield_settings
from mbpo_arm.hardware.config import ShieldSettings
from mbpo_arm.hardware.loop import ControlLoop, Pace, require
from mbpo_arm.hardware.robot import Simulated
from mbpo_arm.sim.twin import TwinRobot
from tests.hardware.conftest import shielded_twin


def counting(loop: ControlLoop) -> list[int]:
    """Count the twin's physics ticks: ``[ticks]``."""
    count = [0]
    original = loop.backend.step

    def step() -> None:
        original()
        count[0] += 1

    loop.backend.step = step
    return count


def test_between_runs_after_every_tick_of_a_reset(so101, geometry) -> None:
    loop = shielded_twin(so101, geometry, place_resets=False)
    home = loop.backend.home_position
    loop.backend.place(home + np.array([0.6, 0.2, -0.3, 0.2, 0.5, 0.0]))
    loop.connect()
    ticks = counting(loop)
    seen: list[int] = []
    loop.between = lambda: seen.append(ticks[0])
    state = loop.reset(home)
    assert loop.reset_timeouts == 0 and ticks[0] > 10
    assert seen == list(range(1, ticks[0] + 1))  # once after each tick, in order
    assert np.abs(state.position - home).max() < 0.05


def test_a_refused_move_stops_at_its_tick_bound(so101, geometry) -> None:
    loop = shielded_twin(so101, geometry, place_resets=False)
    shield = loop.shield
    target = np.clip(loop.backend.home_position + np.array([0.0, 1.2, 0.0, 0.0, 0.0, 0.0]),
                     shield.lower, shield.upper)
    assert geometry.collides(target)  # the shield never lets the arm reach it
    ticks = counting(loop)
    distance = np.abs(target - loop.state.position).max()
    bound = 2 * math.ceil(distance / (so101.home_speed * loop.period)) \
        + math.ceil(1.0 / loop.period) + 10
    loop.reset(target)
    assert ticks[0] == bound and loop.reset_timeouts == 0
    assert loop.last.reasons == ("collision",)


@pytest.mark.slow
def test_stalled_ticks_stop_at_the_wall_clock_bound(so101, geometry, capsys) -> None:
    loop = shielded_twin(so101, geometry, place_resets=False)
    original = loop.backend.step

    def stalled() -> None:  # a backend whose ticks take 4 periods of wall-clock time
        original()
        time.sleep(4 * loop.period)

    loop.backend.step = stalled
    home = loop.backend.home_position
    t0 = time.monotonic()
    far = home + np.array([1.0, 0.3, -0.4, 0.3, 1.0, 0.2])
    state = loop.reset(far, timeout_s=0.5)
    assert loop.reset_timeouts == 1 and 0.5 <= time.monotonic() - t0 < 2.0
    assert np.abs(state.position - far).max() > 0.5  # it stopped on the way
    assert "reset move stopped at its time bound" in capsys.readouterr().err


def test_a_reset_from_inside_the_clearance_reaches_home(so101, geometry) -> None:
    loop = shielded_twin(so101, geometry, control_hz=100, place_resets=False)  # 0.01 rad/tick
    home = loop.backend.home_position
    inside = home.copy()
    inside[1] += 0.30  # the shoulder 4 cm of motion past the clearance's boundary
    assert geometry.collides(inside)
    loop.backend.place(inside)
    loop.connect()
    ticks = counting(loop)
    state = loop.reset(home)
    assert np.abs(state.position - home).max() < 0.05
    assert loop.reset_timeouts == 0 and ticks[0] < 300  # it arrived, not its tick bound


def test_a_realtime_loop_ticks_on_the_wall_clock(so101, geometry) -> None:
    twin = TwinRobot(control_hz=100.0)
    loop = ControlLoop(twin, None, 100.0, realtime=True, place_resets=True)
    loop.connect()
    start = time.monotonic()
    for _ in range(7):  # the first tick anchors the schedule
        loop.hold()
    assert time.monotonic() - start >= 0.055
    assert len(loop.pace.lateness) == 6 and loop.stats()["loop_ticks"] == 7


def test_pace_drops_the_backlog_instead_of_bursting() -> None:
    pace = Pace(0.01)
    pace.wait()
    time.sleep(0.035)  # three periods late
    pace.wait()
    assert pace.skipped >= 2
    t0 = time.perf_counter()
    pace.wait()  # the next tick is a period after the late one, not at once
    assert time.perf_counter() - t0 >= 0.009


def test_a_hardware_arm_never_moves_without_the_shield() -> None:
    for settings in (ShieldSettings(enabled=False, limits_file="so101"),
                     ShieldSettings(slow_reset=False, limits_file="so101")):
        with pytest.raises(ValueError, match="not allowed for backend=serial"):
            check_shield_settings("serial", settings)
    with pytest.raises(ValueError, match="shield.slow_reset=false would move a hardware arm"):
        ControlLoop(NotATwin(), None, 20.0, place_resets=True)


def test_a_missing_capability_is_named_at_start_up() -> None:
    with pytest.raises(TypeError, match="NotATwin does not implement Simulated"):
        require(NotATwin(), Simulated, "backend=mujoco")


class NotATwin:
    """A backend with the interface and nothing else (no arm behind it: only the start-up
    checks run, before anything would be read or written)."""

    joint_names = ("a",)
    limits = None
    home_position = np.zeros(1)

    def connect(self) -> None: ...

    def read(self): ...

    def write(self, command): ...

    def close(self) -> None: ...
