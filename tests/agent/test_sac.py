"""SAC: config checks, shapes, the batched twin critic, targets, learning, state, determinism."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbpo_arm.agent.checkpoint import atomic_torch_save
from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.layers import EnsembleLinear
from mbpo_arm.agent.math import critic_target
from mbpo_arm.agent.networks import Actor, TwinCritic
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.sac import SAC
from mbpo_arm.agent.types import TransitionBatch

OBS, ACT = 4, 2
SMALL = {"hidden": (32, 32), "batch_size": 64}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_sac(seed: int = 0, obs_dim: int = OBS, act_dim: int = ACT, **cfg: object) -> SAC:
    return SAC(obs_dim, act_dim, SACConfig(**{**SMALL, **cfg}),
               generator=torch.Generator().manual_seed(seed))


def random_buffer(n: int = 500, obs_dim: int = OBS, act_dim: int = ACT,
                  seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(n, obs_dim, act_dim)
    buffer.add(rng.normal(size=(n, obs_dim)), rng.uniform(-1, 1, (n, act_dim)),
               rng.normal(size=n), rng.normal(size=(n, obs_dim)), rng.random(n) < 0.1,
               rng.random(n) < 0.1)
    return buffer


def parameters(sac: SAC) -> list[torch.Tensor]:
    return [*sac.actor.parameters(), *sac.critic.parameters(),
            *sac.critic_target.parameters(), sac.log_alpha]


# ------------------------------------------------------------------------------------ config
def test_config_accepts_lists_and_fills_defaults() -> None:
    cfg = SACConfig(hidden=[64, 32])
    assert cfg.hidden == (64, 32)
    assert make_sac().target_entropy == -ACT
    assert make_sac(target_entropy=-0.5).target_entropy == -0.5


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("hidden", (), "non-empty"), ("hidden", (64, 0), "ints >= 1"), ("hidden", 64, "ints"),
    ("actor_lr", 0.0, "> 0"), ("gamma", 1.0, r"in \[0, 1\)"), ("tau", 0.0, r"in \(0, 1\]"),
    ("batch_size", 0, ">= 1"), ("init_alpha", -1.0, "> 0"),
    ("target_entropy", float("nan"), "finite"), ("actor_update_interval", 0, ">= 1"),
    ("learning_starts", -1, ">= 0"), ("utd", 0, ">= 1"),
])
def test_config_rejects_values_naming_field_and_range(field: str, value: object,
                                                      allowed: str) -> None:
    with pytest.raises(ValueError, match=rf"sac\.{field} must be .*{allowed}"):
        SACConfig(**{field: value})


# ------------------------------------------------------------------------------------ shapes
def test_network_shapes_and_log_std_range() -> None:
    actor, critic = Actor(OBS, ACT, (32,)), TwinCritic(OBS, ACT, (32, 32))
    obs, action = 100 * torch.randn(7, OBS), torch.rand(7, ACT)
    mean, log_std = actor(obs)
    assert mean.shape == log_std.shape == (7, ACT)
    assert log_std.min() >= -5.0 and log_std.max() <= 2.0
    assert critic(obs, action).shape == (2, 7)


def test_act_shapes_range_and_determinism() -> None:
    sac = make_sac()
    obs = np.random.default_rng(0).normal(size=(9, OBS)) * 10
    single, batch = sac.act(obs[0]), sac.act(obs)
    assert single.shape == (ACT,) and batch.shape == (9, ACT) and batch.dtype == np.float32
    assert np.abs(batch).max() <= 1.0
    np.testing.assert_array_equal(sac.act(obs, deterministic=True),
                                  sac.act(obs, deterministic=True))
    assert not np.array_equal(sac.act(obs), sac.act(obs))  # fresh noise each call
    with pytest.raises(ValueError, match="obs_dim=4"):
        sac.act(np.zeros(OBS + 1))


@pytest.mark.parametrize("layer_norm", [False, True])
def test_twin_critic_matches_a_manual_per_member_computation(layer_norm: bool) -> None:
    critic = TwinCritic(OBS, ACT, (16, 8), layer_norm=layer_norm)
    obs, action = torch.randn(5, OBS), torch.randn(5, ACT)
    x = torch.cat([obs, action], dim=-1)
    layers = [m for m in critic.net if isinstance(m, EnsembleLinear)]
    for e in range(2):
        h = x
        for i, layer in enumerate(layers):
            h = h @ layer.weight[e] + layer.bias[e, 0]
            if i < len(layers) - 1:
                h = F.layer_norm(h, h.shape[-1:]) if layer_norm else h
                h = F.relu(h)
        torch.testing.assert_close(critic(obs, action)[e], h.squeeze(-1))
    q = critic(obs, action)
    assert not torch.allclose(q[0], q[1])  # members initialised independently


# ----------------------------------------------------------------------------------- targets
def test_critic_target_stops_only_at_terminated() -> None:
    reward, next_q, next_logp = torch.tensor([1.0, 1.0]), torch.tensor([5.0, 5.0]), torch.zeros(2)
    target = critic_target(reward, torch.tensor([1.0, 0.0]), next_q, next_logp,
                           torch.tensor(0.2), gamma=0.9)
    torch.testing.assert_close(target, torch.tensor([1.0, 1.0 + 0.9 * 5.0]))


def test_td_target_of_a_batch_ignores_truncated() -> None:
    sac = make_sac(gamma=0.9)
    obs = torch.randn(2, OBS)
    batch = TransitionBatch(obs=obs, action=torch.zeros(2, ACT), reward=torch.tensor([1.0, 2.0]),
                            next_obs=obs + 1, terminated=torch.tensor([1.0, 0.0]),
                            truncated=torch.tensor([0.0, 1.0]))
    target = sac.td_target(batch, noise=torch.zeros(2, ACT))
    assert target[0] == 1.0  # terminated: reward only
    with torch.no_grad():  # truncated: reward + gamma * soft value of next_obs
        mean, log_std = sac.actor(batch.next_obs[1:])
        logp = ((-log_std - 0.5 * np.log(2 * np.pi)).sum()
                - torch.log1p(-torch.tanh(mean) ** 2).sum())
        soft_v = sac.critic_target(batch.next_obs[1:], torch.tanh(mean)).min() - sac.alpha * logp
    torch.testing.assert_close(target[1], 2.0 + 0.9 * soft_v, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- learning
def bandit_buffer(rng: np.random.Generator, n: int = 2000) -> ReplayBuffer:
    """One-step episodes: obs ``[n, 1]`` uniform, actions uniform, every step terminated."""
    obs, action = rng.uniform(-1, 1, (n, 1)), rng.uniform(-1, 1, (n, 1))
    reward = np.sin(3 * obs[:, 0]) * action[:, 0] - (action[:, 0] - 0.5) ** 2
    buffer = ReplayBuffer(n, 1, 1)
    buffer.add(obs, action, reward, obs, np.ones(n), np.zeros(n))
    return buffer


@pytest.mark.slow
def test_critic_loss_falls_on_a_regression_problem() -> None:
    rng = np.random.default_rng(0)
    buffer = bandit_buffer(rng)
    sac = make_sac(obs_dim=1, act_dim=1, hidden=(64, 64), critic_lr=3e-3, actor_lr=3e-3)
    losses = [sac.update(buffer.sample(128, rng))["critic_loss"] for _ in range(300)]
    assert np.mean(losses[:10]) > 50 * np.mean(losses[-10:])


@pytest.mark.slow
def test_actor_learns_the_best_action_of_a_continuous_bandit() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    action = rng.uniform(-1, 1, (n, 1))
    buffer = ReplayBuffer(n, 1, 1)
    buffer.add(np.zeros((n, 1)), action, -(action[:, 0] - 0.5) ** 2, np.zeros((n, 1)),
               np.ones(n), np.zeros(n))
    sac = make_sac(obs_dim=1, act_dim=1, critic_lr=3e-3, actor_lr=3e-3, init_alpha=0.1,
                   alpha_lr=1e-2)
    first = sac.update(buffer.sample(128, rng))
    for _ in range(400):
        last = sac.update(buffer.sample(128, rng))
    assert abs(sac.act(np.zeros(1), deterministic=True)[0] - 0.5) < 0.1
    assert last["alpha"] < first["alpha"]  # entropy above -1 target at first: alpha falls
    assert all(np.isfinite(v) for v in last.values())


def test_update_reports_metrics_and_respects_intervals() -> None:
    sac, buffer, rng = make_sac(actor_update_interval=2), random_buffer(), np.random.default_rng(0)
    frozen = make_sac(autotune=False, init_alpha=0.3)
    for i in range(4):
        actor_before = [p.clone() for p in sac.actor.parameters()]
        metrics = sac.update(buffer.sample(64, rng))
        moved = any(not torch.equal(a, b) for a, b in zip(actor_before, sac.actor.parameters(),
                                                          strict=True))
        assert moved == (i % 2 == 0)  # the actor steps on updates 0, 2, ...
        frozen.update(buffer.sample(64, rng))
    assert set(metrics) == {"critic_loss", "q_mean", "actor_loss", "alpha_loss", "entropy",
                            "alpha"}
    assert sac.updates == 4 and frozen.alpha.item() == pytest.approx(0.3)
    target_gap = sum((p - q).abs().sum() for p, q in zip(sac.critic.parameters(),
                                                         sac.critic_target.parameters(),
                                                         strict=True))
    assert target_gap > 0  # the target trails the critic (polyak, tau < 1)


# ------------------------------------------------------------------------------------- state
def test_state_dict_round_trip_gives_identical_actions_and_updates(tmp_path: Path) -> None:
    buffer, rng = random_buffer(), np.random.default_rng(0)
    sac = make_sac(seed=0)
    for _ in range(5):
        sac.update(buffer.sample(64, rng))
    atomic_torch_save(sac.state_dict(), tmp_path / "sac.pt")
    restored = make_sac(seed=123)
    restored.load_state_dict(torch.load(tmp_path / "sac.pt", weights_only=True))
    obs = np.random.default_rng(1).normal(size=(6, OBS))
    np.testing.assert_array_equal(sac.act(obs, deterministic=True),
                                  restored.act(obs, deterministic=True))
    batch = buffer.sample(64, rng)
    assert sac.update(batch) == restored.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(parameters(sac), parameters(restored),
                                                 strict=True))


def test_policy_state_dict_ships_the_actor_only() -> None:
    sac, other = make_sac(seed=0), make_sac(seed=1)
    buffer = random_buffer()
    sac.fit_obs_normalizer(buffer.all()["obs"] * 3.0 + 1.0)
    sac.update(buffer.sample(64, np.random.default_rng(0)))
    state = sac.policy_state_dict()
    assert set(state) == {"actor", "obs_dim", "act_dim", "hidden", "version", "obs_norm",
                          "obs_norm_fitted"}
    assert state["version"] == 1 and all(t.device.type == "cpu" for t in state["actor"].values())
    other.load_policy_state_dict(copy.deepcopy(state))
    obs = np.ones((3, OBS))
    np.testing.assert_array_equal(sac.act(obs, True), other.act(obs, True))
    with pytest.raises(ValueError, match="act_dim"):
        make_sac(act_dim=3).load_policy_state_dict(state)


def test_same_seed_gives_identical_parameters_and_leaves_global_rng_alone() -> None:
    global_state = torch.get_rng_state()
    runs = []
    for seed in (0, 0, 1):
        sac, buffer, rng = make_sac(seed=seed), random_buffer(), np.random.default_rng(seed)
        for _ in range(10):
            sac.update(buffer.sample(64, rng))
        sac.act(np.zeros(OBS))
        runs.append(parameters(sac))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))
    assert torch.equal(torch.get_rng_state(), global_state)


def test_to_device_keeps_weights_and_optimizer_state() -> None:
    sac, buffer, rng = make_sac(), random_buffer(), np.random.default_rng(0)
    sac.update(buffer.sample(64, rng))
    assert sac.to("cpu") is sac
    before = copy.deepcopy(sac.critic_opt.state_dict()["state"])
    sac.to(torch.device("cpu", 0))  # a different device object: the whole move runs
    after = sac.critic_opt.state_dict()["state"]
    assert all(torch.equal(before[k]["exp_avg"], after[k]["exp_avg"]) for k in before)
    sac.update(buffer.sample(64, rng))
    assert sac.updates == 2 and sac.critic_opt.state_dict()["state"][0]["step"] == 2


def test_observation_normalizer_is_fitted_once_and_travels_with_the_state() -> None:
    sac = make_sac(seed=0)
    obs = np.random.default_rng(0).normal(5.0, 0.01, size=(500, OBS))
    raw = torch.as_tensor(obs[:4], dtype=torch.float32)
    assert torch.equal(sac.normalize(raw), raw)  # identity before fitting
    sac.fit_obs_normalizer(obs)
    normalized = sac.normalize(torch.as_tensor(obs, dtype=torch.float32))
    assert normalized.mean().abs() < 0.05 and (normalized.std(0) - 1).abs().max() < 0.05
    sac.fit_obs_normalizer(obs * 100)  # a second fit changes nothing
    assert torch.allclose(sac.normalize(torch.as_tensor(obs, dtype=torch.float32)), normalized)
    restored = make_sac(seed=1)
    restored.load_state_dict(copy.deepcopy(sac.state_dict()))
    assert restored.obs_norm_fitted
    np.testing.assert_array_equal(restored.normalize(raw), sac.normalize(raw))
