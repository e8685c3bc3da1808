"""The plain-DDS path's ROS 2 settings, the rejection log, and (with real ROS 2 from the cached
venv) the node name in the ROS graph, ROS_LOCALHOST_ONLY, and the connect timeout's reason."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from mbpo_arm.hardware.ros2.dds_config import cyclone_config, discovery_range
from mbpo_arm.hardware.ros2.node import RejectionLog
from tests.hardware.ros2_helpers import fresh_domain
from tests.hardware.ros2_venvs import ROOT, ros2_python


def test_config_ignores_fast_dds_type_information_and_keeps_the_users() -> None:
    plain = cyclone_config({})
    assert "<IgnoreTypeInformation>1.15</IgnoreTypeInformation>" in plain
    assert "127.0.0.1" not in plain and "," not in plain
    merged = cyclone_config({"CYCLONEDDS_URI": "file:///etc/my.xml"})
    assert merged.startswith(plain) and merged.endswith(",file:///etc/my.xml")  # user last


def test_config_honours_the_discovery_range() -> None:
    for env in ({"ROS_LOCALHOST_ONLY": "1"}, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "localhost"}):
        assert discovery_range(env) == "LOCALHOST"
        xml = cyclone_config(env)
        assert 'NetworkInterface address="127.0.0.1"' in xml
        assert '<Peer address="127.0.0.1"/>' in xml
    off = cyclone_config({"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"})
    assert "<Peers></Peers>" in off and "<AllowMulticast>false" in off
    peers = cyclone_config({"ROS_STATIC_PEERS": "10.0.0.5; robot.local"})
    assert '<Peer address="10.0.0.5"/><Peer address="robot.local"/>' in peers
    assert discovery_range({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"}) == "SUBNET"
    with pytest.raises(ValueError, match="ROS_AUTOMATIC_DISCOVERY_RANGE='LAN' is unknown"):
        discovery_range({"ROS_AUTOMATIC_DISCOVERY_RANGE": "lan"})


def test_rejections_are_one_line_a_second_with_a_count_per_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rejections = RejectionLog("joint state(s) on /js", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for i in range(200):  # 2 s of 100 Hz, two reasons alternating
            now[0] = i * 0.01
            rejections.note("a" if i % 2 else "b")
        rejections.flush(force=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # the first at once, one after 1 s, the rest at the end
    assert lines[0] == "rejected 1 joint state(s) on /js: 1 because b"
    assert lines[1] == "rejected 100 joint state(s) on /js: 50 because a; 50 because b"
    assert sum(int(line.split()[1]) for line in lines) == 200


ROS_ARM = """
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
rclpy.init(domain_id=int(sys.argv[1]))
n = rclpy.create_node("ros_arm")
p = n.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
end, seen = time.monotonic() + float(sys.argv[2]), set()
while time.monotonic() < end:
    p.publish(JointState(name=[f"j{i}" for i in range(6)], position=[0.0] * 6))
    rclpy.spin_once(n, timeout_sec=0.02)
    seen |= {name for name, _ in n.get_node_names_and_namespaces()}
print(sorted(seen), n.count_subscribers("/joint_states"))
"""

NODE = """
import sys, time
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.node import Ros2Robot
r = Ros2Robot(Ros2Config(domain_id=int(sys.argv[1]), transport="cyclonedds",
              ros_joint_names=tuple(f"j{i}" for i in range(6)), connect_timeout_s=5))
try:
    r.connect()
    time.sleep(2.0)  # stay in the graph a while
    print("connected")
except TimeoutError as err:
    print("timeout:", err)
r.close()
"""


def pair(env: dict[str, str], seconds: float = 7.0) -> tuple[str, str]:
    python, why = ros2_python("kilted")
    if python is None:
        pytest.skip(why)
    domain = str(fresh_domain())
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    arm = subprocess.Popen([str(python), "-c", ROS_ARM, domain, str(seconds)], text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**base, **env})
    node = subprocess.run([sys.executable, "-c", textwrap.dedent(NODE), domain], text=True,
                          capture_output=True, env={**base, **env}, timeout=60)
    return node.stdout.strip(), arm.communicate(timeout=60)[0].strip()


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"ROS_LOCALHOST_ONLY": "1"}],
                         ids=["default", "ROS_LOCALHOST_ONLY"])
def test_a_kilted_graph_sees_the_node_by_name_and_data_flows(env: dict[str, str]) -> None:
    node, arm = pair(env)
    assert node == "connected", node
    assert "'mbpo_arm'" in arm and arm.endswith(" 1"), arm  # ros2 node list; 1 subscriber


@pytest.mark.slow
def test_matched_but_silent_says_type_information_or_qos() -> None:
    # The user's CYCLONEDDS_URI wins over ours: ignoring another vendor's type information
    # only brings back the Kilted failure (Cyclone cannot parse Fast DDS 3's type objects).
    uri = ("<CycloneDDS><Domain><Compatibility><IgnoreTypeInformation>1.1"
           "</IgnoreTypeInformation></Compatibility></Domain></CycloneDDS>")
    node, _ = pair({"CYCLONEDDS_URI": uri}, seconds=6.0)
    assert "publisher(s) of /joint_states found" in node and "type information" in node, node
    assert "is the arm's driver running" not in node
