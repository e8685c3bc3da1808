"""A tiny MOPO pretraining learns from a dataset alone, and a fine-tune starts from it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.dataset import DatasetError, DatasetMeta, from_arrays, spec
from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.mopo import PRETRAIN_INFO, pretrain
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.run import evaluate_policy
from mbpo_arm.agent.train import train
from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.launch.build import build_run, finetune_config
from tests.agent.test_mbpo import TINY  # registers PointMass-v0

MOPO = [*TINY, "agent.mopo.penalty_coef=1.0", "agent.mopo.horizon=3",
        "agent.mopo.rollout_batch=1000", "agent.mopo.rollout_every=100",
        "agent.mopo.retain_rollouts=3", "agent.mopo.gradient_steps=1500",
        "agent.mopo.eval_every=500", "agent.mopo.model_max_epochs=40",
        "trainer.eval_episodes=10"]


def point_mass_dataset(episodes: int = 40, noise: float = 0.8, seed: int = 0):
    """A "medium" behaviour policy on PointMass: a noisy proportional controller."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    for _ in range(episodes):
        s = rng.uniform(-1, 1, 2)
        for t in range(30):
            a = np.clip(-3 * s + noise * rng.standard_normal(2), -1, 1)
            s2 = s + 0.1 * a
            for k, v in zip(rows, (s, a, -np.linalg.norm(s2), s2, False, t == 29), strict=True):
                rows[k].append(v)
            s = s2
    meta = DatasetMeta(robot="none", task="PointMass-v0", control_hz=10.0, obs_spec=spec(2),
                       action_spec=spec(2, bounded=True), source="test")
    return from_arrays(meta, **{k: np.asarray(v) for k, v in rows.items()})


@pytest.mark.slow
def test_mopo_learns_from_data_alone_then_fine_tunes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rc, _ = load_run_config([*MOPO, "trainer.total_steps=300"])
    run = build_run(rc, tmp_path / "pre")
    before = evaluate_policy(run.agent.sac, run.eval_env, 10, seed=10_000)["mean_return"]
    data = point_mass_dataset()
    run = replace(run, agent=replace(run.agent, replay=ReplayBuffer.from_dataset(data)))
    result = pretrain(run, data, rc.agent.mopo, source="test")
    counters = run.progress.counters
    assert counters.env_steps == 0 and counters.updates == 1500  # no env step taken
    evals = [e["eval_return"] for e in read_metrics(tmp_path / "pre") if "eval_return" in e]
    assert len(evals) == 3
    assert result["eval_return"] > before + 3.0, (before, evals)  # random start: about -15
    assert run.progress.model_log["rollout_mean_penalty"] > 0
    info = json.loads((tmp_path / "pre" / PRETRAIN_INFO).read_text())
    assert info["penalty_coef"] == 1.0 and info["model_report"]["elites"]
    run.logger.close()

    # Fine-tune: same weights, replay seeded with the 1200 offline transitions, penalty annealed.
    rc2, _ = load_run_config([*TINY, "trainer.total_steps=150", "trainer.eval_every=150",
                              f"init_from={tmp_path / 'pre'}",
                              "agent.finetune.penalty_anneal_steps=100"])
    rc2 = finetune_config(rc2)
    assert rc2.agent.sac.learning_starts == 0 and rc2.agent.mbpo.model_learning_starts == 0
    ft = build_run(rc2, tmp_path / "ft")
    for k, v in run.agent.sac.actor.state_dict().items():
        torch.testing.assert_close(ft.agent.sac.actor.state_dict()[k], v.to(ft.agent.device))
    assert len(ft.agent.replay) == 1200 and len(ft.agent.model.buffer) > 0
    mbpo = ft.agent.model.mbpo
    assert mbpo.penalty_coef == 1.0 and mbpo.penalty_anneal_steps == 100
    start = evaluate_policy(ft.agent.sac, ft.eval_env, 10, seed=10_000)["mean_return"]
    assert start > before + 3.0  # the pretrained policy acts from the first online step
    first = [e for e in read_metrics(tmp_path / "ft") if "eval_return" in e]
    assert [e["env_steps"] for e in first] == [0]  # the curve starts with the loaded policy
    assert first[0]["eval_return"] > before + 3.0
    final = train(ft)
    assert ft.progress.counters.env_steps == 150 and len(ft.agent.replay) == 1350
    assert final["eval_return"] > before + 3.0

    # A pretrained policy that already meets trainer.stop_at ends the run before a step.
    rc3, _ = load_run_config([*TINY, "trainer.total_steps=150", f"init_from={tmp_path / 'pre'}",
                              "trainer.stop_metric=eval_return",
                              f"trainer.stop_at={first[0]['eval_return'] - 1.0}"])
    done = build_run(finetune_config(rc3), tmp_path / "done")
    train(done)
    assert done.progress.counters.env_steps == 0
    assert any(e.get("stopped_at_target") is not None for e in read_metrics(tmp_path / "done"))


def test_pretrain_rejects_a_dataset_of_another_task(tmp_path: Path) -> None:
    rc, _ = load_run_config([*MOPO, "trainer.total_steps=300"])
    run = build_run(rc, tmp_path)
    ds = point_mass_dataset(episodes=2)
    ds.meta.obs_spec = spec(3)
    ds.data["obs"] = np.zeros((60, 3), np.float32)
    with pytest.raises(DatasetError, match="obs_dim=3"):
        pretrain(run, ds, rc.agent.mopo, source="other.npz")
