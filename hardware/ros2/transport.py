"""Publish and subscribe ROS 2 topics: through rclpy where ROS 2 is installed, else plain DDS.

One small interface, :class:`Transport`, two implementations:

- :class:`RclpyTransport`: an rclpy node (a shell with ROS 2 sourced);
- :class:`CycloneTransport`: a Cyclone DDS participant (``pip install cyclonedds``) that puts
  the same bytes on the wire as a ROS 2 node: topic ``/joint_states`` is the DDS topic
  ``rt/joint_states``, the types are those of :mod:`hardware.ros2.messages`, and the QoS are
  ROS 2's own profiles (``rmw_qos_profile_sensor_data`` and a reliable keep-last-1), so
  ``ros2 topic echo /joint_states`` on a ROS 2 machine in the same domain sees the traffic.
  It applies the ROS 2 environment (:mod:`hardware.ros2.dds_config`: Fast DDS 3 type
  information, ``ROS_LOCALHOST_ONLY``, ``ROS_AUTOMATIC_DISCOVERY_RANGE``) and announces its
  node in the ROS graph (:mod:`hardware.ros2.graph`), so ``ros2 node list`` shows it.

Messages are handed to callbacks only inside :meth:`Transport.poll`, on the caller's thread, so
the robot's control loop needs no locks. Publishing takes the dataclasses of
:mod:`hardware.ros2.messages`; callbacks receive either those or rclpy's message objects,
which have the same field names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Protocol

from mbpo_arm.hardware.ros2.config import TRANSPORTS

TAKE_MAX = 64


@dataclass(frozen=True)
class QosProfile:
    """The QoS of one topic (the subset ROS 2's named profiles use).

    Attributes:
        reliable: reliable delivery (True) or best effort (False).
        depth: history depth (keep last ``depth``); the durability is always volatile.
    """

    reliable: bool
    depth: int


# rmw_qos_profile_sensor_data (rmw/qos_profiles.h): best effort, keep last 5, volatile.
SENSOR_DATA = QosProfile(reliable=False, depth=5)
# Commands: only the newest target matters, and it must arrive.
COMMANDS = QosProfile(reliable=True, depth=1)
# E-stop, reset and status: reliable, a short history so that no event is lost.
EVENTS = QosProfile(reliable=True, depth=10)


class Transport(Protocol):
    """Topics of one ROS 2 domain, as one node sees them."""

    name: str  # "rclpy" or "cyclonedds"

    def publisher(self, topic: str, msg_type: type, qos: QosProfile) -> Callable[[Any], None]:
        """A function that publishes a ``msg_type`` instance on ``topic`` (e.g. ``/a/b``)."""

    def subscribe(self, topic: str, msg_type: type, qos: QosProfile,
                  callback: Callable[[Any], None]) -> None:
        """Call ``callback(msg)`` for each message on ``topic``, from :meth:`poll`."""

    def poll(self) -> int:
        """Hand every message received since the last call to its callback; return how many."""

    def endpoints(self, topic: str) -> tuple[int, int]:
        """``(discovered, matched)``: remote endpoints on ``topic`` that discovery found
        (publishers for our subscription, subscribers for our publisher), and how many of them
        matched ours (same type name and compatible QoS)."""

    def close(self) -> None:
        """Leave the domain. Idempotent."""


def rclpy_available() -> bool:
    """Whether ``import rclpy`` works here (a shell with ROS 2 sourced)."""
    try:
        importlib.import_module("rclpy")
    except ImportError:
        return False
    return True


def make_transport(kind: str, domain_id: int, node_name: str) -> Transport:
    """The transport ``kind`` (``auto``: rclpy where it imports, else cyclonedds).

    Raises:
        ValueError: an unknown ``kind``, or one whose package is not installed (the message
            says what to install).
    """
    if kind not in TRANSPORTS:
        raise ValueError(f"backend.transport={kind!r} is unknown; choose one of {TRANSPORTS}")
    if kind == "rclpy" or (kind == "auto" and rclpy_available()):
        if not rclpy_available():
            raise ValueError("backend.transport=rclpy but rclpy does not import; source your "
                             "ROS 2 setup (source /opt/ros/<distro>/setup.bash) or use "
                             "backend.transport=cyclonedds")
        return RclpyTransport(domain_id, node_name)
    try:
        importlib.import_module("cyclonedds")
    except ImportError:
        raise ValueError("the ros2 backend needs rclpy (a ROS 2 install) or the cyclonedds "
                         "package; pip install cyclonedds") from None
    return CycloneTransport(domain_id, node_name)


# ----------------------------------------------------------------------------- Cyclone DDS
class CycloneTransport:
    """A Cyclone DDS participant speaking ROS 2's wire format (see the module docstring).

    Args:
        domain_id: the DDS domain, ``ROS_DOMAIN_ID`` on the ROS 2 side (0-232).
        node_name: the ROS 2 node this participant announces (``ros_discovery_info``); None:
            none (a bare DDS participant, as the tests' stand-in peers are).
    """

    name = "cyclonedds"

    def __init__(self, domain_id: int, node_name: str | None = None) -> None:
        from cyclonedds.domain import DomainParticipant

        from mbpo_arm.hardware.ros2.dds_config import domain

        self.domain_id = int(domain_id)
        domain(self.domain_id)  # the ROS 2 settings, before the first participant
        self._participant: Any = DomainParticipant(self.domain_id)
        self._graph: Any = None
        if node_name is not None:
            from mbpo_arm.hardware.ros2.graph import GraphAnnouncer

            self._graph = GraphAnnouncer(self._participant, node_name)
        self._topics: dict[str, Any] = {}
        self._readers: list[tuple[Any, type, Callable[[Any], None]]] = []
        self._writers: list[Any] = []
        self._endpoints: dict[str, list[Any]] = {}  # topic -> our readers and writers

    def _topic(self, topic: str, msg_type: type) -> Any:
        from cyclonedds.topic import Topic

        if topic not in self._topics:
            # ROS 2 topic names map to DDS as "rt" + name (rmw_dds_common, "ros_topic_prefix").
            self._topics[topic] = Topic(self._participant, "rt" + topic, msg_type)
        return self._topics[topic]

    @staticmethod
    def _qos(qos: QosProfile) -> Any:
        from cyclonedds.core import Policy
        from cyclonedds.qos import Qos
        from cyclonedds.util import duration

        reliability = (Policy.Reliability.Reliable(duration(milliseconds=100)) if qos.reliable
                       else Policy.Reliability.BestEffort)
        # XCDR1 (classic CDR) is what ROS 2's rmw layers write and expect.
        return Qos(reliability, Policy.History.KeepLast(qos.depth), Policy.Durability.Volatile,
                   Policy.DataRepresentation(use_cdrv0_representation=True))

    def publisher(self, topic: str, msg_type: type, qos: QosProfile) -> Callable[[Any], None]:
        from cyclonedds.pub import DataWriter

        writer = DataWriter(self._participant, self._topic(topic, msg_type), self._qos(qos))
        self._writers.append(writer)
        self._added(topic, writer, reader=False)
        return writer.write

    def subscribe(self, topic: str, msg_type: type, qos: QosProfile,
                  callback: Callable[[Any], None]) -> None:
        from cyclonedds.sub import DataReader

        reader = DataReader(self._participant, self._topic(topic, msg_type), self._qos(qos))
        self._readers.append((reader, msg_type, callback))
        self._added(topic, reader, reader=True)

    def listen(self, topic: str, msg_type: type, qos: QosProfile,
               callback: Callable[[Any], None]) -> None:
        """Call ``callback(msg)`` on the middleware's thread as each message lands (for
        timing; the control loop uses :meth:`subscribe`, which needs no locks)."""
        from cyclonedds.core import Listener
        from cyclonedds.sub import DataReader

        def on_data_available(reader: Any) -> None:
            for sample in reader.take(N=TAKE_MAX):
                if isinstance(sample, msg_type):
                    callback(sample)

        reader = DataReader(self._participant, self._topic(topic, msg_type), self._qos(qos),
                            listener=Listener(on_data_available=on_data_available))
        self._writers.append(reader)  # kept alive until close()
        self._added(topic, reader, reader=True)

    def _added(self, topic: str, entity: Any, *, reader: bool) -> None:
        self._endpoints.setdefault(topic, []).append(entity)
        if self._graph is not None:
            self._graph.add(entity, reader=reader)

    def endpoints(self, topic: str) -> tuple[int, int]:
        from cyclonedds.builtin import (
            BuiltinDataReader,
            BuiltinTopicDcpsPublication,
            BuiltinTopicDcpsSubscription,
        )
        from cyclonedds.pub import DataWriter

        ours = self._endpoints.get(topic, [])
        matched = sum(e.get_publication_matched_status().current_count
                      if isinstance(e, DataWriter)
                      else e.get_subscription_matched_status().current_count for e in ours)
        wanted = {BuiltinTopicDcpsSubscription if isinstance(e, DataWriter)
                  else BuiltinTopicDcpsPublication for e in ours}
        me, discovered = self._participant.guid, 0
        for builtin in wanted:  # the discovery data, read (not taken) at the time of asking
            reader = BuiltinDataReader(self._participant, builtin)
            discovered += sum(1 for e in reader.read(N=1024)
                              if e.topic_name == "rt" + topic and e.participant_key != me)
        return discovered, matched

    def poll(self) -> int:
        count = 0
        for reader, msg_type, callback in self._readers:
            for sample in reader.take(N=TAKE_MAX):
                if isinstance(sample, msg_type):  # skip state-change (invalid) samples
                    callback(sample)
                    count += 1
        return count

    def close(self) -> None:
        # Dropping the participant deletes its readers and writers (DDS entity tree).
        self._readers.clear()
        self._writers.clear()
        self._endpoints.clear()
        self._topics.clear()
        self._graph = self._participant = None


# ------------------------------------------------------------------------------------ rclpy
class RclpyTransport:
    """An rclpy node; our dataclass messages are copied into rclpy's message classes.

    Args:
        domain_id: passed to ``rclpy.init`` (overrides ``ROS_DOMAIN_ID``).
        node_name: the node's name (``ros2 node list`` shows it).
    """

    name = "rclpy"

    def __init__(self, domain_id: int, node_name: str) -> None:
        import rclpy
        from rclpy.context import Context

        self._rclpy = rclpy
        self._context = Context()
        rclpy.init(context=self._context, domain_id=int(domain_id))
        self._node: Any = rclpy.create_node(node_name, context=self._context)
        from rclpy.executors import SingleThreadedExecutor

        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._pending: list[tuple[Callable[[Any], None], Any]] = []
        self._publishers: dict[str, list[Any]] = {}
        self._subscribed: set[str] = set()

    @staticmethod
    def _ros_class(msg_type: type) -> type:
        from mbpo_arm.hardware.ros2.messages import ros_type_name

        package, _, name = ros_type_name(msg_type).split("/")
        return getattr(importlib.import_module(f"{package}.msg"), name)

    @staticmethod
    def _qos(qos: QosProfile) -> Any:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
        from rclpy.qos import QoSProfile as RosQos

        return RosQos(history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
                      durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if qos.reliable
                      else ReliabilityPolicy.BEST_EFFORT)

    def publisher(self, topic: str, msg_type: type, qos: QosProfile) -> Callable[[Any], None]:
        ros_class = self._ros_class(msg_type)
        pub = self._node.create_publisher(ros_class, topic, self._qos(qos))
        self._publishers.setdefault(topic, []).append(pub)
        return lambda msg: pub.publish(to_ros(msg, ros_class))

    def subscribe(self, topic: str, msg_type: type, qos: QosProfile,
                  callback: Callable[[Any], None]) -> None:
        self._node.create_subscription(self._ros_class(msg_type), topic,
                                       lambda msg: self._pending.append((callback, msg)),
                                       self._qos(qos))
        self._subscribed.add(topic)

    def endpoints(self, topic: str) -> tuple[int, int]:
        # rclpy reports matches for publishers only; for a subscription, the graph's
        # publishers stand in for the matched ones.
        pubs = self._publishers.get(topic, [])
        discovered = self._node.count_subscribers(topic) if pubs else 0
        matched = sum(p.get_subscription_count() for p in pubs)
        if topic in self._subscribed:
            publishers = self._node.count_publishers(topic)
            discovered, matched = discovered + publishers, matched + publishers
        return discovered, matched

    def poll(self) -> int:
        # spin_once(0) runs one ready callback; loop until none is ready.
        while True:
            before = len(self._pending)
            self._executor.spin_once(timeout_sec=0.0)
            if len(self._pending) == before:
                break
        pending, self._pending = self._pending, []
        for callback, msg in pending:
            callback(msg)
        return len(pending)

    def close(self) -> None:
        if self._node is not None:
            self._executor.shutdown()
            self._node.destroy_node()
            self._rclpy.shutdown(context=self._context)
            self._node = None


def to_ros(msg: Any, ros_class: type) -> Any:
    """An instance of rclpy's ``ros_class`` with the fields of our dataclass ``msg``."""
    out = ros_class()
    for f in fields(msg):
        value = getattr(msg, f.name)
        if is_dataclass(value):
            value = to_ros(value, type(getattr(out, f.name)))
        elif isinstance(value, list) and value and is_dataclass(value[0]):
            item_class = RclpyTransport._ros_class(type(value[0]))
            value = [to_ros(v, item_class) for v in value]
        setattr(out, f.name, value)
    return out
