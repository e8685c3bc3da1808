"""Branched model rollouts: horizon, termination, reward functions, disagreement, MOPO penalty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mbpo_arm.agent.config import EnsembleConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, predict
from mbpo_arm.agent.math import ensemble_disagreement, mopo_penalty
from mbpo_arm.agent.rollout import KEYS, branched_rollout

torch.set_num_threads(1)

OBS, ACT, N, ELITES = 3, 2, 200, [0, 2, 3]


def make_model(learn_reward: bool = False) -> ProbabilisticEnsemble:
    """An untrained ensemble: its members disagree, which is what these tests need."""
    torch.manual_seed(0)
    cfg = EnsembleConfig(members=4, elites=3, hidden=32, layers=2,
                         weight_decay=[1e-5, 1e-5, 1e-5], learn_reward=learn_reward)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    with torch.no_grad():
        model.out_norm.std.fill_(0.3)
    return model


def make_policy() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, ACT), nn.Tanh())


def reward_fn(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return -next_obs.norm(dim=-1) - 0.1 * action.pow(2).sum(-1) + obs[:, 0]


def start_obs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, OBS)).astype(np.float32)


def rollout(model: ProbabilisticEnsemble, horizon: int = 5, **kw):
    kw.setdefault("reward_fn", reward_fn)
    kw.setdefault("termination_fn", None)
    return branched_rollout(model, ELITES, make_policy(), start_obs(), horizon,
                            generator=torch.Generator().manual_seed(0), **kw)


def test_horizon_shapes_and_dtypes() -> None:
    data, stats = rollout(make_model(), horizon=5)
    assert set(data) == set(KEYS)
    assert data["obs"].shape == data["next_obs"].shape == (N * 5, OBS)
    assert data["action"].shape == (N * 5, ACT) and data["reward"].shape == (N * 5,)
    assert data["obs"].dtype == np.float32 and data["terminated"].dtype == bool
    assert not data["truncated"].any() and not data["terminated"].any()
    assert stats["transitions"] == N * 5 and stats["mean_length"] == 5
    data, stats = rollout(make_model(), horizon=0)
    assert all(len(v) == 0 for v in data.values()) and math.isnan(stats["mean_penalty"])


def test_terminated_branches_stop() -> None:
    threshold = 0.5

    def termination_fn(obs, action, next_obs):
        return next_obs[:, 0] > threshold

    data, stats = rollout(make_model(), horizon=6, termination_fn=termination_fn)
    term = data["terminated"]
    assert term.sum() > 0 and (~term).sum() > 0
    assert len(data["obs"]) <= N * 6 and stats["mean_length"] <= 6
    np.testing.assert_array_equal(term, data["next_obs"][:, 0] > threshold)
    # no transition starts where a terminated one ended; each later one continues a live branch
    ends = {r.tobytes() for r in data["next_obs"][term]}
    live = {r.tobytes() for r in data["next_obs"][~term]}
    starts = {r.tobytes() for r in start_obs()}
    for row in data["obs"]:
        key = row.tobytes()
        assert key not in ends
        assert key in live or key in starts
    assert stats["terminated"] == pytest.approx(term.sum() / N)


def test_reward_fn_is_used_and_learned_reward_needs_the_head() -> None:
    data, _ = rollout(make_model(), horizon=3)
    t = {k: torch.as_tensor(data[k]) for k in ("obs", "action", "next_obs")}
    expected = reward_fn(t["obs"], t["action"], t["next_obs"]).numpy()
    np.testing.assert_allclose(data["reward"], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="reward"):
        rollout(make_model(), reward_fn=None)
    data, _ = rollout(make_model(learn_reward=True), horizon=3, reward_fn=None)
    assert data["reward"].shape == (N * 3,) and np.isfinite(data["reward"]).all()
    assert not np.allclose(data["reward"], reward_fn(*(torch.as_tensor(data[k]) for k in
                                                      ("obs", "action", "next_obs"))).numpy())


def test_disagreement_threshold_stops_branches() -> None:
    model = make_model()
    data, stats = rollout(model, max_disagreement=0.0)  # untrained elites never agree exactly
    assert stats["transitions"] == 0 and stats["stopped_by_disagreement"] == 1.0
    data, stats = rollout(model, max_disagreement=math.inf)
    assert stats["transitions"] == N * 5 and stats["stopped_by_disagreement"] == 0.0
    # threshold at the median first-step discrepancy: exactly the branches at or below it survive
    obs = torch.as_tensor(start_obs())
    with torch.no_grad():
        pred = predict(model, obs, make_policy()(obs), ELITES)
    dis = ensemble_disagreement(pred.member_mean[..., :OBS])
    limit = float(dis.median())
    data, stats = rollout(model, max_disagreement=limit)
    first = {r.tobytes() for r in start_obs()}
    kept_first = sum(r.tobytes() in first for r in data["obs"])
    assert kept_first == int((dis <= limit).sum())
    assert stats["stopped_by_disagreement"] >= (dis > limit).float().mean().item()
    assert len(data["obs"]) < N * 5


def test_penalty_lowers_reward_by_coef_times_mopo_penalty() -> None:
    model, coef = make_model(), 2.5
    plain, _ = rollout(model, horizon=4)
    penalised, stats = rollout(model, horizon=4, penalty_coef=coef)
    np.testing.assert_array_equal(plain["next_obs"], penalised["next_obs"])
    with torch.no_grad():
        pred = predict(model, torch.as_tensor(plain["obs"]), torch.as_tensor(plain["action"]),
                       ELITES)
    penalty = mopo_penalty(pred.member_std).numpy()
    np.testing.assert_allclose(plain["reward"] - penalised["reward"], coef * penalty,
                               rtol=1e-5, atol=1e-5)
    assert stats["mean_penalty"] == pytest.approx(float(penalty.mean()), rel=1e-5)


def test_ensemble_disagreement_is_largest_pairwise_distance() -> None:
    mean = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]], [[0.0, 1.0]]])  # [E=3, B=1, D=2]
    assert ensemble_disagreement(mean).tolist() == [5.0]
    assert ensemble_disagreement(mean[:1]).tolist() == [0.0]


def test_derive_completes_every_prediction_before_the_reward() -> None:
    """``derive_fn`` rewrites each predicted state (here: its last entry is the sum of the
    others); rewards, stored next states and the next step all see the derived state."""
    def derive(obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([next_obs[:, :-1], next_obs[:, :-1].sum(-1, keepdim=True)], -1)

    data, _ = rollout(make_model(), horizon=3, derive_fn=derive)
    nxt = torch.as_tensor(data["next_obs"])
    np.testing.assert_allclose(nxt[:, -1], nxt[:, :-1].sum(-1), rtol=1e-5, atol=1e-5)
    obs = torch.as_tensor(data["obs"][N:])  # steps 2 and 3 start from derived states
    np.testing.assert_allclose(obs[:, -1], obs[:, :-1].sum(-1), rtol=1e-5, atol=1e-5)
    expected = reward_fn(torch.as_tensor(data["obs"]), torch.as_tensor(data["action"]), nxt)
    np.testing.assert_allclose(data["reward"], expected.numpy(), rtol=1e-5, atol=1e-5)
