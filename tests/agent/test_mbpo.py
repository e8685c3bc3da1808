"""A short MBPO run on a tiny task learns, through the same composition root as the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mbpo_arm.agent.checkpoint import latest_checkpoint
from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.run import restore
from mbpo_arm.agent.train import ensure_model_buffer, recent_episodes, sample_batch, train
from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.launch.build import build_run


class PointMass(gym.Env):
    """Drive a 2-D point to the origin: ``s' = s + 0.1 a``, reward ``-||s'||``, 30 steps."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = self.np_random.uniform(-1, 1, 2)
        return self.s.copy(), {}

    def step(self, action):
        self.s = self.s + 0.1 * np.clip(action, -1, 1)
        return self.s.copy(), -float(np.linalg.norm(self.s)), False, False, {}


if "PointMass-v0" not in gym.registry:
    gym.register("PointMass-v0", entry_point=PointMass, max_episode_steps=30)

TINY = ["task.id=PointMass-v0", "task.max_episode_steps=30", "agent=mbpo",
        "logger.wandb=disabled", "logger.progress=false", "agent.sac.hidden=[64,64]",
        "agent.sac.batch_size=128", "agent.sac.utd=4", "agent.sac.learning_starts=300",
        "agent.model.hidden=64", "agent.model.layers=2",
        "agent.model.weight_decay=[2.5e-5,5e-5,1e-4]", "agent.model.members=4",
        "agent.model.elites=3", "agent.model.max_epochs_per_train=30",
        "agent.mbpo.model_learning_starts=300", "agent.mbpo.model_train_every=150",
        "agent.mbpo.rollout_batch=2000", "agent.mbpo.epoch_length=300",
        "agent.mbpo.horizon_schedule=[1,3,1,3]", "agent.mbpo.rollout_chunk=null",
        "trainer.eval_every=300", "trainer.eval_episodes=10", "trainer.checkpoint_every=600"]


def make_run(tmp_path: Path, steps: int, *extra: str):
    torch.set_num_threads(1)
    rc, _ = load_run_config([*TINY, f"trainer.total_steps={steps}", *extra])
    return build_run(rc, tmp_path)


@pytest.mark.slow
def test_mbpo_learns_the_tiny_task(tmp_path: Path) -> None:
    run = make_run(tmp_path, 1500)
    train(run)
    evals = [e for e in read_metrics(tmp_path) if "eval_return" in e]
    first, best = evals[0]["eval_return"], max(e["eval_return"] for e in evals[1:])
    # random-ish start: about -20; reaching the origin quickly: better than -8
    assert best > first + 5 and best > -10, [round(e["eval_return"], 1) for e in evals]
    reports = [json.loads(x) for x in
               (tmp_path / "model_reports.jsonl").read_text().splitlines()]
    assert len(reports) == (1500 - 300) // 150 + 1
    last = reports[-1]
    assert reports[-1]["elite_holdout_mse"] < reports[0]["initial_holdout_mse"]
    assert set(last["multistep_mse"]) == {"1", "5", "10"}
    assert run.agent.model.buffer is not None and len(run.agent.model.buffer) > 0
    assert run.agent.model.horizon == 3  # the schedule reached max_h by epoch 3
    assert run.progress.counters.updates == (1500 - 300 + 1) * 4  # from step 300 on, UTD 4
    assert run.agent.model.ensemble.learn_reward  # PointMass has no known reward function


