"""The servo emulator behaves like the twin behind it and like the servos' firmware."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.hardware.dynamixel import DynamixelCodec
from mbpo_arm.hardware.loop import Pace
from mbpo_arm.hardware.serial_bus import ServoBus, ServoError
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.servo_emulator import ServoEmulator
from mbpo_arm.sim.twin import TwinRobot
from tests.hardware.emulated import robot_on


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["feetech", "dynamixel"])
def test_same_commands_give_the_twins_joint_trajectory(protocol: str, tmp_path: Path) -> None:
    """Over the wire and in the twin, 1.5 s of the same commands give the same joint
    trajectories: within the tick quantization plus the wall-clock phase of each command
    (the emulator runs physics in real time, the twin in lock step)."""
    hz = 50.0
    with ServoEmulator(protocol) as emulator:
        robot = robot_on(emulator, tmp_path)
        robot.connect()
        twin = TwinRobot(TwinConfig(), control_hz=hz)
        pace = Pace(1.0 / hz)  # the wall clock of a control loop, without its shield
        home = twin.home_position
        for _ in range(int(hz)):  # the emulated arm starts at home: hold it there for 1 s
            robot.write(home)
            pace.wait()
        twin.place(robot.read().position)
        n = int(1.5 * hz)
        phase = 2 * np.pi * np.arange(6) / 6
        wire, sim = [], []
        for k in range(n):
            command = home + 0.4 * np.sin(phase + 2 * np.pi * k / n) * (np.arange(6) < 5)
            twin.write(robot.write(command))
            pace.wait()
            twin.step()
            wire.append(robot.read().position)
            sim.append(twin.read().position)
        robot.close()
        assert emulator.unsafe == []
    error = np.abs(np.array(wire) - np.array(sim))
    moved = np.ptp(np.array(sim), axis=0)
    assert moved[:5].min() > 0.5  # the trajectories did swing
    assert error.mean() < 0.012, error.mean(axis=0)
    assert error.max() < 0.1, error.max(axis=0)


def test_firmware_clamps_goals_and_the_unsafe_log_catches_them() -> None:
    """A goal beyond the limit registers is clamped by the servo, and a goal beyond the
    mechanical range is logged as unsafe: the check the other tests rely on can fail."""
    with ServoEmulator("dynamixel") as emulator:
        codec = DynamixelCodec()
        bus = ServoBus(codec, emulator.port, 1_000_000)
        bus.open()
        table = codec.control_table
        lo = table["min_position_limit"]
        with pytest.raises(ServoError, match="access error"):
            bus.write(1, table["torque_enable"].address, b"\x01")
            bus.write(1, lo.address, lo.encode(2000))  # EEPROM with torque on: refused
        bus.write(1, table["torque_enable"].address, b"\x00")
        bus.write(1, lo.address, lo.encode(2000))
        bus.write(1, table["operating_mode"].address, bytes([codec.position_mode]))
        bus.write(1, table["torque_enable"].address, b"\x01")
        bus.write(1, table["goal_position"].address, table["goal_position"].encode(1500))
        assert emulator.unsafe == []  # 1500 is within the joint's range
        bus.write(1, table["goal_position"].address, table["goal_position"].encode(100))
        assert emulator.unsafe == [(1, 100)]  # beyond the joint's range: logged
        time.sleep(0.4)
        ticks = emulator.zero[0] + emulator.direction[0] * emulator.joint_positions()[0] \
            / emulator.rad_per_tick
        assert abs(ticks - 2000) < 15  # clamped at the limit register
        bus.close()


def test_torque_off_is_limp_and_a_hand_can_hold_the_arm() -> None:
    with ServoEmulator("feetech") as emulator:
        start = emulator.joint_positions()
        emulator.hold(start + 0.3)  # torque is off at power-up: the joints follow the hand
        time.sleep(0.1)
        np.testing.assert_allclose(emulator.joint_positions(), start + 0.3, atol=0.02)
        emulator.hold(None)
        time.sleep(0.4)
        assert np.abs(emulator.joint_positions() - (start + 0.3)).max() > 0.05  # it sags
