"""The actor across episode ends, on the real (realtime) twin behind the shield: a slow reset
polls weights and runs the supervisor's watch between its ticks; an episode gate holds the
arm, logging nothing, until it is released."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import Actor
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.replay_log import ReplayLog, read_log
from mbpo_arm.agent.runtime.weights import WeightsPublisher, WeightsReader, create_block, flatten
from mbpo_arm.agent.sac import SAC
from mbpo_arm.envs.config import TaskConfig
from mbpo_arm.envs.factory import make_env
from mbpo_arm.hardware.config import ShieldSettings
from mbpo_arm.hardware.gate import FileGate
from mbpo_arm.sim.config import TwinConfig

HZ = 50


def make_actor(tmp_path: Path, gate: object = None, **runtime) -> Actor:
    """An actor on a realtime twin at ``HZ`` with resets through the shield, random actions
    throughout; the control loop's reset ticks run the actor's hook, as the runtime wires it."""
    env = make_env(TaskConfig(max_episode_steps=5), "mujoco", TwinConfig(),
                   shield=ShieldSettings(slow_reset=True), control_hz=HZ, realtime=True)
    policy = SAC(19, 5, SACConfig(hidden=(16, 16)), generator=torch.Generator().manual_seed(0))
    block = create_block(len(flatten(policy.acting_state())))
    log = ReplayLog.open(tmp_path / "replay.log", 19, 5)
    control = mp.get_context("spawn").RawArray("q", ctl.WORDS)
    cfg = RuntimeConfig(mode="async", control_hz=HZ, **runtime)
    actor = Actor(env, policy, log, cfg, WeightsReader(block), control, learning_starts=10**6,
                  seed=0, gate=gate)
    env.unwrapped.loop.between = actor.between_reset_ticks
    actor.extra_stats = env.unwrapped.loop.stats
    return actor


@pytest.fixture
def actor(tmp_path: Path):
    a = make_actor(tmp_path)
    yield a
    a.stop()
    a.log.close()
    a.env.close()
    a.reader.block.close()
    a.reader.block.shm.unlink()


@pytest.mark.slow
def test_weights_published_during_a_slow_reset_are_used_at_the_next_tick(actor: Actor) -> None:
    publisher = WeightsPublisher(actor.reader.block)
    learner = SAC(19, 5, SACConfig(hidden=(16, 16)), generator=torch.Generator().manual_seed(1))
    watched: list[int] = []  # the weights version the actor had at each supervisor watch
    publish_at = [-1]

    def watch() -> None:
        watched.append(actor.reader.version)
        if len(watched) == publish_at[0]:  # the learner publishes while the arm moves home
            publisher.publish(flatten(learner.acting_state()), 7)

    actor.start(watch)
    loop = actor.env.unwrapped.loop
    for _ in range(4):
        actor.tick()
    watched.clear()  # the first reset's watches
    publish_at[0] = 3
    loop.backend.place(loop.backend.home_position + np.array([0.4, 0.3, -0.3, 0.3, 0.4, 0.0]))
    loop.connect()  # the command stream restarts where the arm now is
    actor.tick()  # the episode's last step, then the slow reset (~1 s of ticks)
    assert actor.episodes == 1 and len(watched) > 20, "the reset was not a slow one"
    assert watched[2] != 7 and watched[3] == 7  # used at the reset's next tick
    assert actor.versions_applied == 1 and actor.weight_latency[0] < 0.5
    summary = actor.summary()
    assert summary["reset_timeouts"] == 0 and summary["weight_latency"]["max"] < 0.5
    actor.stop()


@pytest.mark.slow
def test_a_file_gate_holds_between_episodes_without_logging(tmp_path: Path, capsys) -> None:
    go = tmp_path / "next-episode"
    actor = make_actor(tmp_path, FileGate(go), episode_gate="file", gate_file=str(go))
    try:
        actor.start(lambda: None)
        loop = actor.env.unwrapped.loop
        for _ in range(5):  # one episode (time limit 5), then the reset and the wait
            actor.tick()
            actor.between_ticks()
        assert actor.waiting and actor.steps == 5
        actor.console.flush()  # status lines are written by the console's thread
        assert "holding until the file" in capsys.readouterr().err
        held = actor.obs[:5].copy()
        WeightsPublisher(actor.reader.block).publish(flatten(actor.policy.acting_state()), 3)
        for _ in range(20):  # 0.4 s of holds
            actor.tick()
            actor.between_ticks()
        assert actor.steps == 5 and len(read_log(actor.log.path, 19, 5)) == 5  # no transition
        assert actor.gated_ticks == 20 and actor.reader.version == 3  # weights still polled
        assert loop.shield.counts["watchdog"] == 0  # the state kept coming
        np.testing.assert_allclose(actor.obs[:5], held, atol=0.01)  # and the arm held still
        go.touch()
        actor.tick()
        assert not actor.waiting and not go.exists()  # released, the file consumed
        actor.console.flush()
        assert "released by file" in capsys.readouterr().err
        actor.tick()
        assert actor.steps == 6
        summary = actor.summary()
        assert summary["gate_waits"] == 1 and summary["gated_ticks"] == 21
    finally:
        actor.stop()
        actor.log.close()
        actor.env.close()
        actor.reader.block.close()
        actor.reader.block.shm.unlink()


def test_the_gate_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="runtime.episode_gate='button'"):
        RuntimeConfig(mode="async", episode_gate="button")
    with pytest.raises(ValueError, match="needs runtime=async"):
        RuntimeConfig(mode="sync", episode_gate="key")
    with pytest.raises(ValueError, match="runtime.gate_file"):
        RuntimeConfig(mode="async", episode_gate="file")


def test_gates_the_composition_cannot_serve_fail_at_start_up(tmp_path: Path,
                                                             monkeypatch) -> None:
    import io
    import sys

    from mbpo_arm.configs.loader import load_run_config
    from mbpo_arm.configs.schema import ConfigError
    from mbpo_arm.launch.runtime import check_gate

    rc, _ = load_run_config(["backend=mujoco", "task=reach"])
    with pytest.raises(ConfigError, match="needs backend=ros2"):
        check_gate(RuntimeConfig(mode="async", episode_gate="topic"), rc)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # a pipe, not a terminal
    with pytest.raises(ConfigError, match="needs a terminal on stdin"):
        check_gate(RuntimeConfig(mode="async", episode_gate="key"), rc)
    check_gate(RuntimeConfig(mode="async", episode_gate="file", gate_file=str(tmp_path)), rc)
