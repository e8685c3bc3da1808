"""The actor's side of a ros2_control arm: a :class:`hardware.robot.Backend` over ROS 2 topics.

Reads ``sensor_msgs/JointState`` (from ``joint_state_broadcaster``) and publishes position
targets as ``std_msgs/Float64MultiArray`` for a ``forward_position_controller`` (or a
one-point ``trajectory_msgs/JointTrajectory`` for a ``joint_trajectory_controller``). Also:

- ``estop_topic`` (``std_msgs/Bool``): ``true`` latches an e-stop: the arm holds its last
  target, no other command goes out, and :attr:`Ros2Robot.on_estop` is called (the composition
  root connects the safety shield's e-stop there); ``true`` on ``reset_topic`` releases it.
- ``next_episode_topic`` (``std_msgs/Bool``): ``true`` calls :attr:`Ros2Robot.on_next_episode`
  (the operator's gate between episodes, ``runtime.episode_gate=topic``).
- ``status_topic`` (``std_msgs/String``): one JSON object every ``status_every_s``: joint
  states received and rejected, commands sent, the e-stop, and whatever the
  :attr:`Ros2Robot.status_sources` add (the control loop's tick lateness, shield
  interventions, achieved UTD).

Passive, like every backend: the transport is polled, and the status published, only from
:meth:`Ros2Robot.read` and :meth:`Ros2Robot.write`, on the control loop's thread.

Joint-state messages that lack one of the configured joints, or whose arrays do not match
their names, are rejected and counted (``joint_states_rejected``), never half-used; the log
gets at most one line a second about them, with a count per reason (:class:`RejectionLog`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mbpo_arm.hardware.errors import RobotError
from mbpo_arm.hardware.robot import JointLimits, RobotState, check_command
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.transport import COMMANDS, EVENTS, QosProfile, Transport, make_transport

log = logging.getLogger(__name__)


class RejectionLog:
    """Rejected messages, logged at most once per ``every_s`` with a count per reason.

    The first rejection is logged at once; later ones are counted and summed up in the next
    line that is due (from :meth:`note` or :meth:`flush`), so a driver that sends bad
    messages at 100 Hz costs one warning a second, whatever the mix of reasons.

    Args:
        what: what is rejected, e.g. ``"joint states on /joint_states"``.
        every_s: the least time between two lines.
        clock: the time source (seconds).
    """

    def __init__(self, what: str, every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.every_s, self._clock = what, float(every_s), clock
        self._pending: dict[str, int] = {}
        self._last = -float("inf")

    def note(self, reason: str) -> None:
        """Count one rejection for ``reason``; log if a line is due."""
        self._pending[reason] = self._pending.get(reason, 0) + 1
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Log the counts since the last line if a line is due (or ``force``)."""
        now = self._clock()
        if not self._pending or (not force and now - self._last < self.every_s):
            return
        total = sum(self._pending.values())
        reasons = "; ".join(f"{n} because {r}" for r, n in self._pending.items())
        log.warning("rejected %d %s: %s", total, self.what, reasons)
        self._pending.clear()
        self._last = now


