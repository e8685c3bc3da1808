"""The dataset format: round trip, and clear errors for a wrong spec or a damaged file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.dataset import (
    DatasetError,
    DatasetMeta,
    from_arrays,
    load_dataset,
    save_dataset,
    spec,
)
from mbpo_arm.agent.math import annealed_penalty, mopo_penalty, mopo_reward
from mbpo_arm.agent.replay import ReplayBuffer


def make_dataset(n_episodes: int = 3, length: int = 10, obs_dim: int = 4, act_dim: int = 2):
    rng = np.random.default_rng(0)
    n = n_episodes * length
    obs = rng.normal(size=(n + 1, obs_dim))
    truncated = np.zeros(n, bool)
    truncated[length - 1::length] = True
    meta = DatasetMeta(robot="mujoco", task="ArmReach-v0", control_hz=20.0,
                       obs_spec=spec(obs_dim), action_spec=spec(act_dim, bounded=True),
                       source="test")
    return from_arrays(meta, obs=obs[:-1], action=rng.uniform(-1, 1, (n, act_dim)),
                       reward=rng.normal(size=n), next_obs=obs[1:],
                       terminated=np.zeros(n, bool), truncated=truncated)


def test_round_trip_keeps_every_array_and_the_metadata(tmp_path: Path) -> None:
    ds = make_dataset()
    path = save_dataset(tmp_path / "d.npz", ds)
    back = load_dataset(path, obs_dim=4, act_dim=2, task="ArmReach-v0")
    for k, v in ds.data.items():
        np.testing.assert_array_equal(back.data[k], v)
        assert back.data[k].dtype == v.dtype
    assert back.meta.episodes == 3 and back.meta.transitions == 30
    assert back.meta.control_hz == 20.0 and back.meta.source == "test"
    assert back.episode_bounds() == [(0, 10), (10, 20), (20, 30)]
    replay = ReplayBuffer.from_dataset(back)
    assert len(replay) == 30 and replay.obs_dim == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"obs_dim": 19}, "obs_dim=4"), ({"act_dim": 5}, "act_dim=2"),
    ({"task": "Hopper-v5"}, "'ArmReach-v0'")])
def test_spec_mismatch_names_the_file_and_the_mismatch(tmp_path: Path, kwargs, message) -> None:
    path = save_dataset(tmp_path / "d.npz", make_dataset())
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path, **kwargs)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = save_dataset(tmp_path / "d.npz", make_dataset())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="corrupted or truncated") as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_flipped_byte_inside_an_array_fails_its_checksum(tmp_path: Path) -> None:
    ds = make_dataset()
    path = save_dataset(tmp_path / "d.npz", ds)
    raw = bytearray(path.read_bytes())
    # Flip a byte inside the stored reward values (found by their bytes, past any header).
    at = bytes(raw).find(ds.data["reward"].tobytes()[:16]) + 3
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"(CRC32|corrupted)") as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_missing_file_and_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_dataset(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="not an mbpo-arm dataset"):
        load_dataset(tmp_path / "other.npz")


def test_save_rejects_arrays_that_break_the_spec(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.data["action"] = ds.data["action"] * 3
    with pytest.raises(DatasetError, match=r"normalized to \[-1, 1\]"):
        save_dataset(tmp_path / "d.npz", ds)
    ds = make_dataset()
    ds.data["obs"] = ds.data["obs"][:, :3]
    with pytest.raises(DatasetError, match="'obs' has shape"):
        save_dataset(tmp_path / "d.npz", ds)
    assert not (tmp_path / "d.npz").exists()


def test_mopo_penalty_is_the_largest_member_std_norm() -> None:
    std = torch.tensor([[[3.0, 4.0], [0.0, 1.0]],
                        [[1.0, 0.0], [6.0, 8.0]]])  # [E=2, B=2, D=2]
    torch.testing.assert_close(mopo_penalty(std), torch.tensor([5.0, 10.0]))
    reward = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(mopo_reward(reward, std, 0.5), torch.tensor([-1.5, -3.0]))
    torch.testing.assert_close(mopo_reward(reward, std, 0.0), reward)


def test_penalty_anneals_linearly_to_zero() -> None:
    assert annealed_penalty(2.0, 0, 100) == 2.0
    assert annealed_penalty(2.0, 50, 100) == pytest.approx(1.0)
    assert annealed_penalty(2.0, 100, 100) == 0.0
    assert annealed_penalty(2.0, 500, 100) == 0.0
    assert annealed_penalty(2.0, 500, 0) == 2.0  # no schedule: constant
