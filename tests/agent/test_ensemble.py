"""Dynamics ensemble: shapes, member independence, learning a known system, early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbpo_arm.agent.config import EnsembleConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, predict
from mbpo_arm.agent.ensemble_train import holdout_split, multistep_error, train_ensemble
from mbpo_arm.agent.math import gaussian_nll, soft_clamp

torch.set_num_threads(1)

SMALL = dict(members=5, elites=3, hidden=64, layers=3, weight_decay=[2.5e-5, 5e-5, 7.5e-5, 1e-4])


def system(s: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``s' = s + 0.1 sin(3s) + 0.2 a cos(s) + noise``; noise std 0.05 where ``s[0] > 0``, else
    0.005 (heteroscedastic)."""
    sigma = np.where(s[:, :1] > 0, 0.05, 0.005)
    return (s + 0.1 * np.sin(3 * s) + 0.2 * a * np.cos(s)
            + sigma * rng.standard_normal(s.shape)).astype(np.float32)


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    return s, a, system(s, a, rng)


@pytest.fixture(scope="module")
def trained() -> tuple[ProbabilisticEnsemble, EnsembleConfig, object, tuple]:
    torch.manual_seed(0)
    cfg = EnsembleConfig(**SMALL, max_epochs_per_train=300)
    model = ProbabilisticEnsemble(2, 2, cfg)
    data = dataset(3000, seed=0)
    report = train_ensemble(model, *data, None, cfg, np.random.default_rng(1),
                            torch.Generator().manual_seed(2))
    return model, cfg, report, data


