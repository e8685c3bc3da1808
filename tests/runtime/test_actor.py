"""The actor's parts without processes: config checks name the field, the schedule measures
lateness and misses, a full queue never blocks, holding sends zeros, new weights are used."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import mbpo_arm.envs.reach  # noqa: F401  (registers ArmReach-v0)
from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import Actor, Schedule
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.replay_log import ReplayLog, read_log
from mbpo_arm.agent.runtime.weights import WeightsPublisher, WeightsReader, create_block, flatten
from mbpo_arm.agent.sac import SAC


@pytest.mark.parametrize("field,value", [("mode", "fast"), ("control_hz", 0),
                                         ("on_learner_death", "panic"), ("queue_size", 0),
                                         ("target_utd", -1.0), ("spin_s", 0.5)])
def test_bad_runtime_value_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"runtime.{field}"):
        RuntimeConfig(**{field: value})


def test_schedule_measures_lateness_and_misses() -> None:
    s = Schedule(period=0.02, spin_s=0.001, miss_tolerance=0.1)
    for t in (1.0, 1.02, 1.041, 1.065, 1.08):  # on time, 1 ms late, 5 ms late (missed), on
        s.mark(t)
    np.testing.assert_allclose(s.lateness, [0.0, 0.001, 0.005, 0.0], atol=1e-9)
    assert s.missed == 1 and s.skipped == 0
    assert s.missed_at == [1.065] and len(s.missed_cpu) == 1  # when, and on which CPU
    s.mark(1.21)  # 110 ms late: 5 ticks never happened; the backlog is dropped, re-anchored
    assert s.anchor == 1.21 and s.k == 0 and s.skipped == 5
    s.mark(1.2295)  # early: the robot's phase is 0.5 ms before the anchor; it moves there
    assert s.lateness[-1] == 0.0 and s.anchor == pytest.approx(1.2095)


def test_schedule_wait_sleeps_then_spins_to_the_deadline() -> None:
    s = Schedule(period=0.01, spin_s=0.002, miss_tolerance=0.1)
    s.mark(time.perf_counter())
    deadline = s.next_deadline()
    s.wait()
    assert time.perf_counter() >= deadline


@pytest.fixture
def actor(tmp_path: Path):
    env = gym.make("ArmReach-v0", max_episode_steps=5)
    policy = SAC(19, 5, SACConfig(hidden=(16, 16)), generator=torch.Generator().manual_seed(0))
    block = create_block(len(flatten(policy.acting_state())))
    log = ReplayLog.open(tmp_path / "replay.log", 19, 5)
    control = mp.get_context("spawn").RawArray("q", ctl.WORDS)
    a = Actor(env, policy, log, RuntimeConfig(mode="async", control_hz=50), WeightsReader(block),
              control, learning_starts=3, seed=0)
    yield a
    a.stop()
    log.close()
    env.close()
    block.close()
    block.shm.unlink()


def test_ticks_log_every_transition_and_a_full_queue_never_blocks(actor: Actor) -> None:
    actor.queue = mp.get_context("spawn").Queue(2)  # nobody reads it
    actor.start()
    for _ in range(12):
        actor.tick()
        actor.between_ticks()
    actor.log.flush()  # the log's writer thread counts and hands over each record
    assert actor.steps == 12 and actor.control[ctl.ACTOR_STEPS] == 12
    assert actor.episodes == 2 and actor.dropped >= 9  # the log has what the queue lost
    records = read_log(actor.log.path, 19, 5)
    assert records.seq.tolist() == list(range(12)) and records.truncated.sum() == 2
    actor.queue.cancel_join_thread()


def test_hold_sends_zeros_and_new_weights_are_used(actor: Actor) -> None:
    actor.start()
    actor.hold = True
    actor.tick()
    actor.log.flush()
    assert not read_log(actor.log.path, 19, 5).action.any()
    actor.hold = False
    learner = SAC(19, 5, SACConfig(hidden=(16, 16)), generator=torch.Generator().manual_seed(1))
    learner.fit_obs_normalizer(np.random.default_rng(0).normal(3.0, 2.0, (100, 19)))
    WeightsPublisher(actor.reader.block).publish(flatten(learner.acting_state()), 7)
    assert not actor.policy.obs_norm_fitted
    assert actor.poll_weights() and actor.reader.version == 7
    # The weights and the observation normalizer they were trained with arrive together.
    for key, value in learner.actor.state_dict().items():
        torch.testing.assert_close(actor.policy.actor.state_dict()[key], value)
    assert actor.policy.obs_norm_fitted
    torch.testing.assert_close(actor.policy.obs_norm.mean, learner.obs_norm.mean)
    obs = np.random.default_rng(1).normal(3.0, 2.0, 19)
    np.testing.assert_allclose(actor.policy.act(obs, deterministic=True),
                               learner.act(obs, deterministic=True), atol=1e-6)
    assert len(actor.weight_latency) == 1 and actor.weight_latency[0] >= 0
