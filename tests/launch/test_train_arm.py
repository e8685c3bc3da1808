"""``launch/train_arm.py``: it parses, declares every argument the README documents (and only
those), plans the right processes, and runs the ROS 2 rehearsal without ROS."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.launch import train_arm
from tests.hardware.conftest import fast_limits

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "train_arm.py"


def declared_in_file() -> dict[str, str]:
    """name -> default of the ``ARGUMENTS`` table, read from the file's syntax tree (no
    import, as ``ros2 launch`` would first parse it)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.AnnAssign | ast.Assign)
                and "ARGUMENTS" in ast.unparse(n.target if isinstance(n, ast.AnnAssign)
                                               else n.targets[0]))
    table = ast.literal_eval(node.value)
    assert all(len(row) == 3 and all(isinstance(x, str) and x or i == 1
                                     for i, x in enumerate(row)) for row in table)
    return {name: default for name, default, _ in table}


def test_declares_exactly_the_documented_arguments() -> None:
    """The docs' table of launch arguments is generated from ``ARGUMENTS`` (the docs hook
    replaces the placeholder), and ``ARGUMENTS`` is what the file declares."""
    assert declared_in_file() == {name: default for name, default, _ in train_arm.ARGUMENTS}
    assert "<!-- launch-arguments -->" in (ROOT / "docs" / "hardware" / "ros2.md").read_text()


def test_topic_defaults_are_the_backend_config() -> None:
    schema = {f.name: f.default for f in fields(Ros2Config)}
    for key in train_arm.BACKEND_KEYS:
        default = dict((n, d) for n, d, _ in train_arm.ARGUMENTS)[key]
        expected = "" if schema[key] is None else str(schema[key])
        assert default == expected, f"{key}: launch {default!r} vs configs {expected!r}"


def test_plans_the_processes_of_each_backend() -> None:
    twin, trainer = train_arm.plan(train_arm.parse(
        ["backend:=mujoco", "domain_id:=9", "overrides:=runtime.control_hz=50 seed=2"]))
    assert twin.cmd[1:3] == ["-m", "mbpo_arm.sim.ros2_twin_driver"]
    assert "backend.domain_id=9" in twin.cmd and "runtime.control_hz=50" in twin.cmd
    assert "seed=2" not in twin.cmd
    assert trainer.cmd[trainer.cmd.index("train"):][:3] == ["train", "--backend", "ros2"]
    # overrides:= wins: its runtime.control_hz replaces the argument's, never twice.
    assert [a for a in trainer.cmd if a.startswith("runtime.control_hz")] == \
        ["runtime.control_hz=50"]
    # control_hz:= is the rate of a serial arm too
    (serial,) = train_arm.plan(train_arm.parse(["backend:=serial", "control_hz:=50"]))
    assert "runtime.control_hz=50" in serial.cmd
    (only,) = train_arm.plan(train_arm.parse(["backend:=ros2"]))
    assert "backend.domain_id=" not in " ".join(only.cmd), "empty domain_id: the environment's"
    (serial,) = train_arm.plan(train_arm.parse(["backend:=serial", "port:=/dev/ttyUSB1"]))
    assert serial.cmd[-5:] == ["--backend", "serial", "robot=so101", "backend.port=/dev/ttyUSB1",
                               "runtime.control_hz=20.0"]
    with pytest.raises(ValueError, match="backend:=gazebo is unknown"):
        train_arm.plan(train_arm.parse(["backend:=gazebo"]))
    with pytest.raises(ValueError, match="'prot:=1' is not an argument.*port"):
        train_arm.parse(["prot:=1"])


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="ROS 2's launch packages are not installed (source ROS 2 to run)")
def test_ros2_launch_description_declares_the_arguments() -> None:
    from launch.actions import DeclareLaunchArgument

    description = train_arm.generate_launch_description()
    names = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert names == [name for name, _, _ in train_arm.ARGUMENTS]


@pytest.mark.slow
def test_rehearsal_without_ros_trains_and_stops_the_driver(tmp_path: Path) -> None:
    """``python launch/train_arm.py backend:=mujoco``: the twin driver and a short run."""
    run = tmp_path / "run"
    overrides = ("logger.wandb=disabled agent.sac.learning_starts=20 agent.sac.batch_size=16 "
                 "agent.sac.hidden=[32,32] trainer.total_steps=60 trainer.eval_every=60 "
                 "trainer.eval_episodes=1 task.max_episode_steps=30 "
                 f"shield.limits_file={fast_limits(tmp_path)} run_dir={run}")
    domain = 1 + (os.getpid() * 7 + 57) % 200
    proc = subprocess.run([sys.executable, str(LAUNCH_FILE), "backend:=mujoco",
                           f"domain_id:={domain}", "control_hz:=100", f"overrides:={overrides}"],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ros2_twin_driver: /joint_states at 100 Hz" in proc.stdout
    assert '"commands_received"' in proc.stdout, "the driver did not exit with its counts"
    assert (run / "checkpoints" / "latest").exists()
