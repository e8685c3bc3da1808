"""The ROS 2 node over real DDS traffic (Cyclone DDS participants in this process, each in a
domain of its own): joint-name mapping, rejected messages, e-stop, status, trajectories."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

from mbpo_arm.envs.factory import make_loop  # noqa: E402
from mbpo_arm.hardware.config import ShieldSettings  # noqa: E402
from mbpo_arm.hardware.robot import Backend  # noqa: E402
from mbpo_arm.hardware.ros2 import messages as m  # noqa: E402
from mbpo_arm.hardware.ros2.config import Ros2Config, check_topic  # noqa: E402
from mbpo_arm.hardware.ros2.node import Ros2Robot  # noqa: E402
from mbpo_arm.hardware.ros2.transport import (  # noqa: E402
    COMMANDS,
    EVENTS,
    SENSOR_DATA,
    CycloneTransport,
)
from tests.hardware.ros2_helpers import fresh_domain, twin_driver_thread  # noqa: E402

WIRE = ("j0", "j1", "j2", "j3", "j4", "j5")


def wait_for(condition: Callable[[], bool], poll: Callable[[], Any], timeout: float = 5.0
             ) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        poll()
        if condition():
            return True
        time.sleep(0.005)
    return False


class Publisher:
    """Publishes ``make()`` on ``topic`` at 100 Hz from a thread (a joint-state broadcaster)."""

    def __init__(self, transport: CycloneTransport, topic: str, make: Callable[[], Any]) -> None:
        self._write = transport.publisher(topic, m.JointState, SENSOR_DATA)
        self.make = make
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._write(self.make())
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def peer() -> Iterator[tuple[int, CycloneTransport]]:
    """A domain and a second participant in it (the arm's side)."""
    domain = fresh_domain()
    transport = CycloneTransport(domain)
    yield domain, transport
    transport.close()


def joint_state(names: list[str], position: list[float]) -> m.JointState:
    return m.JointState(name=names, position=position, velocity=[])


@pytest.mark.slow
def test_maps_joint_names_and_rejects_messages_missing_joints(peer: Any) -> None:
    domain, arm = peer
    cfg = Ros2Config(domain_id=domain, ros_joint_names=WIRE, connect_timeout_s=1.0)
    # The arm names five of the six joints: every message is rejected and connect says why.
    pub = Publisher(arm, "/joint_states", lambda: joint_state(list(WIRE[:5]), [0.1] * 5))
    robot = Ros2Robot(cfg)
    with pytest.raises(TimeoutError, match=r"lacks joints \['j5'\].*ros_joint_names"):
        robot.connect()
    assert robot.counts["joint_states_rejected"] > 0
    assert robot.counts["joint_states_rejected"] == robot.counts["joint_states_received"]
    # Shuffled order plus a joint we do not drive: mapped by name, the extra one ignored.
    order = ["extra", "j5", "j3", "j1", "j0", "j2", "j4"]
    pub.make = lambda: joint_state(order, [9.0, 0.5, 0.3, 0.1, 0.0, 0.2, 0.4])
    robot = Ros2Robot(cfg)
    robot.connect()
    pub.make = lambda: joint_state(["j0"], [0.0])  # now a bad one among good ones
    assert wait_for(lambda: robot.counts["joint_states_rejected"] >= 3, robot.read)
    state = robot.read()  # the last good state is kept
    np.testing.assert_allclose(state.position, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert state.velocity.shape == (6,) and isinstance(robot, Backend)
    assert robot.counts["joint_states_received"] > robot.counts["joint_states_rejected"]
    pub.stop()
    robot.close()


def test_commands_estop_and_status_on_the_wire(peer: Any) -> None:
    domain, arm = peer
    pub = Publisher(arm, "/joint_states", lambda: joint_state(list(WIRE), [0.0] * 6))
    commands: list[list[float]] = []
    statuses: list[dict[str, Any]] = []
    arm.subscribe("/forward_position_controller/commands", m.Float64MultiArray, COMMANDS,
                  lambda c: commands.append(list(c.data)))
    arm.subscribe("/mbpo_arm/status", m.String, EVENTS, lambda s: statuses.append(
        json.loads(s.data)))
    estop = arm.publisher("/mbpo_arm/estop", m.Bool, EVENTS)
    release = arm.publisher("/mbpo_arm/estop_reset", m.Bool, EVENTS)
    robot = Ros2Robot(Ros2Config(domain_id=domain, ros_joint_names=WIRE))
    sources: list[str] = []
    robot.on_estop = sources.append
    robot.status_sources.append(lambda: {"shield_interventions": 3})
    robot.connect()
    a, b = np.full(6, 0.1), np.full(6, 0.2)
    # Volatile topics deliver only once both ends have discovered each other: repeat each
    # message (as the control loop does every tick) until it arrives.
    assert robot.write(a).tolist() == a.tolist()
    assert wait_for(lambda: a.tolist() in commands, lambda: (robot.write(a), arm.poll()))
    assert robot.write(np.full(6, 99.0)).tolist() == robot.limits.upper.tolist()

    robot.write(a)
    assert wait_for(lambda: robot.estopped, lambda: (estop(m.Bool(data=True)), robot.read()))
    assert sources == ["ros2:/mbpo_arm/estop"]
    assert robot.write(b).tolist() == a.tolist(), "an e-stop holds the last target"
    refusals: list[str] = []

    def refuse(source: str) -> None:
        refusals.append(source)
        raise RuntimeError("remove the stop file first")

    robot.on_estop_reset = refuse  # e.g. the shield's e-stop while its trigger file exists
    assert wait_for(lambda: bool(refusals), lambda: (release(m.Bool(data=True)),
                                                     robot.read()))
    assert robot.estopped and robot.write(b).tolist() == a.tolist()
    robot.on_estop_reset = refusals.append
    assert wait_for(lambda: not robot.estopped,
                    lambda: (release(m.Bool(data=True)), robot.read()))
    assert robot.write(b).tolist() == b.tolist()
    assert wait_for(lambda: b.tolist() in commands, lambda: (robot.write(b), arm.poll()))

    assert wait_for(lambda: bool(statuses), lambda: (robot.publish_status(), arm.poll()))
    status = statuses[-1]
    assert status["shield_interventions"] == 3 and status["estops"] == 1
    assert status["joint_states_received"] > 0 and status["transport"] == "cyclonedds"
    assert status["commands_sent"] >= 5 and status["ticks"] >= 1
    pub.stop()
    robot.close()


def test_trajectory_commands_move_the_twin(peer: Any) -> None:
    """The twin driver in a thread follows one-point JointTrajectory commands; the control
    loop's reset moves the arm there through the shield at the limits file's home speed."""
    domain, _ = peer
    cfg = Ros2Config(domain_id=domain, ros_joint_names=WIRE, command_type="trajectory")
    with twin_driver_thread(cfg, control_hz=100.0) as driver:
        loop = make_loop("ros2", cfg, ShieldSettings(limits_file="so101"), control_hz=100.0)
        start = loop.connect().position
        target = start + np.array([0.3, -0.2, 0.2, 0.0, 0.0, 0.0])
        t0 = time.monotonic()
        state = loop.reset(target)
        took = time.monotonic() - t0
        loop.close()
    assert np.abs(state.position - target).max() < 0.05
    assert took >= 0.3 / loop.shield.config.home_speed * 0.9, "faster than home_speed"
    # Reaching the target needs the trajectories; how many the driver took depends on how the
    # two loops interleave (keep-last-1 keeps only the newest between its ticks).
    assert driver.counts["commands_received"] > 0 and driver.counts["commands_rejected"] == 0


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="not an absolute ROS 2 topic name"):
        Ros2Config(state_topic="joint_states")
    with pytest.raises(ValueError, match="ros_joint_names has 2 names for 6"):
        Ros2Config(ros_joint_names=("a", "b"))
    with pytest.raises(ValueError, match="domain_id=400 is out of range"):
        Ros2Config(domain_id=400)
    with pytest.raises(ValueError, match="command_type='velocity'"):
        Ros2Config(command_type="velocity")
    assert check_topic("/a_1/b", "x") == "/a_1/b"
    with pytest.raises(ValueError, match="x='/a//b'"):
        check_topic("/a//b", "x")
