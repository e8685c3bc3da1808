"""Connecting to a serial arm over a real pseudo-terminal (the servo emulator), both protocols:
the connect ping is retried like every other transaction, an adapter that echoes the host's
bytes is recognised and its echo skipped, and a servo that never answers is still named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.hardware.feetech import FeetechCodec
from mbpo_arm.hardware.serial_bus import PING, NoReplyError, ServoError
from mbpo_arm.sim.servo_emulator import ServoEmulator
from tests.hardware.emulated import robot_on

PROTOCOLS = ("feetech", "dynamixel")


def pings_to(emulator: ServoEmulator, servo_id: int) -> int:
    """How many PING packets addressed to ``servo_id`` the emulator received."""
    ping = emulator.codec.instruction(servo_id, PING, b"")
    return sum(packet == ping for packet in emulator.received)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault,counter", [("drop_ping_replies", "timeouts"),
                                           ("corrupt_ping_replies", "corrupt")])
def test_a_lost_or_corrupted_ping_reply_is_retried_at_connect(protocol: str, fault: str,
                                                              counter: str,
                                                              tmp_path: Path) -> None:
    with ServoEmulator(protocol) as emulator:
        robot = robot_on(emulator, tmp_path)
        setattr(emulator.faults, fault, robot.bus.retries)  # every retry but the last
        robot.connect()
        try:
            assert getattr(emulator.faults, fault) == 0
            assert vars(robot.bus.stats)[counter] >= robot.bus.retries
            assert robot.bus.stats.retries >= robot.bus.retries
            np.testing.assert_allclose(robot.read().position, emulator.joint_positions(),
                                       atol=0.02)
        finally:
            robot.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_servo_that_never_answers_is_named_after_the_retries(protocol: str,
                                                               tmp_path: Path) -> None:
    with ServoEmulator(protocol) as emulator:
        emulator.faults.silent_ids = {3}
        robot = robot_on(emulator, tmp_path)
        with pytest.raises(NoReplyError, match=r"^servo 3 \(elbow_pitch\) on .* does not answer"
                                               r" \(3 pings\); check its cable and id") as err:
            robot.connect()
        assert "\n" not in str(err.value)
        assert pings_to(emulator, 3) == 1 + robot.bus.retries
        assert not robot.bus.is_open


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_echoing_adapter_is_recognised_and_its_echo_skipped(protocol: str,
                                                               tmp_path: Path) -> None:
    with ServoEmulator(protocol, echo=True) as emulator:
        robot = robot_on(emulator, tmp_path)
        robot.connect()
        try:
            assert robot.bus.echo is True
            target = robot.home_position + 0.1
            for _ in range(20):
                robot.write(target)
                state = robot.read()
            np.testing.assert_allclose(state.position, emulator.joint_positions(), atol=0.02)
            assert robot.bus.stats.corrupt == 0
        finally:
            robot.close()
        assert emulator.unsafe == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_adapter_without_echo_is_recognised_as_such(protocol: str, tmp_path: Path) -> None:
    with ServoEmulator(protocol) as emulator:
        robot = robot_on(emulator, tmp_path)
        robot.connect()
        try:
            assert robot.bus.echo is False
        finally:
            robot.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_echoing_adapter_survives_a_lost_ping_reply(protocol: str, tmp_path: Path) -> None:
    with ServoEmulator(protocol, echo=True) as emulator:
        emulator.faults.drop_ping_replies = 1
        emulator.faults.corrupt_ping_replies = 1
        robot = robot_on(emulator, tmp_path)
        robot.connect()
        try:
            assert robot.bus.echo is True
            assert robot.bus.stats.timeouts >= 1 and robot.bus.stats.corrupt >= 1
            assert emulator.faults.drop_ping_replies == emulator.faults.corrupt_ping_replies == 0
        finally:
            robot.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_missing_servo_behind_an_echoing_adapter_is_named_not_an_error_status(
        protocol: str, tmp_path: Path) -> None:
    """Feetech's PING to servo 1 (``FF FF 01 02 01 FB``) read back as a status packet is
    servo 1 reporting error bit 0x01, an input voltage error."""
    with ServoEmulator(protocol, echo=True) as emulator:
        robot = robot_on(emulator, tmp_path)
        for silent in ({1}, {3}):
            emulator.faults.silent_ids = silent
            (servo,) = silent
            with pytest.raises(NoReplyError, match=rf"^servo {servo} \(\w+\) on .* does not "
                                                   "answer"):
                robot.connect()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_servo_behind_an_echoing_adapter_says_the_adapter_works(protocol: str,
                                                                   tmp_path: Path) -> None:
    with ServoEmulator(protocol, echo=True) as emulator:
        emulator.faults.silent_ids = set(emulator.ids)
        robot = robot_on(emulator, tmp_path)
        with pytest.raises(NoReplyError, match="no servo answers .* at 1000000 baud .*the "
                                               "adapter .* echoes"):
            robot.connect()


@pytest.mark.parametrize("echo", [False, True])
def test_a_real_error_status_to_the_ping_is_not_taken_for_an_echo(echo: bool,
                                                                  tmp_path: Path) -> None:
    """A Feetech servo with an input voltage error answers PING with exactly the bytes of the
    PING: it is reported as the servo's error, with and without an echoing adapter."""
    codec = FeetechCodec()
    assert codec.instruction(1, PING, b"")[2:] == bytes([1, 2, 0x01, 0xFB])
    with ServoEmulator("feetech", echo=echo) as emulator:
        emulator.faults.status_errors = {1: 0x01}
        robot = robot_on(emulator, tmp_path)
        with pytest.raises(ServoError, match=r"^servo 1 \(base_yaw\) reports input voltage "
                                             "error"):
            robot.connect()
        assert robot.bus.echo is echo
