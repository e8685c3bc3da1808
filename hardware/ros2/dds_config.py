"""The Cyclone DDS settings that make a plain-DDS participant behave like a ROS 2 node.

ROS 2 configures its middleware from a few environment variables; a bare Cyclone DDS
participant knows none of them. :func:`cyclone_config` turns them into Cyclone's XML, and
:func:`domain` creates each DDS domain of this process once, with that XML first and the
user's own ``CYCLONEDDS_URI`` after it (Cyclone merges a comma-separated list in order, so
the user's settings win where both set the same key):

- Fast DDS 3 (ROS 2 Kilted) sends XTypes type information that Cyclone DDS cannot parse
  ("invalid type object"); Cyclone then never delivers data to or from it although discovery
  and matching succeed. ``Compatibility/IgnoreTypeInformation`` for Fast DDS's vendor id
  (1.15) makes Cyclone match on the type name, as Fast DDS 2 (Jazzy) peers are matched.
- ``ROS_LOCALHOST_ONLY=1`` or ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: the loopback
  interface only, no multicast, unicast discovery of the participants on 127.0.0.1 (what ROS 2
  nodes in such a shell expect; REP 2009 and the "Improved Dynamic Discovery" design);
  ``OFF``: the loopback interface and no peers, so only this process is reached;
  ``ROS_STATIC_PEERS`` (semicolon-separated hosts) are added as unicast peers.
- ``ROS_DOMAIN_ID`` is read by :class:`mbpo_arm.hardware.ros2.config.Ros2Config`.

Light: imports cyclonedds only inside :func:`domain`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# DDSI-RTPS vendor id of eProsima Fast DDS (OMG, "DDS-RTPS Vendor and Product IDs").
FAST_DDS_VENDOR = "1.15"
# Participant indices probed on a unicast-only host (ROS 2 supports up to 32 per host there).
MAX_LOCAL_PARTICIPANTS = 32
RANGES = ("SUBNET", "LOCALHOST", "OFF", "SYSTEM_DEFAULT")

_domains: dict[int, Any] = {}  # domain id -> cyclonedds Domain, alive for the process


def discovery_range(environ: Mapping[str, str]) -> str:
    """``LOCALHOST``, ``OFF`` or ``SUBNET`` as a ROS 2 node in ``environ`` would use.

    Raises:
        ValueError: an unknown ``ROS_AUTOMATIC_DISCOVERY_RANGE``.
    """
    if environ.get("ROS_LOCALHOST_ONLY", "") == "1":  # deprecated in Jazzy, still honoured
        return "LOCALHOST"
    value = environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").strip().upper()
    if value in ("", "SYSTEM_DEFAULT"):
        return "SUBNET"
    if value not in RANGES:
        raise ValueError(f"ROS_AUTOMATIC_DISCOVERY_RANGE={value!r} is unknown; use one of "
                         f"{', '.join(RANGES)}")
    return value


def cyclone_config(environ: Mapping[str, str] | None = None) -> str:
    """Cyclone DDS's XML for a ROS 2-like participant in ``environ`` (default: this process's
    environment), followed by the user's ``CYCLONEDDS_URI`` if set."""
    env = os.environ if environ is None else environ
    scope = discovery_range(env)
    general = discovery = ""
    peers = [p.strip() for p in env.get("ROS_STATIC_PEERS", "").split(";") if p.strip()]
    if scope in ("LOCALHOST", "OFF"):
        general = ("<General><Interfaces><NetworkInterface address=\"127.0.0.1\" "
                   "multicast=\"false\"/></Interfaces><AllowMulticast>false</AllowMulticast>"
                   "</General>")
        peers = (["127.0.0.1"] + peers) if scope == "LOCALHOST" else []
    if peers or scope == "OFF":
        peer_xml = "".join(f"<Peer address=\"{p}\"/>" for p in peers)
        discovery = (f"<Discovery><ParticipantIndex>auto</ParticipantIndex>"
                     f"<MaxAutoParticipantIndex>{MAX_LOCAL_PARTICIPANTS}"
                     f"</MaxAutoParticipantIndex><Peers>{peer_xml}</Peers></Discovery>")
    ours = ("<CycloneDDS><Domain id=\"any\"><Compatibility><IgnoreTypeInformation>"
            f"{FAST_DDS_VENDOR}</IgnoreTypeInformation></Compatibility>{general}{discovery}"
            "</Domain></CycloneDDS>")
    user = env.get("CYCLONEDDS_URI", "").strip()
    return f"{ours},{user}" if user else ours


def domain(domain_id: int) -> Any:
    """This process's Cyclone DDS domain ``domain_id``, created once with
    :func:`cyclone_config` (participants made afterwards join it).

    Raises:
        ValueError: Cyclone refused the configuration (the message names the variables).
    """
    if domain_id not in _domains:
        from cyclonedds.core import DDSException
        from cyclonedds.domain import Domain

        try:
            _domains[domain_id] = Domain(domain_id, cyclone_config())
        except DDSException as err:
            raise ValueError(f"Cyclone DDS refused its configuration for domain {domain_id} "
                             f"({err}); check CYCLONEDDS_URI and the ROS_* variables") from None
    return _domains[domain_id]
