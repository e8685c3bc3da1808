"""The watchdog and the e-stop end to end in the control loop of the real twin: motion stops
within the configured time and stays stopped until reset; the e-stop's key (over a real
pseudo-terminal), signal and file triggers; the reset move through the shield; the stall
monitor."""

from __future__ import annotations

import os
import pty
import signal
import threading
import time

import numpy as np
import pytest

from mbpo_arm.hardware import estop as estop_module
from mbpo_arm.hardware.config import WatchdogSettings
from mbpo_arm.hardware.estop import EStop, KeyTrigger, install_signal, uninstall_signal
from mbpo_arm.hardware.loop import ControlLoop, StallMonitor
from mbpo_arm.hardware.shield import Shield
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import TwinRobot
from tests.hardware.conftest import shielded_twin

STOP_S = 0.5  # the arm is still (joint speeds < 0.05 rad/s) this long after a stop


def swing(k: int, home: np.ndarray) -> np.ndarray:
    """A proposal that keeps the arm moving (base and shoulder sway, 0.5 Hz)."""
    target = home.copy()
    target[0] += 0.8 * np.sin(2 * np.pi * 0.5 * k * 0.05)
    target[1] += 0.4 * np.sin(2 * np.pi * 0.5 * k * 0.05)
    return target


def drive(loop: ControlLoop, ticks: int, start: int = 0) -> list:
    """``ticks`` control periods of swinging proposals; the states read."""
    return [loop.tick(swing(k, loop.backend.home_position)).state
            for k in range(start, start + ticks)]


class StallingTwin(TwinRobot):
    """The real twin whose state reader can stall (``frozen``: ``read`` returns the last state
    again), as a driver that stops publishing does; the physics goes on."""

    frozen = False
    _last = None

    def read(self):
        if not self.frozen or self._last is None:
            self._last = super().read()
        return self._last


def stalling_loop(config, geometry, **watchdog) -> ControlLoop:
    twin = StallingTwin(TwinConfig())
    shield = Shield(config, twin.control_period, geometry, True, WatchdogSettings(**watchdog),
                    EStop())
    loop = ControlLoop(twin, shield, 20.0, place_resets=True)
    loop.connect()
    return loop


def assert_stopped_within(states: list, period: float) -> np.ndarray:
    """Still after ``STOP_S``, and held there to the end; returns where it stopped."""
    after = states[int(STOP_S / period):]
    speeds = np.array([np.abs(s.velocity).max() for s in after])
    assert speeds.max() < 0.05, f"still moving at {speeds.max():.3f} rad/s"
    positions = np.array([s.position for s in after])
    assert np.ptp(positions, axis=0).max() < 0.005
    return positions[-1]


def test_estop_stops_the_arm_until_reset(so101, geometry) -> None:
    loop = shielded_twin(so101, geometry)
    moving = drive(loop, 30)
    assert np.abs(moving[-1].velocity).max() > 0.2  # it was moving
    loop.shield.estop.trigger("test")
    held = drive(loop, 60, start=30)  # the policy keeps proposing motion for 3 s
    assert_stopped_within(held, loop.period)
    assert loop.last.reasons == ("estop",)
    loop.reset(loop.backend.home_position)  # a reset does not move a stopped arm
    assert np.abs(loop.state.position - held[-1].position).max() < 0.005
    loop.shield.estop.reset()
    resumed = drive(loop, 30, start=90)
    assert np.abs(resumed[-1].position - held[-1].position).max() > 0.05


def test_stale_state_holds_then_releases_torque(so101, geometry) -> None:
    loop = stalling_loop(so101, geometry, state_timeout_periods=2, on_timeout="release",
                         release_after_s=0.5)
    before = drive(loop, 20)[-1].position
    loop.backend.frozen = True  # the driver stops: the state gets old
    drive(loop, 8, start=20)  # held from 2 periods on, not yet released
    assert loop.last.reasons == ("watchdog",) and not loop.shield.released
    drive(loop, 30, start=28)
    assert loop.shield.released
    assert np.all(loop.backend.model.actuator_gainprm[:, 0] == 0)  # the servos went limp
    loop.backend.frozen = False
    limp = drive(loop, 10, start=62)
    assert np.abs(limp[-1].position - before).max() > 0.05  # gravity moved it
    assert loop.last.reasons == ("watchdog",)  # still held until a reset
    loop.reset(loop.backend.home_position)
    assert not loop.shield.released and loop.backend.model.actuator_gainprm[0, 0] > 0
    drive(loop, 5, start=72)
    assert loop.last.reasons != ("watchdog",)


def test_stale_state_holds_with_torque_on(so101, geometry) -> None:
    loop = stalling_loop(so101, geometry, state_timeout_periods=2)
    drive(loop, 10)
    loop.backend.frozen = True
    stale = drive(loop, 40, start=10)
    assert loop.last.reasons == ("watchdog",) and not loop.shield.released
    assert loop.backend.model.actuator_gainprm[0, 0] > 0
    loop.backend.frozen = False
    resumed = drive(loop, 30, start=50)  # fresh state: the hold ends
    assert loop.last.reasons != ("watchdog",)
    assert np.abs(resumed[-1].position - stale[-1].position).max() > 0.05


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


def test_reset_moves_through_the_shield_at_home_speed(so101, geometry) -> None:
    loop = shielded_twin(so101, geometry, place_resets=False)
    home = loop.backend.home_position
    loop.backend.place(home + np.array([1.0, 0.3, -0.4, 0.3, 1.0, 0.2]))
    loop.connect()  # the command stream restarts where the arm is
    speeds: list[float] = []
    loop.between = lambda: speeds.append(np.abs(loop.state.velocity).max())
    t0 = loop.now()
    state = loop.reset(home)
    assert np.abs(state.position - home).max() < 0.05
    assert loop.now() - t0 >= 1.0 / so101.home_speed  # 1 rad at home_speed, not a jump
    assert max(speeds) < 1.5 * so101.home_speed
    assert loop.shield.counts["collision"] == 0


def wait(predicate, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_stall_monitor_reports_a_stalled_loop_and_never_calls_the_backend(
        so101, geometry, capfd) -> None:
    """The loop stops entirely for 0.4 s, then for 0.3 s: the monitor counts both, says the
    first in one line (one line per 10 s at most), and only the loop's thread ever called the
    twin (read, write, step), before, during and after the stalls."""
    loop = shielded_twin(so101, geometry, control_hz=50.0)
    callers: set[int] = set()
    twin = loop.backend
    for name in ("read", "write", "step"):
        method = getattr(twin, name)

        def recorded(*args, _method=method):
            callers.add(threading.get_ident())
            return _method(*args)

        setattr(twin, name, recorded)
    monitor = StallMonitor(loop, stall_s=0.1)
    monitor.start()
    try:
        drive(loop, 10)
        time.sleep(0.4)  # a hung policy
        drive(loop, 10, start=10)
        wait(lambda: monitor.longest_s > 0)
        time.sleep(0.3)
        drive(loop, 10, start=20)
        wait(lambda: monitor.stalls == 2)
    finally:
        monitor.stop()
    assert monitor.stalls == 2 and 0.35 < monitor.longest_s < 1.0
    assert callers == {threading.get_ident()}
    assert capfd.readouterr().err.count("no tick for") == 1
