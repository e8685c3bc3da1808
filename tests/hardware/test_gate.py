"""The operator's gates between episodes: Enter over a real pseudo-terminal through the
process's one key reader (shared with the e-stop key), a file that is consumed, and
``std_msgs/Bool`` on the ROS 2 backend's topic over real DDS traffic."""

from __future__ import annotations

import os
import pty
import time
from collections.abc import Callable
from typing import Any

import pytest

from mbpo_arm.hardware import estop as estop_module
from mbpo_arm.hardware.estop import EStop, KeyTrigger
from mbpo_arm.hardware.gate import FileGate, SignalGate, key_gate, make_gate, topic_gate


def wait_for(condition: Callable[[], bool], poll: Callable[[], Any] = lambda: None,
             timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        poll()
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_press_counts_only_during_a_wait_and_once() -> None:
    gate = SignalGate("a button")
    gate.press("early")  # before the wait began: ignored
    gate.arm()
    assert not gate.released()
    gate.press("button")
    assert gate.released() and gate.source == "button"
    assert not gate.released()  # one release per wait


def test_file_gate_consumes_its_file(tmp_path) -> None:
    path = tmp_path / "next"
    gate = make_gate("file", str(path))
    assert isinstance(gate, FileGate)
    gate.arm()
    assert not gate.released()
    path.touch()
    assert gate.released() and not path.exists()  # each episode needs a new file
    assert not gate.released()


def test_key_gate_shares_the_estop_key_reader(monkeypatch) -> None:
    master, slave = pty.openpty()  # a real terminal pair: the key reader needs a TTY
    stream = os.fdopen(slave, "r")
    estop = EStop()
    reader = KeyTrigger(estop, "e", stream)  # the e-stop's reader of the terminal
    try:
        assert reader.start()
        monkeypatch.setattr(estop_module, "_KEYS", reader)
        gate = key_gate()
        os.write(master, b"\n")  # Enter during the episode: not a release of the next wait
        time.sleep(0.2)
        gate.arm()
        os.write(master, b"x")
        time.sleep(0.2)
        assert not gate.released()
        os.write(master, b"\r")  # Enter
        assert wait_for(gate.released)
        assert gate.source == "key Enter"
        os.write(master, b"e")  # the same reader still serves the e-stop
        assert wait_for(lambda: estop.latched)
    finally:
        reader.stop()
        stream.close()
        os.close(master)


def test_key_gate_without_a_terminal_is_a_start_up_error(monkeypatch) -> None:
    monkeypatch.setattr(estop_module, "_KEYS", None)  # pytest's stdin is not a TTY
    with pytest.raises(RuntimeError, match="needs a terminal on stdin"):
        key_gate()


def test_topic_gate_needs_the_ros2_backend() -> None:
    with pytest.raises(RuntimeError, match="needs backend=ros2"):
        topic_gate(object())


def test_topic_gate_releases_on_true_over_dds() -> None:
    pytest.importorskip("cyclonedds")
    from mbpo_arm.hardware.ros2 import messages as m
    from mbpo_arm.hardware.ros2.config import Ros2Config
    from mbpo_arm.hardware.ros2.node import Ros2Robot
    from mbpo_arm.hardware.ros2.transport import EVENTS, CycloneTransport
    from tests.hardware.ros2_helpers import fresh_domain, twin_driver_thread

    config = Ros2Config(domain_id=fresh_domain())
    with twin_driver_thread(config):
        robot = Ros2Robot(config)
        robot.connect()
        operator = CycloneTransport(config.domain_id)
        try:
            go = operator.publisher(config.next_episode_topic, m.Bool, EVENTS)
            gate = topic_gate(robot)
            gate.arm()
            # Volatile topics deliver once both ends have discovered each other: repeat the
            # message (as a button node would) while the control loop reads states.
            assert wait_for(gate.released,
                            lambda: (go(m.Bool(data=True)), robot.read()))
            assert gate.source == "ros2:/mbpo_arm/next_episode"
            gate.arm()
            end = time.monotonic() + 0.3
            while time.monotonic() < end:  # false does not release
                go(m.Bool(data=False))
                robot.read()
                time.sleep(0.01)
            assert not gate.released()
        finally:
            robot.close()
            operator.close()
