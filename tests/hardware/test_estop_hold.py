"""A latched e-stop held for 30 s on a real bus and over real DDS, the watchdog and the stall
monitor on: the control loop's thread is the only one that ever calls the backend, the bus
sees no error (no flushed reply, no corrupt frame; a rare late reply on a loaded machine is
retried and counted, never more than 0.2% of the ticks), the transport raises nothing, and
the arm stays where the stop caught it. The emulated bus runs in a process of its own (its
own interpreter: a reply late for want of this process's GIL would be no fault of the bus)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.envs.factory import make_loop
from mbpo_arm.hardware.config import ShieldSettings
from mbpo_arm.hardware.loop import ControlLoop

HOLD_S = 30.0
HZ = 50.0


@contextmanager
def thread_errors() -> Iterator[list[BaseException]]:
    """Every exception raised in any thread while the block runs."""
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        yield errors
    finally:
        threading.excepthook = hook


def record_callers(loop: ControlLoop) -> set[int]:
    """The threads that call the backend's ``read`` and ``write`` from now on."""
    callers: set[int] = set()
    backend = loop.backend
    for name in ("read", "write"):
        method = getattr(backend, name)

        def recorded(*args, _method=method):
            callers.add(threading.get_ident())
            return _method(*args)

        setattr(backend, name, recorded)
    return callers


def hold_estop(loop: ControlLoop) -> tuple[np.ndarray, np.ndarray, int]:
    """Latch the e-stop, then tick swinging proposals for ``HOLD_S``; the position when the
    stop began, the position at the end, and the ticks that were not the e-stop's hold."""
    loop.connect()
    loop.reset(loop.backend.home_position)
    estop = loop.shield.estop  # the process's: reset at the end, whatever happens
    estop.trigger("test")
    try:
        start = loop.tick(loop.backend.home_position).state.position
        not_held, t0 = 0, time.monotonic()
        while (t := time.monotonic() - t0) < HOLD_S:
            proposal = loop.backend.home_position + 0.4 * np.sin(2 * np.pi * 0.5 * t)
            not_held += "estop" not in loop.tick(proposal).reasons
    finally:
        estop.reset()
    return start, loop.state.position, not_held


@contextmanager
def emulator_process(tmp_path: Path, protocol: str) -> Iterator[tuple[list[str], list[str]]]:
    """``python -m mbpo_arm.sim.servo_emulator`` in its own process: the ``backend.*``
    overrides for it, then (once the block ends) the lines it printed as it stopped."""
    calibration = tmp_path / "emulated.json"
    stderr = (tmp_path / "emulator.err").open("w")  # a file: a full pipe would block it
    child = subprocess.Popen([sys.executable, "-m", "mbpo_arm.sim.servo_emulator", "--protocol",
                              protocol, "--calibration", str(calibration)],
                             stdout=subprocess.PIPE, stderr=stderr, text=True)
    said: list[str] = []
    try:
        port = re.search(r" on (\S+) at ", child.stdout.readline()).group(1)
        yield [f"backend.port={port}", f"backend.protocol={protocol}",
               f"backend.calibration={calibration}", "backend.hold_s=0.05"], said
    finally:
        child.send_signal(signal.SIGINT)
        try:
            said += child.communicate(timeout=60)[0].splitlines()
        except subprocess.TimeoutExpired:  # say where it is stuck (faulthandler on SIGUSR1)
            child.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            child.kill()
            child.communicate()
            err = (tmp_path / "emulator.err").read_text()[-4000:]
            raise AssertionError("the emulator did not stop on SIGINT within 60 s; its "
                                 f"threads:\n{err}") from None
        finally:
            stderr.close()


@pytest.mark.slow
def test_a_latched_estop_on_the_serial_bus_for_30_s(tmp_path: Path) -> None:
    with emulator_process(tmp_path, "dynamixel") as (overrides, said), \
            thread_errors() as errors:
        rc, _ = load_run_config(["backend=serial", *overrides, f"runtime.control_hz={HZ}",
                                 "shield.limits_file=so101", "backend.watchdog=0.1"])
        loop = make_loop("serial", rc.backend, rc.shield, HZ)
        callers = record_callers(loop)
        try:
            start, end, not_held = hold_estop(loop)
            bus = loop.backend.bus.stats
            assert loop.monitor is not None and loop.monitor.running  # on for hardware
            stalls = loop.monitor.stalls
        finally:
            loop.close()
        assert not_held == 0 and loop.ticks >= 0.9 * HOLD_S * HZ
        # The emulator is another process on a shared machine: a reply late past the bus's
        # timeout (seen once in CI) is retried at once; the rate of such replies belongs in
        # bench/serial_bus.py, not here. A corrupt frame or an unretried timeout is a fault.
        assert bus.corrupt == 0 and bus.retries == bus.timeouts, vars(bus)
        assert bus.timeouts <= 0.002 * loop.ticks, vars(bus)
        assert errors == [] and stalls == 0
        assert callers == {threading.get_ident()}
        assert np.abs(end - start).max() < 0.02
    summary = re.search(r"served (\d+) goal writes; (\d+) beyond the limit registers; the bus "
                        r"watchdog fired on (\d+) servos", "\n".join(said))
    assert summary is not None, said
    writes, unsafe, fired = map(int, summary.groups())
    assert writes >= 6 * 0.9 * HOLD_S * HZ and unsafe == 0
    assert fired == 0  # the loop never went quiet


@pytest.mark.slow
def test_a_latched_estop_over_ros2_for_30_s() -> None:
    pytest.importorskip("cyclonedds")
    from mbpo_arm.hardware.ros2.config import Ros2Config
    from tests.hardware.ros2_helpers import fresh_domain, twin_driver_thread

    config = Ros2Config(domain_id=fresh_domain())
    with twin_driver_thread(config, HZ) as driver, thread_errors() as errors:
        loop = make_loop("ros2", config, ShieldSettings(limits_file="so101"), HZ)
        callers = record_callers(loop)
        try:
            start, end, not_held = hold_estop(loop)
            stats = loop.backend.stats()
            stalls = loop.monitor.stalls
        finally:
            loop.close()
        assert not_held == 0 and loop.ticks >= 0.9 * HOLD_S * HZ
        assert errors == [] and stalls == 0
        assert stats["joint_states_rejected"] == 0 and stats["commands_sent"] >= loop.ticks
        assert callers == {threading.get_ident()}
        assert np.abs(end - start).max() < 0.02
        assert np.abs(driver.twin.read().position - start).max() < 0.02
