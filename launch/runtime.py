"""``runtime=async``: the composition of the fixed-rate actor, the learner process and the
supervisor (:mod:`mbpo_arm.agent.runtime`). :func:`run_async` is what ``mbpo-arm train
runtime=async`` calls.

The actor's twin runs with ``realtime: true`` (its ``advance()`` returns at the wall-clock
tick) at ``runtime.control_hz``; the learner's copy of the env, used only for its spaces and
the model's task functions, runs unpaced.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import sys
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym

from mbpo_arm.agent.checkpoint import latest_checkpoint
from mbpo_arm.agent.runtime.actor import Actor
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.control import UPDATES, make_control
from mbpo_arm.agent.runtime.replay_log import ReplayLog
from mbpo_arm.agent.runtime.supervisor import Supervisor
from mbpo_arm.agent.runtime.weights import WeightsReader, create_block, flatten
from mbpo_arm.configs.schema import ConfigError, RunConfig
from mbpo_arm.hardware.gate import make_gate
from mbpo_arm.launch.build import (
    attach_status,
    build_learner_run,
    build_policy,
    load_policy,
    paced,
    torch_threads,
)

LOG_FILE = "replay.log"


def run_async(rc: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run ``rc`` with the actor at ``runtime.control_hz`` and a background learner until
    ``trainer.total_steps`` logged transitions; returns the runtime figures."""
    runtime = rc.runtime
    if not rc.task.id.startswith("ArmReach") and runtime.pacing == "robot":
        runtime = dataclasses.replace(runtime, pacing="actor")  # gym tasks do not wait
    run_dir = Path(run_dir)
    ctx = mp.get_context("spawn")
    actor_rc = dataclasses.replace(paced(rc, runtime, runtime.pacing == "robot"), device="cpu")
    check_gate(runtime, rc)  # before a port opens
    env, policy = build_policy(actor_rc)
    try:
        gate = make_episode_gate(runtime, env)
    except Exception:
        env.close()
        raise
    if rc.init_from:  # act with the pretrained policy (and its normalizer) from the first tick
        load_policy(policy, rc.init_from)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    log = open_log(run_dir, obs_dim, act_dim, runtime)
    block = create_block(len(flatten(policy.acting_state())))
    try:
        actor = Actor(env, policy, log, runtime, WeightsReader(block), make_control(ctx),
                      rc.agent.sac.learning_starts, rc.seed, gate=gate)
        attach_status(env, lambda: (actor.steps, int(actor.control[UPDATES])),
                      rc.agent.sac.learning_starts)
        make_run = partial(build_learner_run, paced(rc, runtime, False), str(run_dir))
        supervisor = Supervisor(actor, runtime, make_run, run_dir, block.name, ctx,
                                threads=torch_threads(rc))
        return supervisor.run(rc.trainer.total_steps)
    finally:
        log.close()
        env.close()
        block.close()
        block.shm.unlink()


def check_gate(runtime: RuntimeConfig, rc: RunConfig) -> None:
    """What ``runtime.episode_gate`` needs and can be checked before the robot connects: a
    robot task, a terminal for ``key``, the ros2 backend for ``topic``."""
    gate = runtime.episode_gate
    if gate is None:
        return
    if not rc.task.id.startswith("ArmReach"):
        raise ConfigError(f"runtime.episode_gate={gate} holds a robot between episodes; "
                          f"task.id={rc.task.id} has no robot")
    if gate == "key" and not sys.stdin.isatty():
        raise ConfigError("runtime.episode_gate=key needs a terminal on stdin to read Enter "
                          "from; run it in a terminal, or use runtime.episode_gate=file "
                          "(runtime.gate_file=<path>) or topic (backend=ros2)")
    if gate == "topic" and rc.backend_name != "ros2":
        raise ConfigError(f"runtime.episode_gate=topic needs backend=ros2 (the topic is "
                          f"backend.next_episode_topic); backend={rc.backend_name} has no "
                          "topics: use key or file")


def make_episode_gate(runtime: RuntimeConfig, env: gym.Env) -> Any:
    """The gate of ``runtime.episode_gate`` on ``env``'s robot (None for none); its
    start-up errors as :class:`ConfigError`."""
    try:
        return make_gate(runtime.episode_gate, runtime.gate_file,
                         getattr(env.unwrapped, "robot", None))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def open_log(run_dir: Path, obs_dim: int, act_dim: int, runtime: RuntimeConfig) -> ReplayLog:
    """The run's replay log; a new one starts at the newest checkpoint's step (a run that
    switches from the sync loop), an old one must reach at least that step."""
    ckpt = latest_checkpoint(run_dir)
    ckpt_steps = int(ckpt.name.removeprefix("step_")) if ckpt is not None else 0
    log = ReplayLog.open(run_dir / LOG_FILE, obs_dim, act_dim, runtime.fsync_every_records,
                         runtime.fsync_every_s, first_seq=ckpt_steps)
    if log.next_seq < ckpt_steps:
        log.close()
        raise ConfigError(f"{log.path} ends at transition {log.next_seq} but the newest "
                          f"checkpoint {ckpt} is at step {ckpt_steps}; the log was replaced")
    return log
