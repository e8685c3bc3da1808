"""Dataset import and export through real files: a rosbag2 recording written with
``rosbags``, a Minari dataset on disk, a run directory, and ``mbpo-arm collect``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.agent.dataset import DatasetError, load_dataset, save_dataset
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.launch.cli import main
from mbpo_arm.launch.interchange import export_minari, import_minari, import_rosbag2
from tests.agent.test_dataset import make_dataset

JOINTS = ["shoulder_pitch", "elbow_pitch", "base_yaw"]
HZ, SCALE = 20.0, 0.1


def write_bag(path: Path, steps: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States at ``t_k`` and commands half a period later (a 20 Hz ros2_control loop); joint
    states list the joints in another order than ``JOINTS`` plus a gripper joint."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    JointState = ts.types["sensor_msgs/msg/JointState"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    Multi = ts.types["std_msgs/msg/Float64MultiArray"]
    Layout = ts.types["std_msgs/msg/MultiArrayLayout"]
    rng = np.random.default_rng(0)
    q = np.cumsum(rng.normal(0, 0.02, (steps, 3)), axis=0)
    qd = rng.normal(0, 0.3, (steps, 3))
    cmd = q + rng.normal(0, 0.05, (steps, 3))
    period, t0 = int(1e9 / HZ), 1_700_000_000_000_000_000
    order = [2, 0, 1]  # base_yaw, shoulder_pitch, elbow_pitch
    with Writer(path, version=9) as writer:
        js = writer.add_connection("/joint_states", JointState.__msgtype__, typestore=ts)
        cc = writer.add_connection("/forward_position_controller/commands", Multi.__msgtype__,
                                   typestore=ts)
        for k in range(steps):
            t = t0 + k * period
            stamp = Time(sec=t // 10**9, nanosec=t % 10**9)
            msg = JointState(header=Header(stamp=stamp, frame_id=""),
                             name=[JOINTS[i] for i in order] + ["gripper"],
                             position=np.r_[q[k, order], 0.5],
                             velocity=np.r_[qd[k, order], 0.0], effort=np.zeros(4))
            writer.write(js, t, ts.serialize_cdr(msg, JointState.__msgtype__))
            if k < steps - 1:
                c = Multi(layout=Layout(dim=[], data_offset=0), data=cmd[k])
                writer.write(cc, t + period // 2, ts.serialize_cdr(c, Multi.__msgtype__))
    return q, qd, cmd


def test_rosbag2_import_matches_the_recorded_messages(tmp_path: Path) -> None:
    q, qd, cmd = write_bag(tmp_path / "bag")
    ds = import_rosbag2(tmp_path / "bag", JOINTS, HZ, SCALE)
    n = len(q) - 1
    assert len(ds) == n and ds.meta.control_hz == HZ and ds.meta.obs_dim == 6
    np.testing.assert_allclose(ds.data["obs"], np.c_[q, qd][:-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds.data["next_obs"], np.c_[q, qd][1:], rtol=1e-6, atol=1e-7)
    previous = np.vstack([q[:1], cmd[:-2]])  # before the first command: the measured pose
    want = np.clip((cmd[:n] - previous) / SCALE, -1, 1)
    np.testing.assert_allclose(ds.data["action"], want, rtol=1e-5, atol=1e-6)
    assert ds.data["truncated"].tolist() == [False] * (n - 1) + [True]
    assert not ds.data["terminated"].any()
    back = load_dataset(save_dataset(tmp_path / "bag.npz", ds), obs_dim=6, act_dim=3)
    np.testing.assert_array_equal(back.data["action"], ds.data["action"])


def test_rosbag2_errors_name_the_bag(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag")
    with pytest.raises(DatasetError, match="no messages on /cmd"):
        import_rosbag2(tmp_path / "bag", JOINTS, HZ, SCALE, command_topic="/cmd")
    with pytest.raises(DatasetError, match=r"no \['wrist_roll'\]"):
        import_rosbag2(tmp_path / "bag", [*JOINTS[:2], "wrist_roll"], HZ, SCALE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot be read as a rosbag2"):
        import_rosbag2(tmp_path / "empty", JOINTS, HZ, SCALE)


def test_minari_export_import_round_trip(tmp_path: Path) -> None:
    ds = make_dataset(n_episodes=3, length=10)
    export_minari(ds, "mbpo-arm/test-v0", root=tmp_path / "minari")
    back = import_minari("mbpo-arm/test-v0", root=tmp_path / "minari")
    for k, v in ds.data.items():
        np.testing.assert_allclose(back.data[k], v, rtol=1e-6)
    assert back.meta.task == "ArmReach-v0" and back.meta.control_hz == 20.0
    assert back.meta.source.startswith("minari:mbpo-arm/test-v0")
    with pytest.raises(DatasetError, match="cannot be loaded"):
        import_minari("mbpo-arm/missing-v0", root=tmp_path / "minari")


def test_collect_then_info_and_clear_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "reach.npz"
    assert main(["collect", "task=reach", "policy=expert", "episodes=2", "noise=0.2",
                 f"out={out}"]) == 0
    ds = load_dataset(out, obs_dim=19, act_dim=5, task="ArmReach-v0")
    assert len(ds) == 200 and ds.meta.episodes == 2 and ds.meta.control_hz == 20.0
    assert ds.meta.extra["policy"] == "expert" and ds.meta.source == "collect:expert"
    assert main(["dataset", "info", str(out)]) == 0
    assert '"transitions": 200' in capsys.readouterr().out
    # a dataset of another task: one line naming the file and the sizes
    bad = save_dataset(tmp_path / "bad.npz", make_dataset())
    assert main(["pretrain", f"dataset={bad}", "task=reach", "agent=mopo_reach",
                 f"run_dir={tmp_path / 'run'}", "logger.wandb=disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "obs_dim=4" in err and "obs_dim=19" in err
    assert len(err.splitlines()) == 1
    assert main(["collect", "policy=medium", "task=hopper", f"out={tmp_path / 'h.npz'}"]) == 2
    assert "not an ArmReach task" in capsys.readouterr().err


def test_import_run_takes_the_checkpoint_replay_or_the_longer_log(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from mbpo_arm.agent.checkpoint import save_checkpoint
    from mbpo_arm.agent.runtime.replay_log import ReplayLog
    from mbpo_arm.launch.datasets import import_run

    ds = make_dataset(n_episodes=2, length=10)
    OmegaConf.save(OmegaConf.create({"backend_name": "mujoco", "seed": 3,
                                     "task": {"id": "ArmReach-v0"},
                                     "backend": {"control_hz": 50.0},
                                     "agent": {"algo": "mbpo"}}), tmp_path / "config.yaml")
    with pytest.raises(DatasetError, match="no transitions yet"):
        import_run(tmp_path)
    save_checkpoint(tmp_path, 20, {}, {"replay": ReplayBuffer.from_dataset(ds, capacity=100)})
    got = import_run(tmp_path)
    assert len(got) == 20 and got.meta.control_hz == 50.0 and got.meta.task == "ArmReach-v0"
    np.testing.assert_array_equal(got.data["obs"], ds.data["obs"])
    assert got.episode_bounds() == ds.episode_bounds()
    log = ReplayLog.open(tmp_path / "replay.log", 4, 2)
    for i in range(20):
        log.append(*(ds.data[k][i] for k in ("obs", "action", "reward", "next_obs",
                                             "terminated", "truncated")))
    log.append(ds.data["obs"][0], ds.data["action"][0], 1.0, ds.data["obs"][1], False, True)
    log.close()
    got = import_run(tmp_path)
    assert len(got) == 21 and got.data["reward"][-1] == 1.0
    with pytest.raises(DatasetError, match="not a run directory"):
        import_run(tmp_path / "checkpoints")
