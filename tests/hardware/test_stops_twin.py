"""The watchdog and the e-stop end to end against the real twin: motion stops within the
configured time and stays stopped until reset; the e-stop's key (over a real
pseudo-terminal), signal and file triggers; the slow reset through the shield."""

from __future__ import annotations

import os
import pty
import signal
import time

import numpy as np
import pytest

from mbpo_arm.hardware import estop as estop_module
from mbpo_arm.hardware.estop import EStop, KeyTrigger, install_signal, uninstall_signal
from tests.hardware.conftest import shielded_twin

STOP_S = 0.5  # the arm is still (joint speeds < 0.05 rad/s) this long after a stop


def swing(k: int, home: np.ndarray) -> np.ndarray:
    """A proposal that keeps the arm moving (base and shoulder sway, 0.5 Hz)."""
    target = home.copy()
    target[0] += 0.8 * np.sin(2 * np.pi * 0.5 * k * 0.05)
    target[1] += 0.4 * np.sin(2 * np.pi * 0.5 * k * 0.05)
    return target


def drive(robot, ticks: int, start: int = 0, send: bool = True) -> list:
    """``ticks`` control periods of swinging proposals (or none); the states read."""
    states = []
    for k in range(start, start + ticks):
        if send:
            robot.read_state()
            robot.send_command(swing(k, robot.home_position))
        robot.advance()
        states.append(robot.read_state())
    return states


def assert_stopped_within(states: list, period: float) -> np.ndarray:
    """Still after ``STOP_S``, and held there to the end; returns where it stopped."""
    after = states[int(STOP_S / period):]
    speeds = np.array([np.abs(s.velocity).max() for s in after])
    assert speeds.max() < 0.05, f"still moving at {speeds.max():.3f} rad/s"
    positions = np.array([s.position for s in after])
    assert np.ptp(positions, axis=0).max() < 0.005
    return positions[-1]


def test_estop_stops_the_arm_until_reset(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry)
    moving = drive(robot, 30)
    assert np.abs(moving[-1].velocity).max() > 0.2  # it was moving
    robot.shield.estop.trigger("test")
    held = drive(robot, 60, start=30)  # the policy keeps proposing motion for 3 s
    assert_stopped_within(held, robot.control_period)
    assert robot.last_result.reasons == ("estop",)
    robot.reset(robot.home_position)  # a reset does not move a stopped arm
    assert np.abs(robot.read_state().position - held[-1].position).max() < 0.005
    robot.shield.estop.reset()
    resumed = drive(robot, 30, start=90)
    assert np.abs(resumed[-1].position - held[-1].position).max() > 0.05


def test_watchdog_holds_when_the_command_stream_stops(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry, command_timeout_periods=3)
    drive(robot, 30)
    stalled = drive(robot, 40, start=30, send=False)  # the loop ticks, no command comes
    assert_stopped_within(stalled, robot.control_period)
    assert robot.last_result.reasons == ("watchdog",)
    assert robot.shield.counts["watchdog"] > 0
    resumed = drive(robot, 30, start=70)  # commands again: the hold ends
    assert robot.last_result.reasons != ("watchdog",)
    assert np.abs(resumed[-1].position - stalled[-1].position).max() > 0.05


def test_watchdog_releases_torque_after_holding(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry, command_timeout_periods=3, on_timeout="release",
                          release_after_s=0.5)
    drive(robot, 20)
    drive(robot, 12, start=20, send=False)  # held from 0.2 s on, not yet released
    assert not robot.shield.released
    limp = drive(robot, 30, start=32, send=False)
    assert robot.shield.released
    assert np.all(robot.model.actuator_gainprm[:, 0] == 0)  # the servos went limp
    assert np.abs(limp[-1].position - limp[0].position).max() > 0.05  # gravity moves it
    robot.read_state()
    robot.send_command(robot.home_position)  # still held until a reset
    assert robot.last_result.reasons == ("watchdog",)
    robot.reset(robot.home_position)
    assert not robot.shield.released and robot.model.actuator_gainprm[0, 0] > 0


def test_stale_state_holds(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry, state_timeout_periods=2)
    drive(robot, 10)
    for _ in range(3):  # the state reader stalls: the shield's last state gets old
        robot.robot.advance()
    robot.send_command(swing(13, robot.home_position))
    assert robot.last_result.reasons == ("watchdog",) and robot.last_result.stopped