@pytest.mark.slow
def test_checkpoint_holds_model_and_both_buffers(tmp_path: Path) -> None:
    run = make_run(tmp_path, 600)
    train(run)
    ckpt = latest_checkpoint(tmp_path)
    assert (ckpt / "replay.npz").exists() and (ckpt / "model_buffer.npz").exists()
    fresh = make_run(tmp_path, 600)
    assert restore(fresh)
    assert fresh.progress.counters.env_steps == 600
    assert fresh.agent.model.elites == run.agent.model.elites
    assert len(fresh.agent.model.buffer) == len(run.agent.model.buffer)
    for a, b in zip(fresh.agent.model.ensemble.parameters(), run.agent.model.ensemble.parameters(),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_same_seed_same_run(tmp_path: Path) -> None:
    finals = []
    for i in range(2):
        run = make_run(tmp_path / str(i), 450, "agent.mbpo.model_learning_starts=300",
                       "trainer.eval_every=450")
        train(run)
        finals.append(read_metrics(tmp_path / str(i))[-1]["eval_return"])
    assert finals[0] == finals[1]


@pytest.mark.parametrize("n_episodes", [3, 0])
def test_recent_episodes_cut_at_episode_ends(n_episodes: int) -> None:
    t = 5
    obs = np.arange(n_episodes * t, dtype=np.float32)[:, None]
    data = {"obs": obs, "next_obs": obs + 0.5, "action": obs * 2,
            "terminated": np.zeros(n_episodes * t), "truncated": np.tile([0, 0, 0, 0, 1.0],
                                                                        n_episodes)}
    episodes = recent_episodes(data)
    assert len(episodes) == n_episodes
    if not n_episodes:  # no episode has ended yet: nothing to measure multi-step error on
        return
    o, a = episodes[1]
    assert o.shape == (t + 1, 1) and a.shape == (t, 1)
    assert o[-1, 0] == data["next_obs"][2 * t - 1, 0]


def test_sac_batches_mix_real_and_model_data_by_the_ratio(tmp_path: Path) -> None:
    run = make_run(tmp_path, 300, "agent.mbpo.real_ratio=0.25", "agent.sac.batch_size=100")
    rng = np.random.default_rng(0)
    n = 500
    real = (np.zeros((n, 2)), np.zeros((n, 2)), np.zeros(n), np.zeros((n, 2)),
            np.zeros(n, bool), np.zeros(n, bool))
    run.agent.replay.add(*real)
    assert len(sample_batch(run.agent)) == 100  # no model data yet: all real
    run.agent.model.horizon = 1
    ensure_model_buffer(run.agent)
    run.agent.model.buffer.add(np.ones((n, 2)), rng.uniform(-1, 1, (n, 2)), np.ones(n),
                         np.ones((n, 2)), np.zeros(n, bool), np.zeros(n, bool))
    batch = sample_batch(run.agent)
    assert len(batch) == 100 and int((batch.reward == 0).sum()) == 25


def test_model_buffer_is_sized_by_the_horizon_and_keeps_the_newest(tmp_path: Path) -> None:
    run = make_run(tmp_path, 300, "agent.mbpo.rollout_batch=10", "agent.mbpo.epoch_length=20",
                   "agent.mbpo.model_train_every=10", "agent.mbpo.retain_epochs=1")
    run.agent.model.horizon = 1
    ensure_model_buffer(run.agent)
    assert run.agent.model.buffer.capacity == 1 * 2 * 10 * 1  # epochs x rollouts/epoch x batch x h
    n = 20
    rewards = np.arange(n, dtype=np.float64)
    run.agent.model.buffer.add(np.zeros((n, 2)), np.zeros((n, 2)), rewards, np.zeros((n, 2)),
                         np.zeros(n, bool), np.zeros(n, bool))
    run.agent.model.horizon = 3
    ensure_model_buffer(run.agent)
    assert run.agent.model.buffer.capacity == 60
    np.testing.assert_array_equal(run.agent.model.buffer.all()["reward"], rewards)
    run.agent.model.horizon = 1
    ensure_model_buffer(run.agent)
    np.testing.assert_array_equal(run.agent.model.buffer.all()["reward"], rewards)


@pytest.mark.slow
def test_stop_at_ends_the_run_at_the_first_good_evaluation(tmp_path: Path) -> None:
    rc, _ = load_run_config(["task.id=PointMass-v0", "task.max_episode_steps=30",
                             "logger.wandb=disabled", "logger.progress=false",
                             "agent.sac.hidden=[32,32]", "agent.sac.learning_starts=100",
                             "trainer.total_steps=3000", "trainer.eval_every=300",
                             "trainer.eval_episodes=2", "trainer.stop_at=-1000",
                             "trainer.stop_metric=eval_return"])
    run = build_run(rc, tmp_path)
    train(run)
    events = read_metrics(tmp_path)
    assert events[-1] == {"env_steps": 300, "stopped_at_target": -1000}
    assert run.progress.counters.env_steps == 300
    assert latest_checkpoint(tmp_path).name == "step_00000300"


def test_rollouts_start_from_relabelled_states_when_the_task_has_goals(tmp_path: Path) -> None:
    """``agent.mbpo.goal_relabel`` hands the sampled start states and the fraction to the
    task's relabel function (``envs.tasks.reach_relabel`` for reach), and the model rollouts
    start from what it returns."""
    from mbpo_arm.agent.train import rollout_model

    run = make_run(tmp_path, 300, "agent.mbpo.goal_relabel=0.3", "agent.mbpo.rollout_batch=50",
                   "agent.mbpo.horizon_schedule=[1,1,1,1]")
    n = 200
    run.agent.replay.add(np.zeros((n, 2)), np.zeros((n, 2)), np.zeros(n), np.zeros((n, 2)),
                   np.zeros(n, bool), np.zeros(n, bool))
    calls = []

    def relabel(obs: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
        calls.append((obs.shape, fraction))
        return np.full_like(obs, 7.0)

    run.agent.model.relabel_fn, run.agent.model.elites = relabel, [0, 1, 2]
    rollout_model(run.agent, run.progress.counters.env_steps)
    assert calls == [((50, 2), 0.3)]
    np.testing.assert_array_equal(run.agent.model.buffer.all()["obs"], 7.0)


def test_rollouts_come_every_rollout_every_steps_and_after_each_model_training(
        tmp_path: Path) -> None:
    """Sync: at multiples of ``rollout_every`` and at each model training, once per step;
    the async learner, which takes in several steps at once, also when a period has passed
    since the last rollout."""
    from mbpo_arm.agent.train import rollout_due

    run = make_run(tmp_path, 300, "agent.mbpo.rollout_every=40")  # model every 150 from 300
    model = run.agent.model
    assert not rollout_due(model, 300, -1)  # no trained model yet
    model.elites = [0, 1, 2]
    due, last = [], -1
    for step in range(300, 460):
        if rollout_due(model, step, last):
            due.append(step)
            last = step
    assert due == [300, 320, 360, 400, 440, 450]
    assert not rollout_due(model, 450, last)  # same step again: not twice
    assert rollout_due(model, 505, last)  # the learner jumped past 480 and 500


def async_learner(tmp_path: Path, *extra: str):
    """An async :class:`~agent.runtime.learner.Learner` over a tiny MBPO run with 400 real
    transitions and a trained model (elites set), no queue or weights block; also the RNG
    that made the data."""
    from mbpo_arm.agent.runtime.config import RuntimeConfig
    from mbpo_arm.agent.runtime.learner import Learner

    run = make_run(tmp_path, 300, *extra, "agent.mbpo.rollout_batch=50")
    n = 400
    rng = np.random.default_rng(0)
    run.agent.replay.add(rng.normal(size=(n, 2)), rng.uniform(-1, 1, (n, 2)), np.zeros(n),
                   rng.normal(size=(n, 2)), np.zeros(n, bool), np.zeros(n, bool))
    run.progress.counters.env_steps, run.agent.model.elites = n, [0, 1, 2]
    learner = Learner(run, RuntimeConfig(mode="async"), tmp_path / "replay.log", None, None,
                      {})
    return run, learner, rng


@pytest.mark.slow
def test_a_slow_async_learner_keeps_the_sync_ratio_of_rollouts_to_updates(
        tmp_path: Path) -> None:
    """When the actor outpaces the learner, every ``learn`` could find a rollout due (a period
    of env steps passes during each one) and no SAC update would ever run: the learner rolls
    out again only after the ``utd x rollout_every`` updates the sync loop does in between."""
    run, learner, _ = async_learner(tmp_path, "agent.mbpo.rollout_every=10",
                                    "agent.sac.utd=4")
    kinds = []
    for _ in range(60):
        run.progress.counters.env_steps += 20  # the actor ran on during the last piece of work
        updates = run.progress.counters.updates
        learner.learn()
        kinds.append("update" if run.progress.counters.updates > updates else "rollout")
    assert kinds.count("rollout") >= 1
    assert kinds.count("update") >= 0.85 * len(kinds)  # 40 updates (10 x 4) per rollout


@pytest.mark.slow
def test_a_slow_async_learner_keeps_the_sync_ratio_of_model_trainings_to_updates(
        tmp_path: Path) -> None:
    """At 20 Hz a model training can take longer than the steps between two of them; a
    learner that trained whenever one was due did nothing else (no SAC update for minutes).
    It trains again only after the ``utd x model_train_every`` updates of the sync loop, and
    meanwhile goes on ingesting (the model does not block the replay)."""
    from mbpo_arm.agent.runtime.replay_log import LogRecords

    run, learner, rng = async_learner(tmp_path, "agent.mbpo.model_train_every=20",
                                      "agent.sac.utd=2")
    kinds, real_train = [], learner.train_model

    def train_and_count() -> None:
        kinds.append("model")
        real_train()

    learner.train_model = train_and_count  # type: ignore[method-assign]
    for _ in range(60):
        run.progress.counters.env_steps += 20  # a model training is due after every piece of work
        learner.model_pending = True
        updates = run.progress.counters.updates
        if not learner.model_blocks():  # the replay keeps up with the actor meanwhile
            step = run.progress.counters.env_steps
            one = LogRecords(np.array([step]), rng.normal(size=(1, 2)).astype(np.float32),
                             np.zeros((1, 2), np.float32), np.zeros(1, np.float32),
                             rng.normal(size=(1, 2)).astype(np.float32), np.zeros(1, bool),
                             np.zeros(1, bool))
            assert learner.ingest(one) == 1 and run.progress.counters.env_steps == step + 1
        learner.learn()
        if run.progress.counters.updates > updates:
            kinds.append("update")
    assert 2 <= kinds.count("model") <= 3  # one per 40 updates (2 x 20)
    assert kinds.count("update") >= 0.9 * 60
