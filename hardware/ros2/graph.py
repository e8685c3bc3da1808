"""Announce a plain-DDS participant as a ROS 2 node in the ROS graph.

ROS 2 nodes are not DDS entities: every rmw layer publishes, per participant, a
``rmw_dds_common/msg/ParticipantEntitiesInfo`` on the DDS topic ``ros_discovery_info`` (no
``rt`` prefix; reliable, transient local, keep last 1) naming the participant's nodes and the
GUIDs of each node's readers and writers (rmw_dds_common ``GraphCache``; ROS 2 design "Node to
Participant mapping"). ``ros2 node list`` and ``ros2 topic info -v`` read it; without it our
endpoints show as ``_CREATED_BY_BARE_DDS_APP_``. :class:`GraphAnnouncer` publishes the same
message, again each time an endpoint is added.

Needs the ``cyclonedds`` Python package; no ``from __future__ import annotations`` (cyclonedds
resolves the field annotations at run time).
"""

from dataclasses import dataclass, field
from typing import Any

import cyclonedds.idl.annotations as annotate
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import array, bounded_str, sequence, uint8

DISCOVERY_TOPIC = "ros_discovery_info"


@dataclass
@annotate.final
class Gid(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
    """``rmw_dds_common/Gid``: a DDS GUID (12-byte prefix, 4-byte entity id), since Iron."""

    data: array[uint8, 16] = field(default_factory=lambda: [0] * 16)


@dataclass
@annotate.final
class NodeEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
    """``rmw_dds_common/NodeEntitiesInfo``: one node and its endpoints."""

    node_namespace: bounded_str[256] = "/"
    node_name: bounded_str[256] = ""
    reader_gid_seq: sequence[Gid] = field(default_factory=list)
    writer_gid_seq: sequence[Gid] = field(default_factory=list)


@dataclass
@annotate.final
class ParticipantEntitiesInfo(IdlStruct,
                              typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
    """``rmw_dds_common/ParticipantEntitiesInfo``: the nodes of one participant."""

    gid: Gid = field(default_factory=Gid)
    node_entities_info_seq: sequence[NodeEntitiesInfo] = field(default_factory=list)


def gid(entity: Any) -> Gid:
    """The :class:`Gid` of a cyclonedds entity (its GUID bytes, as rmw layers copy them)."""
    return Gid(data=list(entity.guid.bytes))


class GraphAnnouncer:
    """Publishes one node of ``participant`` on ``ros_discovery_info``.

    Args:
        participant: a cyclonedds ``DomainParticipant``.
        node_name: the node's name (``ros2 node list`` shows ``/<node_name>``).
        namespace: the node's namespace.
    """

    def __init__(self, participant: Any, node_name: str, namespace: str = "/") -> None:
        from cyclonedds.core import Policy
        from cyclonedds.pub import DataWriter
        from cyclonedds.qos import Qos
        from cyclonedds.topic import Topic
        from cyclonedds.util import duration

        self._participant = participant
        self._node = NodeEntitiesInfo(node_namespace=namespace, node_name=node_name)
        qos = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)),
                  Policy.History.KeepLast(1), Policy.Durability.TransientLocal,
                  Policy.DataRepresentation(use_cdrv0_representation=True))
        topic = Topic(participant, DISCOVERY_TOPIC, ParticipantEntitiesInfo, qos=qos)
        self._writer = DataWriter(participant, topic, qos)
        self.announce()

    def add(self, entity: Any, *, reader: bool) -> None:
        """Count ``entity`` (a DataReader if ``reader``, else a DataWriter) as the node's and
        announce again."""
        (self._node.reader_gid_seq if reader else self._node.writer_gid_seq).append(gid(entity))
        self.announce()

    def announce(self) -> None:
        """Publish the node's entities now (transient local: late joiners get it too)."""
        self._writer.write(ParticipantEntitiesInfo(gid=gid(self._participant),
                                                   node_entities_info_seq=[self._node]))