class Ros2Robot:
    """A ros2_control arm as a :class:`hardware.robot.Backend` (see the module docstring).

    Args:
        config: the :class:`Ros2Config`.
        transport: a ready :class:`Transport`; None: made from the config in :meth:`connect`.
        control_hz: the control loop's rate (a trajectory point is due one period ahead).

    Attributes:
        joint_names, limits: as the Backend interface says.
        on_estop: called with a source name when an e-stop arrives on ``estop_topic``.
        on_estop_reset: called with a source name when ``reset_topic`` releases it; raising
            RuntimeError there keeps the e-stop latched.
        on_next_episode: called with a source name when ``true`` arrives on
            ``next_episode_topic`` (on the control loop's thread, in ``read``).
        status_sources: functions whose dicts are merged into each status message.
        estopped: whether the e-stop is latched.
        counts: messages received, rejected and sent, ticks, e-stops.
    """

    def __init__(self, config: Ros2Config | None = None,
                 transport: Transport | None = None, control_hz: float = 20.0) -> None:
        self.config = config if config is not None else Ros2Config()
        self.joint_names = self.config.joint_names
        c = self.config
        self.limits = JointLimits(lower=np.array(c.lower), upper=np.array(c.upper),
                                  velocity=np.array(c.velocity), effort=np.array(c.effort))
        self.control_period = 1.0 / float(control_hz)
        self.on_estop: Callable[[str], None] | None = None
        self.on_estop_reset: Callable[[str], None] | None = None
        self.on_next_episode: Callable[[str], None] | None = None
        self.status_sources: list[Callable[[], dict[str, Any]]] = []
        self.estopped = False
        self._transport = transport
        self._wire_index = {n: i for i, n in enumerate(self.config.ros_joint_names)}
        self._state: RobotState | None = None
        self._command: np.ndarray | None = None
        self._publish_command: Callable[[Any], None] | None = None
        self._publish_status: Callable[[Any], None] | None = None
        self._next_status = 0.0
        self.counts = {"joint_states_received": 0, "joint_states_rejected": 0,
                       "commands_sent": 0, "ticks": 0, "estops": 0}
        self.last_rejection = ""
        self._rejections = RejectionLog(f"joint state(s) on {self.config.state_topic}")

    @property
    def home_position(self) -> np.ndarray:
        """``[J]`` the configured home pose (mid-range where none is configured)."""
        if self.config.home is not None:
            return self.limits.clip(np.array(self.config.home))
        return (self.limits.lower + self.limits.upper) / 2

    @property
    def transport_name(self) -> str:
        """``rclpy`` or ``cyclonedds`` once connected."""
        return self._transport.name if self._transport is not None else "unconnected"

    # ---------------------------------------------------------------- Backend interface
    def connect(self) -> None:
        """Join the domain, open the topics and wait for the first valid joint state.

        Raises:
            TimeoutError: no valid ``JointState`` within ``connect_timeout_s`` (the message
                names the topic, the domain and any rejection reason).
        """
        if self._publish_command is not None:
            return
        from mbpo_arm.hardware.ros2 import messages as msg

        cfg = self.config
        self._state = None  # a reconnect waits for a fresh state too
        if self._transport is None:
            self._transport = make_transport(cfg.transport, cfg.domain_id, cfg.node_name)
        t = self._transport
        t.subscribe(cfg.state_topic, msg.JointState,
                    QosProfile(reliable=False, depth=cfg.state_qos_depth), self._on_joint_state)
        t.subscribe(cfg.estop_topic, msg.Bool, EVENTS, self._on_estop)
        t.subscribe(cfg.reset_topic, msg.Bool, EVENTS, self._on_reset)
        t.subscribe(cfg.next_episode_topic, msg.Bool, EVENTS, self._on_next_episode)
        if cfg.command_type == "position":
            self._publish_command = t.publisher(cfg.command_topic, msg.Float64MultiArray,
                                                COMMANDS)
        else:
            self._publish_command = t.publisher(cfg.trajectory_topic, msg.JointTrajectory,
                                                COMMANDS)
        self._publish_status = t.publisher(cfg.status_topic, msg.String, EVENTS)
        end = time.monotonic() + cfg.connect_timeout_s
        while self._state is None and time.monotonic() < end:
            if t.poll() == 0:
                time.sleep(0.005)
        if self._state is None:
            why = self._no_state_reason(t)
            self.close()
            raise TimeoutError(f"no sensor_msgs/JointState on {cfg.state_topic} (domain "
                               f"{cfg.domain_id}, via {t.name}) within "
                               f"{cfg.connect_timeout_s:g} s{why}")
        self._command = self._state.position.copy()

    def _no_state_reason(self, t: Transport) -> str:
        """Why ``connect`` got no valid state: rejections, matched but silent publishers, or
        no publisher at all."""
        topic, seen = self.config.state_topic, self.counts["joint_states_rejected"]
        if seen:
            return f"; {seen} rejected, last because {self.last_rejection}"
        discovered, matched = t.endpoints(topic)
        if discovered or matched:
            how = (f"{matched} matched" if matched else "none matched")
            return (f"; {max(discovered, matched)} publisher(s) of {topic} found ({how}) but no "
                    "data arrived: likely type information (a Fast DDS 3 / ROS 2 Kilted peer "
                    "whose type information Cyclone DDS rejects: check CYCLONEDDS_URI) or QoS "
                    "(a publisher this best-effort subscription cannot take); see "
                    "docs/hardware/ros2.md")
        return (f"; is the arm's driver running (ros2 topic echo {topic}; for the twin: "
                "python -m mbpo_arm.sim.ros2_twin_driver)?")

    def close(self) -> None:
        """Publish a last status (if it ever ticked) and leave the domain (the controller
        holds its last target). Idempotent."""
        self._rejections.flush(force=True)
        if self._transport is not None:
            if self._publish_status is not None and self.counts["ticks"]:
                self.publish_status()
            self._transport.close()
        self._transport = None
        self._publish_command = self._publish_status = None

    def read(self) -> RobotState:
        """The newest valid joint state ``[J]`` (stamped with ``time.monotonic()`` at receipt);
        publishes the status when due.

        Raises:
            RuntimeError: not connected.
            hardware.errors.RobotError: the newest state is older than ``state_timeout_s``
                (the driver stopped publishing).
        """
        self._poll()
        if self._state is None:
            raise RuntimeError("Ros2Robot.read before connect(); call connect() first")
        if self._publish_status is not None and time.monotonic() >= self._next_status:
            self.publish_status()
            self._rejections.flush()
        age = time.monotonic() - self._state.stamp
        if age > self.config.state_timeout_s:
            raise RobotError(f"the newest joint state on {self.config.state_topic} is "
                             f"{age:.2f} s old (backend.state_timeout_s="
                             f"{self.config.state_timeout_s:g}); the arm's driver stopped")
        return self._state

    def write(self, position: np.ndarray) -> np.ndarray:
        """Publish ``[J]`` joint positions clipped to the limits; return what was sent. While
        the e-stop is latched, the held target is sent instead (and returned)."""
        command = check_command(position, self.joint_names)
        self._poll()  # an e-stop that arrived since the last tick blocks this command
        if self.estopped and self._command is not None:
            command = self._command
        sent = self.limits.clip(command)
        self._publish(sent)
        self._command = sent
        self.counts["ticks"] += 1
        return sent.copy()

    # --------------------------------------------------------------------------- status
    def stats(self) -> dict[str, Any]:
        """The node's figures: counts, the e-stop, plus the sources'."""
        out: dict[str, Any] = {**self.counts, "estopped": self.estopped,
                               "transport": self.transport_name,
                               "last_rejection": self.last_rejection}
        for source in self.status_sources:
            out.update(source())
        return out

    def publish_status(self) -> None:
        """Publish :meth:`stats` as JSON on ``status_topic`` now."""
        from mbpo_arm.hardware.ros2.messages import String

        self._next_status = time.monotonic() + self.config.status_every_s
        if self._publish_status is not None:
            self._publish_status(String(data=json.dumps(self.stats())))

    # ------------------------------------------------------------------------- internals
    def _poll(self) -> None:
        if self._transport is not None:
            self._transport.poll()

    def _publish(self, sent: np.ndarray) -> None:
        from mbpo_arm.hardware.ros2 import messages as msg

        if self._publish_command is None:
            raise RuntimeError("Ros2Robot.write before connect(); call connect() first")
        if self.config.command_type == "position":
            self._publish_command(msg.Float64MultiArray(data=sent.tolist()))
        else:
            ns = int(self.control_period * 1e9)
            point = msg.JointTrajectoryPoint(
                positions=sent.tolist(),
                time_from_start=msg.Duration(sec=ns // 10**9, nanosec=ns % 10**9))
            self._publish_command(msg.JointTrajectory(
                joint_names=list(self.config.ros_joint_names), points=[point]))
        self.counts["commands_sent"] += 1

    def _reject(self, reason: str) -> None:
        self.counts["joint_states_rejected"] += 1
        self._rejections.note(reason)
        self.last_rejection = reason

    def _on_joint_state(self, js: Any) -> None:
        """Keep ``js`` as the newest state if it names every configured joint consistently."""
        now = time.monotonic()
        self.counts["joint_states_received"] += 1
        names = list(js.name)
        missing = [n for n in self.config.ros_joint_names if n not in names]
        if missing:
            return self._reject(f"it lacks joints {missing} (it has {names}); set "
                                "backend.ros_joint_names to the arm's joint names")
        position, velocity = np.asarray(js.position, float), np.asarray(js.velocity, float)
        if len(position) != len(names) or len(velocity) not in (0, len(names)):
            return self._reject(f"{len(names)} names but {len(position)} positions and "
                                f"{len(velocity)} velocities")
        idx = [names.index(n) for n in self.config.ros_joint_names]
        q = position[idx]
        if velocity.size:
            dq = velocity[idx]
        elif self._state is not None and now > self._state.stamp:  # no velocities: differences
            dq = (q - self._state.position) / (now - self._state.stamp)
        else:
            dq = np.zeros_like(q)
        if not (np.isfinite(q).all() and np.isfinite(dq).all()):
            return self._reject("non-finite positions or velocities")
        self._state = RobotState(position=q, velocity=dq, stamp=now)

    def _on_estop(self, message: Any) -> None:
        if not message.data or self.estopped:
            return
        self.estopped = True
        self.counts["estops"] += 1
        source = f"ros2:{self.config.estop_topic}"
        log.warning("e-stop from %s: holding position", source)
        if self.on_estop is not None:
            self.on_estop(source)

    def _on_reset(self, message: Any) -> None:
        """Release the e-stop, unless :attr:`on_estop_reset` refuses (raises RuntimeError,
        as the shield's e-stop does while its trigger file exists)."""
        if not message.data or not self.estopped:
            return
        source = f"ros2:{self.config.reset_topic}"
        if self.on_estop_reset is not None:
            try:
                self.on_estop_reset(source)
            except RuntimeError as err:
                log.warning("e-stop release from %s refused: %s", source, err)
                return
        self.estopped = False
        log.warning("e-stop released from %s", source)

    def _on_next_episode(self, message: Any) -> None:
        if message.data and self.on_next_episode is not None:
            self.on_next_episode(f"ros2:{self.config.next_episode_topic}")
