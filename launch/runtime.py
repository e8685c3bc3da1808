"""``runtime=async``: the composition of the fixed-rate actor, the learner process and the
supervisor (:mod:`mbpo_arm.agent.runtime`). :func:`run_async` is what ``mbpo-arm train
runtime=async`` calls.

The actor's control loop ticks at ``runtime.control_hz`` on the wall clock (the twin in real
time with ``runtime.pacing=robot``; hardware always); the learner's copy of the env, used only
for its spaces and the model's task functions, runs unpaced. Between the ticks of a reset move
the loop runs the actor's weights poll and the supervisor's watch.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import sys
from collections.abc import Callable
from functools import partial
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import gymnasium as gym

from mbpo_arm.agent.checkpoint import latest_checkpoint, step_of
from mbpo_arm.agent.planning import acting_state
from mbpo_arm.agent.runtime.actor import Actor
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.control import UPDATES, make_control
from mbpo_arm.agent.runtime.replay_log import LogDamageError, ReplayLog
from mbpo_arm.agent.runtime.supervisor import Supervisor
from mbpo_arm.agent.runtime.weights import WeightsReader, create_block, flatten
from mbpo_arm.configs.schema import ConfigError, RunConfig
from mbpo_arm.hardware.gate import make_gate
from mbpo_arm.launch.build import (
    attach_status,
    build_actor_planner,
    build_learner_run,
    build_policy,
    load_policy,
    slow_resets,
    thread_policy,
)

LOG_FILE = "replay.log"


def run_async(rc: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run ``rc`` with the actor at ``runtime.control_hz`` and a background learner until
    ``trainer.total_steps`` logged transitions; returns the runtime figures."""
    ctx = mp.get_context("spawn")

    def supervise(actor: Actor, runtime: RuntimeConfig, block: Any) -> dict[str, Any]:
        make_run = partial(build_learner_run, slow_resets(rc), str(run_dir))
        supervisor = Supervisor(actor, runtime, make_run, Path(run_dir), block.name, ctx,
                                threads=thread_policy(rc))
        return supervisor.run(rc.trainer.total_steps)

    return run_with_actor(rc, run_dir, supervise, ctx)


def run_with_actor(rc: RunConfig, run_dir: Path,
                   supervise: Callable[[Actor, RuntimeConfig, Any], dict[str, Any]],
                   ctx: BaseContext) -> dict[str, Any]:
    """Build the fixed-rate actor of ``rc`` (its env, policy, planner, log in ``run_dir``,
    weights block and control block) and hand it to ``supervise(actor, runtime, block)``,
    which runs it and keeps it fed with weights; closes everything after."""
    runtime = rc.runtime
    if not rc.task.id.startswith("ArmReach") and runtime.pacing == "robot":
        runtime = dataclasses.replace(runtime, pacing="actor")  # gym tasks do not wait
    if rc.backend_name != "mujoco" and runtime.pacing == "actor":
        raise ConfigError(f"runtime.pacing=actor is for the twin; backend={rc.backend_name}'s "
                          "control loop keeps the clock: use runtime.pacing=robot")
    run_dir = Path(run_dir)
    actor_rc = dataclasses.replace(slow_resets(rc), device="cpu")
    check_gate(runtime, rc)  # before a port opens
    env, policy = build_policy(actor_rc, realtime=runtime.pacing == "robot")
    try:
        gate = make_episode_gate(runtime, env)
    except Exception:
        env.close()
        raise
    if rc.init_from:  # act with the pretrained policy (and its normalizer) from the first tick
        load_policy(policy, rc.init_from)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    log = open_log(run_dir, obs_dim, act_dim, runtime, rc.resume_options.accept_log_damage)
    planner = build_actor_planner(actor_rc, env, policy)
    block = create_block(len(flatten(
        acting_state(policy, planner.ensemble if planner is not None else None))))
    try:
        actor = Actor(env, policy, log, runtime, WeightsReader(block), make_control(ctx),
                      rc.agent.sac.learning_starts, rc.seed, gate=gate, planner=planner)
        attach_status(env, lambda: (actor.steps, int(actor.control[UPDATES])),
                      rc.agent.sac.learning_starts)
        loop = getattr(env.unwrapped, "loop", None)
        if loop is not None:  # a reset move's ticks are the actor's ticks too
            loop.between = actor.between_reset_ticks
            actor.extra_stats = loop.stats
        return supervise(actor, runtime, block)
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
                         env.unwrapped.loop.backend if hasattr(env.unwrapped, "loop") else None)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def open_log(run_dir: Path, obs_dim: int, act_dim: int, runtime: RuntimeConfig,
             accept_log_damage: bool = False) -> ReplayLog:
    """The run's replay log, checked against the newest checkpoint (which
    :func:`~launch.commands.check_resume` verified): a new log starts at its step (a run that
    switches from the sync loop); damage the checkpoint holds is reported and kept as it is;
    damage after it is refused in one line unless ``resume.accept_log_damage=true``. With
    ``runtime=ray`` the log numbers this source's transitions only (the learner's checkpoint
    counts every source's), so it is checked as a whole."""
    ckpt = latest_checkpoint(run_dir) if runtime.mode != "ray" else None
    ckpt_steps = step_of(ckpt) if ckpt is not None else 0
    try:
        return ReplayLog.open(run_dir / LOG_FILE, obs_dim, act_dim,
                              runtime.fsync_every_records, runtime.fsync_every_s,
                              first_seq=ckpt_steps, checkpoint_step=ckpt_steps,
                              accept_log_damage=accept_log_damage)
    except LogDamageError as err:
        raise ConfigError(str(err)) from None