def test_key_signal_and_file_trigger_the_estop(tmp_path, monkeypatch) -> None:
    # only this test's e-stop hears the signal (not the process's, which other tests build)
    monkeypatch.setattr(estop_module, "_SIGNAL_STOPS", [])
    monkeypatch.setattr(estop_module, "_PREVIOUS", {})
    estop = EStop(tmp_path / "STOP")
    master, slave = pty.openpty()  # a real terminal pair: the key reader needs a TTY
    stream = os.fdopen(slave, "r")
    reader = KeyTrigger(estop, "e", stream)
    try:
        assert reader.start()
        os.write(master, b"x")
        time.sleep(0.2)
        assert not estop.latched
        os.write(master, b"e")
        wait(lambda: estop.latched)
        assert estop.source == "key 'e'"
        os.write(master, b"r")
        wait(lambda: not estop.latched)
    finally:
        reader.stop()
        stream.close()
        os.close(master)
    assert install_signal(estop, "SIGUSR1")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        wait(lambda: estop.latched)
        assert estop.source == "signal SIGUSR1"
    finally:
        uninstall_signal(estop)
    estop.reset()
    (tmp_path / "STOP").touch()
    assert estop.poll() and estop.source.startswith("file")
    with pytest.raises(RuntimeError, match="remove"):
        estop.reset()
    (tmp_path / "STOP").unlink()
    estop.reset()
    assert not estop.poll()


def test_key_reader_does_not_start_without_a_terminal(tmp_path) -> None:
    with open(tmp_path / "stdin", "w+") as not_a_tty:
        assert not KeyTrigger(EStop(), "e", not_a_tty).start()


def test_slow_reset_moves_through_the_shield_at_home_speed(so101, geometry) -> None:
    robot = shielded_twin(so101, geometry)
    robot.slow_reset = True
    start = robot.home_position + np.array([1.0, 0.3, -0.4, 0.3, 1.0, 0.2])
    robot.robot.reset(start)
    robot.shield.restart(robot.read_state(), robot.clock())
    speeds = []
    original = robot.robot.advance

    def watched() -> None:
        original()
        speeds.append(np.abs(robot.robot.read_state().velocity).max())

    robot.robot.advance = watched
    t0 = robot.clock()
    state = robot.reset(robot.home_position)
    assert np.abs(state.position - robot.home_position).max() < 0.05
    assert robot.clock() - t0 >= 1.0 / so101.home_speed  # 1 rad at home_speed, not a jump
    assert max(speeds) < 1.5 * so101.home_speed


def wait(predicate, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_watchdog_thread_holds_and_releases_when_the_loop_stalls(so101, geometry) -> None:
    """The loop stops entirely (no advance either): the thread holds, then releases. The
    twin runs on the wall clock here, as a hardware backend's stamps do."""
    from mbpo_arm.hardware.config import WatchdogSettings
    from mbpo_arm.hardware.estop import EStop
    from mbpo_arm.hardware.shield import Shield, ShieldedRobot
    from mbpo_arm.sim.config import TwinConfig
    from mbpo_arm.sim.twin import TwinRobot

    twin = TwinRobot(TwinConfig(control_hz=50.0))
    watchdog = WatchdogSettings(command_timeout_periods=3, on_timeout="release",
                                release_after_s=0.2)
    shield = Shield(so101, twin.control_period, geometry, True, watchdog, EStop())
    robot = ShieldedRobot(twin, shield, clock=time.monotonic, watchdog_thread=True)
    robot.connect()
    try:
        for k in range(5):
            state = twin.read_state()
            robot._state = type(state)(state.position, state.velocity, time.monotonic())
            robot.send_command(swing(k + 10, twin.home_position))
            twin.advance()
        sent = twin.data.ctrl.copy()
        wait(lambda: shield.holding == "watchdog", timeout=2.0)  # 3 periods = 60 ms
        hold = shield.history.command
        np.testing.assert_allclose(twin.data.ctrl[:6], hold)
        assert not np.allclose(hold, sent[:6])
        wait(lambda: shield.released, timeout=2.0)
        assert np.all(twin.model.actuator_gainprm[:, 0] == 0)
    finally:
        robot.disconnect()