def manual_forward(model: ProbabilisticEnsemble, x: torch.Tensor, e: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Member ``e`` computed on its own with plain matmuls; ``x`` ``[B, D_in]``."""
    h = (x - model.in_norm.mean) / model.in_norm.std
    for i, layer in enumerate(model.layers):
        h = h @ layer.weight[e] + layer.bias[e, 0]
        if i < len(model.layers) - 1:
            h = F.silu(h)
    mean, raw = h[:, :model.out_dim], h[:, model.out_dim:]
    return mean, soft_clamp(raw, model.min_log_var[e, 0], model.max_log_var[e, 0])


def test_config_validation_names_the_field() -> None:
    cfg = EnsembleConfig(weight_decay=[1e-5] * 5)  # Hydra gives lists
    assert cfg.weight_decay == (1e-5,) * 5
    with pytest.raises(ValueError, match="weight_decay"):
        EnsembleConfig(layers=3)
    with pytest.raises(ValueError, match="elites"):
        EnsembleConfig(members=3, elites=4)
    with pytest.raises(ValueError, match="holdout_ratio"):
        EnsembleConfig(holdout_ratio=1.0)
    with pytest.raises(ValueError, match="activation"):
        EnsembleConfig(activation="swishy")


def test_batched_forward_equals_per_member_computation() -> None:
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(3, 2, EnsembleConfig(**SMALL, learn_reward=True))
    model.in_norm.fit(torch.randn(100, 5) * 3 + 1)
    x = torch.randn(5, 32, 5)
    mean, log_var = model(x)
    assert mean.shape == log_var.shape == (5, 32, 4)
    for e in range(5):
        m, lv = manual_forward(model, x[e], e)
        torch.testing.assert_close(mean[e], m, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_var[e], lv, rtol=1e-5, atol=1e-5)
    sub = torch.tensor([3, 1])
    m_sub, lv_sub = model(x[sub], sub)
    torch.testing.assert_close(m_sub, mean[sub])
    torch.testing.assert_close(lv_sub, log_var[sub])



def test_the_members_kept_for_a_subset_follow_every_weight_change() -> None:
    """The elites' gathered weights are reused between no-grad calls only while no parameter
    changed: an optimizer step, a ``load_state_dict`` and another subset each show at once."""
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(3, 2, EnsembleConfig(**SMALL))
    x, sub = torch.randn(2, 8, 5), torch.tensor([3, 1])

    def subset_forward(members: torch.Tensor = sub) -> torch.Tensor:
        with torch.no_grad():
            return model(x, members)[0]

    def full_forward(members: torch.Tensor = sub) -> torch.Tensor:
        with torch.no_grad():
            return model(x.new_zeros(5, 8, 5).index_copy(0, members, x))[0][members]

    first = subset_forward()
    torch.testing.assert_close(first, full_forward())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.loss(torch.randn(5, 8, 5), torch.randn(5, 8, 3)).backward()
    opt.step()
    stepped = subset_forward()
    assert not torch.allclose(stepped, first)
    torch.testing.assert_close(stepped, full_forward())
    fresh = ProbabilisticEnsemble(3, 2, EnsembleConfig(**SMALL))
    model.load_state_dict(fresh.state_dict())
    torch.testing.assert_close(subset_forward(), full_forward())
    other = torch.tensor([0, 2])
    torch.testing.assert_close(subset_forward(other), full_forward(other))


def test_members_are_independent() -> None:
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(2, 2, EnsembleConfig(**SMALL))
    mean, log_var = model(torch.randn(5, 16, 4))
    gaussian_nll(mean, log_var, torch.randn(5, 16, 2))[0].backward()
    for name, p in model.named_parameters():
        assert p.grad[0].abs().sum() > 0, name
        assert torch.all(p.grad[1:] == 0), name


def test_normalizers_are_in_state_dict() -> None:
    torch.manual_seed(0)
    cfg = EnsembleConfig(**SMALL)
    a, b = ProbabilisticEnsemble(2, 2, cfg), ProbabilisticEnsemble(2, 2, cfg)
    a.in_norm.fit(torch.randn(50, 4) * 5)
    a.out_norm.fit(torch.randn(50, 2) * 2)
    assert {"in_norm.mean", "in_norm.std", "out_norm.mean", "out_norm.std"} <= set(a.state_dict())
    b.load_state_dict(a.state_dict())
    obs, act = torch.randn(8, 2), torch.randn(8, 2)
    pa = predict(a, obs, act, [0, 2], torch.Generator().manual_seed(0))
    pb = predict(b, obs, act, [0, 2], torch.Generator().manual_seed(0))
    torch.testing.assert_close(pa.next_obs, pb.next_obs)


def test_predict_samples_one_elite_per_sample() -> None:
    torch.manual_seed(0)
    cfg = EnsembleConfig(**SMALL, learn_reward=True)
    model = ProbabilisticEnsemble(2, 2, cfg)
    with torch.no_grad():  # near-deterministic members: the sample is the chosen member's mean
        model.max_log_var.fill_(-30.0)
        model.min_log_var.fill_(-40.0)
    obs, act = torch.randn(400, 2), torch.randn(400, 2)
    pred = predict(model, obs, act, [1, 4], torch.Generator().manual_seed(0))
    assert pred.next_obs.shape == (400, 2) and pred.reward.shape == (400,)
    assert pred.member_mean.shape == pred.member_std.shape == (2, 400, 3)
    sample = torch.cat([pred.next_obs - obs, pred.reward[:, None]], dim=-1)
    dist = (sample[None] - pred.member_mean).abs().amax(-1)  # [2, B]
    assert torch.all(dist.amin(0) < 1e-4)
    share = (dist[0] < dist[1]).float().mean()
    assert 0.4 < share < 0.6


@pytest.mark.slow
def test_learns_known_system(trained) -> None:
    model, cfg, report, _ = trained
    assert report.elite_holdout_mse < 0.25 * report.initial_holdout_mse
    assert report.elite_holdout_nll < report.initial_holdout_nll - 1.0
    assert report.epochs < cfg.max_epochs_per_train
    assert report.samples_per_s > 0
    json.dumps(report.to_dict())


@pytest.mark.slow
def test_members_differ(trained) -> None:
    model, _, _, _ = trained
    x = torch.rand(5, 64, 4) * 2 - 1
    mean, _ = model(x[:1].expand(5, -1, -1))
    spread = (mean - mean.mean(0)).abs().amax(0).mean()
    assert spread > 1e-3


@pytest.mark.slow
def test_elites_are_the_best_members_on_holdout(trained) -> None:
    model, cfg, report, (s, a, sn) = trained
    _, hold = holdout_split(len(s), cfg, np.random.default_rng(1))  # same rng as training
    x = torch.as_tensor(np.concatenate([s, a], -1)[hold])
    y = model.out_norm.normalize(torch.as_tensor((sn - s)[hold]))
    with torch.no_grad():
        mse = torch.stack([((manual_forward(model, x, e)[0] - y) ** 2).mean()
                           for e in range(cfg.members)])
    np.testing.assert_allclose(mse.numpy(), report.holdout_mse, rtol=1e-4)
    assert report.elites == torch.argsort(mse)[:cfg.elites].tolist()


@pytest.mark.slow
def test_learned_std_follows_noise(trained) -> None:
    model, _, report, _ = trained
    g = torch.Generator().manual_seed(3)
    obs = torch.rand(2000, 2, generator=g) * 4 - 2
    act = torch.rand(2000, 2, generator=g) * 2 - 1
    std = predict(model, obs, act, report.elites, g).member_std.mean(dim=(0, 2))
    noisy, quiet = std[obs[:, 0] > 0.2].mean(), std[obs[:, 0] < -0.2].mean()
    assert noisy > 2.5 * quiet


@pytest.mark.slow
def test_multistep_error_grows_and_is_finite(trained) -> None:
    model, _, report, _ = trained
    rng = np.random.default_rng(4)
    trajectories = []
    for _ in range(10):
        obs, acts = [rng.uniform(-2, 2, (1, 2)).astype(np.float32)], rng.uniform(-1, 1, (25, 2))
        for t in range(25):
            obs.append(system(obs[-1], acts[t:t + 1], rng))
        trajectories.append((np.concatenate(obs), acts.astype(np.float32)))
    err = multistep_error(model, report.elites, trajectories, (1, 5, 10),
                          torch.Generator().manual_seed(0))
    assert set(err) == {1, 5, 10}
    assert all(np.isfinite(v) for v in err.values())
    assert err[1] < err[10]


@pytest.mark.slow
def test_early_stopping_before_cap_and_epoch_cap() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, (600, 2)).astype(np.float32)
    a = rng.uniform(-1, 1, (600, 1)).astype(np.float32)
    sn = s + 0.1 * a  # linear and noiseless: learned within a few dozen epochs
    cfg = EnsembleConfig(**SMALL, max_epochs_per_train=400)
    report = train_ensemble(ProbabilisticEnsemble(2, 1, cfg), s, a, sn, None, cfg,
                            np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert report.epochs < 400
    capped = EnsembleConfig(**SMALL, max_epochs=3)
    report = train_ensemble(ProbabilisticEnsemble(2, 1, capped), s, a, sn, None, capped,
                            np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert report.epochs == 3


def test_same_seeds_same_model() -> None:
    s, a, sn = dataset(400, seed=5)
    cfg = EnsembleConfig(**SMALL, max_epochs=2, learn_reward=True)
    reports = []
    for _ in range(2):
        torch.manual_seed(0)
        reports.append(train_ensemble(ProbabilisticEnsemble(2, 2, cfg), s, a, sn, s[:, 0], cfg,
                                      np.random.default_rng(0), torch.Generator().manual_seed(0)))
    assert reports[0].holdout_mse == reports[1].holdout_mse
    with pytest.raises(ValueError, match="reward"):
        train_ensemble(ProbabilisticEnsemble(2, 2, cfg), s, a, sn, None, cfg,
                       np.random.default_rng(0))


def test_predict_chunking_gives_the_same_result() -> None:
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(2, 2, EnsembleConfig(**SMALL))
    obs, act = torch.randn(50, 2), torch.randn(50, 2)
    whole = predict(model, obs, act, [4, 0, 1], torch.Generator().manual_seed(0))
    chunked = predict(model, obs, act, [4, 0, 1], torch.Generator().manual_seed(0), chunk_size=7)
    for a, b in ((whole.next_obs, chunked.next_obs), (whole.member_std, chunked.member_std)):
        torch.testing.assert_close(a, b)


def test_config_composes_as_a_structured_config() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    base = omegaconf.OmegaConf.structured(EnsembleConfig)
    merged = omegaconf.OmegaConf.merge(base, {"weight_decay": [1e-5] * 5, "max_epochs": 10})
    cfg = omegaconf.OmegaConf.to_object(merged)
    assert cfg.weight_decay == (1e-5,) * 5 and cfg.max_epochs == 10


def test_outputs_constant_in_the_data_are_predicted_exactly() -> None:
    """A state entry that never changes (a reach target within an episode) gets no noise."""
    torch.manual_seed(0)
    cfg = EnsembleConfig(members=3, elites=2, hidden=16, layers=2,
                         weight_decay=(0.0, 0.0, 0.0), max_epochs=3)
    model = ProbabilisticEnsemble(2, 1, cfg)
    rng = np.random.default_rng(0)
    obs = np.stack([rng.normal(size=400), np.full(400, 0.7)], axis=1).astype(np.float32)
    act = rng.uniform(-1, 1, (400, 1)).astype(np.float32)
    nxt = obs.copy()
    nxt[:, 0] += 0.1 * act[:, 0]
    train_ensemble(model, obs, act, nxt, None, cfg, rng)
    pred = predict(model, torch.as_tensor(obs), torch.as_tensor(act), [0, 1],
                   torch.Generator().manual_seed(0))
    assert torch.equal(pred.next_obs[:, 1], torch.as_tensor(obs[:, 1]))
    assert (pred.member_std[..., 1] == 0).all() and (pred.member_std[..., 0] > 0).all()
