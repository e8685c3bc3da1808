"""Replay buffer: ring order, batched adds, seeded sampling, flags apart, files, validation."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.dataset import FIELDS
from mbpo_arm.agent.io import atomic_save_npz, load_npz
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.types import TransitionBatch

OBS, ACT = 3, 2


def transitions(start: int, n: int) -> dict[str, np.ndarray]:
    """``n`` transitions numbered ``start, start + 1, ...``: every field encodes the index."""
    i = np.arange(start, start + n, dtype=np.float64)
    return {"obs": np.repeat(i[:, None], OBS, 1), "action": np.repeat(-i[:, None], ACT, 1),
            "reward": i / 10.0, "next_obs": np.repeat(i[:, None] + 0.5, OBS, 1),
            "terminated": i % 3 == 0, "truncated": i % 5 == 0}


def add_batch(buffer: ReplayBuffer, start: int, n: int) -> None:
    buffer.add(**transitions(start, n))


def stored_ids(buffer: ReplayBuffer) -> list[int]:
    return buffer.all()["obs"][:, 0].astype(int).tolist()


def test_single_adds_wrap_and_keep_the_newest_in_order() -> None:
    buffer = ReplayBuffer(5, OBS, ACT)
    for i in range(8):
        t = {k: v[0] for k, v in transitions(i, 1).items()}
        buffer.add(**t)
    assert len(buffer) == 5 and buffer.capacity == 5 and buffer.total_added == 8
    assert stored_ids(buffer) == [3, 4, 5, 6, 7]
    data = buffer.all()
    assert set(data) == set(FIELDS) and all(a.dtype == np.float32 for a in data.values())
    np.testing.assert_array_equal(data["next_obs"][:, 0], np.arange(3, 8) + 0.5)
    np.testing.assert_array_equal(data["reward"], np.arange(3, 8, dtype=np.float32) / 10)


@pytest.mark.parametrize("sizes", [[12], [3, 12], [4, 3, 7, 1, 5, 9], [5, 5], [2, 2, 2]])
def test_batched_adds_match_a_reference_queue(sizes: list[int]) -> None:
    buffer, reference, start = ReplayBuffer(5, OBS, ACT), deque(maxlen=5), 0
    for n in sizes:
        add_batch(buffer, start, n)
        reference.extend(range(start, start + n))
        start += n
        assert stored_ids(buffer) == list(reference)
    assert buffer.total_added == sum(sizes) and len(buffer) == len(reference)


def test_sampling_is_reproducible_with_the_same_seed() -> None:
    buffer = ReplayBuffer(100, OBS, ACT)
    add_batch(buffer, 0, 60)
    a = buffer.sample(32, np.random.default_rng(7))
    b = buffer.sample(32, np.random.default_rng(7))
    c = buffer.sample(32, np.random.default_rng(8))
    assert isinstance(a, TransitionBatch) and len(a) == 32
    for f in FIELDS:
        assert getattr(a, f).dtype == torch.float32 and torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.obs, c.obs)
    assert a.obs.shape == (32, OBS) and a.action.shape == (32, ACT) and a.reward.shape == (32,)
    assert int(a.obs.max()) < 60  # only filled rows are drawn


def test_sampling_an_empty_buffer_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(10, OBS, ACT).sample(4, np.random.default_rng(0))


def test_terminated_and_truncated_stay_apart_and_aligned() -> None:
    buffer = ReplayBuffer(50, OBS, ACT)
    add_batch(buffer, 0, 30)
    data = buffer.all()
    ids = data["obs"][:, 0].astype(int)
    np.testing.assert_array_equal(data["terminated"], (ids % 3 == 0).astype(np.float32))
    np.testing.assert_array_equal(data["truncated"], (ids % 5 == 0).astype(np.float32))
    batch = buffer.sample(64, np.random.default_rng(0))
    ids = batch.obs[:, 0].long()
    assert torch.equal(batch.terminated, (ids % 3 == 0).float())
    assert torch.equal(batch.truncated, (ids % 5 == 0).float())
    assert torch.equal(batch.action[:, 0], -ids.float())


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    buffer = ReplayBuffer(7, OBS, ACT)
    add_batch(buffer, 0, 11)  # wrapped: the oldest row is not row 0
    buffer.save(tmp_path / "replay.npz")
    loaded = ReplayBuffer.load(tmp_path / "replay.npz", obs_dim=OBS, act_dim=ACT)
    assert (len(loaded), loaded.capacity, loaded.total_added) == (7, 7, 11)
    for f in FIELDS:
        np.testing.assert_array_equal(loaded.all()[f], buffer.all()[f])
    a = buffer.sample(16, np.random.default_rng(3))
    b = loaded.sample(16, np.random.default_rng(3))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
    add_batch(buffer, 11, 3)
    add_batch(loaded, 11, 3)
    assert stored_ids(loaded) == stored_ids(buffer) == list(range(7, 14))


def test_partially_filled_buffer_round_trips(tmp_path: Path) -> None:
    buffer = ReplayBuffer(1000, OBS, ACT)
    add_batch(buffer, 0, 4)
    buffer.save(tmp_path / "r.npz")
    assert load_npz(tmp_path / "r.npz")["obs"].shape == (4, OBS)  # only filled rows on disk
    loaded = ReplayBuffer.load(tmp_path / "r.npz")
    assert loaded.capacity == 1000 and stored_ids(loaded) == [0, 1, 2, 3]


def test_load_rejects_mismatch_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "replay.npz"
    buffer = ReplayBuffer(10, OBS, ACT)
    add_batch(buffer, 0, 6)
    buffer.save(path)
    with pytest.raises(ValueError, match="obs_dim is 3 in the file, expected 4"):
        ReplayBuffer.load(path, obs_dim=4)
    arrays = load_npz(path)
    arrays["action"] = arrays["action"][:5]
    atomic_save_npz(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match=r"short\.npz.*action must have shape"):
        ReplayBuffer.load(tmp_path / "short.npz")
    arrays = load_npz(path)
    del arrays["truncated"]
    atomic_save_npz(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="missing arrays.*truncated"):
        ReplayBuffer.load(tmp_path / "old.npz")
    (tmp_path / "torn.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"torn\.npz.*corrupted or truncated"):
        ReplayBuffer.load(tmp_path / "torn.npz")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("obs", np.zeros((4, OBS + 1)), r"obs must have shape \[N, 3\] = \[4, 3\]"),
    ("action", np.zeros((4, ACT, 1)), r"action must have shape \[N, 2\] = \[4, 2\]"),
    ("reward", np.zeros((4, 1)), r"reward must have shape \[N\] = \[4\]"),
    ("next_obs", np.zeros(4), r"next_obs must have shape \[N, 3\]"),
    ("terminated", np.zeros(3), r"terminated must have shape \[N\] = \[4\]"),
    ("truncated", np.full(4, 2.0), "truncated must be 0/1"),
    ("obs", np.full((4, OBS), np.nan), "obs has non-finite"),
    ("reward", np.array([0.0, np.inf, 0.0, 0.0]), "reward has non-finite"),
    ("next_obs", np.full((4, OBS), 1e39), "next_obs has non-finite"),  # overflows float32
    ("action", np.full((4, ACT), -np.inf), "action has non-finite"),
])
def test_add_rejects_bad_fields_by_name(field: str, value: np.ndarray, message: str) -> None:
    buffer = ReplayBuffer(10, OBS, ACT)
    batch = transitions(0, 4)
    batch[field] = value
    with pytest.raises(ValueError, match=message):
        buffer.add(**batch)
    assert len(buffer) == 0 and buffer.total_added == 0  # nothing half-stored


def test_single_transition_shapes_are_checked() -> None:
    buffer = ReplayBuffer(10, OBS, ACT)
    with pytest.raises(ValueError, match=r"action must have shape \[2\]"):
        buffer.add(np.zeros(OBS), np.zeros(ACT + 1), 0.0, np.zeros(OBS), False, False)
    with pytest.raises(ValueError, match="obs must be"):
        buffer.add(np.zeros((1, 1, OBS)), np.zeros(ACT), 0.0, np.zeros(OBS), False, False)
    buffer.add(np.zeros(OBS), np.zeros(ACT), np.float64(1.5), np.zeros(OBS), True, 0)
    assert len(buffer) == 1 and buffer.all()["terminated"][0] == 1.0
