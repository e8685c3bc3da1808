"""SerialRobot over a real pseudo-terminal against the servo emulator, for both protocols:
clear errors at connect, every injected fault recovered or reported, and no unsafe goal
position ever reaching a servo (checked at the emulator)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.envs.factory import make_env, make_loop
from mbpo_arm.hardware.config import SerialConfig
from mbpo_arm.hardware.loop import Pace
from mbpo_arm.hardware.serial_bus import SYNC_WRITE, BusError, NoReplyError, PortError
from mbpo_arm.hardware.serial_robot import SerialRobot
from mbpo_arm.sim.servo_emulator import ServoEmulator
from tests.hardware.emulated import emulated_arm, robot_on

PROTOCOLS = ("feetech", "dynamixel")


@pytest.fixture(params=PROTOCOLS)
def arm(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    with ServoEmulator(request.param) as emulator:
        robot = robot_on(emulator, tmp_path)
        robot.connect()
        try:
            yield emulator, robot
        finally:
            robot.close()
        assert emulator.unsafe == [], f"unsafe goal positions reached the servos: {emulator.unsafe}"


def run_ticks(robot: SerialRobot, n: int, hz: float = 50.0) -> np.ndarray:
    """``n`` ticks holding the present pose at ``hz`` (a control loop's clock, no shield)."""
    pace = Pace(1.0 / hz)
    state = robot.read()
    for _ in range(n):
        robot.write(state.position)
        pace.wait()
        state = robot.read()
    return state.position


def test_missing_port_is_one_clear_line(tmp_path: Path) -> None:
    with ServoEmulator() as emulator:
        calibration = tmp_path / "c.json"
        emulator.calibration().save(calibration)
    robot = SerialRobot(SerialConfig(port="/dev/ttyNOPE9", calibration=str(calibration)))
    with pytest.raises(PortError, match=r"'/dev/ttyNOPE9' does not exist.*port=") as err:
        robot.connect()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_baud_rate_names_the_rate_the_servos_answer_at(protocol: str,
                                                             tmp_path: Path) -> None:
    with ServoEmulator(protocol, baudrate=57_600) as emulator:
        robot = robot_on(emulator, tmp_path, baudrate=1_000_000)
        with pytest.raises(BusError, match="answer at 57600 baud, not 1000000.*"
                                           "backend.baudrate=57600"):
            robot.connect()
        assert not robot.bus.is_open


def test_no_servo_at_all_and_a_silent_servo_are_named(tmp_path: Path) -> None:
    with ServoEmulator("dynamixel") as emulator:
        emulator.faults.silent_ids = {3}
        robot = robot_on(emulator, tmp_path)
        with pytest.raises(NoReplyError, match=r"servo 3 \(elbow_pitch\) .* does not answer"):
            robot.connect()
        emulator.faults.silent_ids = set(range(1, 7))
        with pytest.raises(NoReplyError, match="no servo answers .* at 1000000 baud"):
            robot.connect()


@pytest.mark.parametrize("fault,value,counter", [
    ("drop_replies", 1, "timeouts"),
    ("corrupt_replies", 2, "corrupt"),
    ("latency", 0.004, None),
])
def test_transient_faults_are_recovered(arm, fault: str, value: float,
                                        counter: str | None) -> None:
    emulator, robot = arm
    run_ticks(robot, 3)
    before = dict(vars(robot.bus.stats))
    setattr(emulator.faults, fault, value)
    position = run_ticks(robot, 10)
    emulator.faults.latency = 0.0
    if counter:
        assert vars(robot.bus.stats)[counter] > before[counter]
        assert robot.bus.stats.retries > before["retries"]
    np.testing.assert_allclose(position, emulator.joint_positions(), atol=0.02)


def test_reply_later_than_the_timeout_is_an_error_then_recovers(arm) -> None:
    emulator, robot = arm
    emulator.faults.latency = 0.2  # later than all three tries of 20 ms
    with pytest.raises(NoReplyError, match=r"servo 1 \(base_yaw\) did not reply within 20 ms"
                                           r".* after 3 tries"):
        robot.read()
    emulator.faults.latency = 0.0
    time.sleep(0.3)  # the late replies arrive; the next transaction drops them
    np.testing.assert_allclose(run_ticks(robot, 2), emulator.joint_positions(), atol=0.02)


def test_servo_dropping_out_mid_run_is_named(arm) -> None:
    emulator, robot = arm
    run_ticks(robot, 3)
    emulator.faults.silent_ids = {5}
    with pytest.raises(NoReplyError, match=r"servo 5 \(wrist_roll\) did not reply"):
        run_ticks(robot, 3)
    emulator.faults.silent_ids = set()


def test_commands_beyond_the_limits_never_reach_the_wire(arm) -> None:
    emulator, robot = arm
    for far in (10.0, -10.0):
        sent = robot.write(np.full(6, far))
        assert np.all(sent >= robot.limits.lower - 1e-3) and np.all(sent <= robot.limits.upper
                                                                     + 1e-3)
        time.sleep(0.02)
    with pytest.raises(ValueError, match="non-finite"):
        robot.write(np.full(6, np.nan))
    run_ticks(robot, 3)


def test_bytes_on_the_wire_are_the_sync_write_of_the_goal_ticks(arm) -> None:
    emulator, robot = arm
    q = robot.home_position + 0.05
    sent = robot.write(q)
    time.sleep(0.02)
    ticks = np.rint(emulator.zero + emulator.direction * q / emulator.rad_per_tick).astype(int)
    goal = robot.codec.control_table["goal_position"]
    width = robot.codec.address_size
    params = goal.address.to_bytes(width, "little") + goal.size.to_bytes(width, "little")
    params += b"".join(bytes([i]) + int(t).to_bytes(goal.size, "little")
                       for i, t in zip(emulator.ids, ticks, strict=True))
    expected = robot.codec.instruction(0xFE, SYNC_WRITE, params)
    assert expected in list(emulator.received)
    np.testing.assert_allclose(sent, q, atol=emulator.rad_per_tick / 2 + 1e-12)


def test_position_mode_and_limit_registers_hold_the_calibrated_range(arm) -> None:
    emulator, robot = arm
    for k in range(6):
        assert emulator._reg(k, "operating_mode") == robot.codec.position_mode
        assert emulator._reg(k, "min_position_limit") == emulator.safe_low[k]
        assert emulator._reg(k, "max_position_limit") == emulator.safe_high[k]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_reset_moves_through_the_shield_and_close_releases_torque(
        protocol: str, tmp_path: Path) -> None:
    with emulated_arm(tmp_path, protocol) as (emulator, overrides):
        rc, _ = load_run_config(["backend=serial", *overrides, "runtime.control_hz=50",
                                 "shield.limits_file=so101"])
        loop = make_loop("serial", rc.backend, rc.shield, 50.0)
        loop.connect()
        target = loop.backend.home_position.copy()
        target[0] += 0.3
        start = time.monotonic()
        state = loop.reset(target)
        assert time.monotonic() - start >= 0.9 * 0.3 / loop.shield.config.home_speed
        assert np.abs(state.position - target).max() < 0.05
        assert emulator.torque().all() and loop.reset_timeouts == 0
        loop.close()
        time.sleep(0.05)
        assert not emulator.torque().any()
        assert emulator.unsafe == []


@pytest.mark.slow
def test_dynamixel_bus_watchdog_stops_a_quiet_host_and_is_rearmed(tmp_path: Path) -> None:
    with ServoEmulator("dynamixel") as emulator:
        robot = robot_on(emulator, tmp_path, watchdog=0.1)
        robot.connect()
        target = robot.home_position.copy()
        target[0] = 0.8
        robot.write(target)  # a fast move, then the host goes quiet
        time.sleep(0.15)
        assert emulator._watchdog_fired[0], "the watchdog did not fire"
        stopped = emulator.joint_positions()[0]
        time.sleep(0.3)
        assert abs(emulator.joint_positions()[0] - stopped) < 0.02  # held where it stopped
        assert stopped < 0.75
        robot.write(target)  # re-arms, then the goal is accepted again
        run = time.monotonic() + 0.6
        while time.monotonic() < run:
            robot.write(target)
            time.sleep(0.02)
        assert abs(robot.read().position[0] - 0.8) < 0.03
        robot.close()
        assert emulator.unsafe == []


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_episode_under_a_storm_of_transient_faults_completes(protocol: str,
                                                               tmp_path: Path) -> None:
    """Half the ticks lose or corrupt a reply: the reach episode still runs to its time limit
    through the retries, and no goal beyond a joint's range reaches a servo."""
    with emulated_arm(tmp_path, protocol) as (emulator, overrides):
        rc, _ = load_run_config(["backend=serial", *overrides, "runtime.control_hz=100",
                                 "task.max_episode_steps=60", "shield.limits_file=so101"])
        env = make_env(rc.task, rc.backend_name, rc.backend, shield=rc.shield,
                       control_hz=rc.runtime.control_hz)
        robot = env.unwrapped.loop.backend
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        truncated = False
        while not truncated:
            fault = rng.integers(4)
            emulator.faults.drop_replies = int(fault == 0)
            emulator.faults.corrupt_replies = int(fault == 1)
            _, _, _, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        assert robot.bus.stats.retries >= 20
        env.close()
        assert emulator.unsafe == []
