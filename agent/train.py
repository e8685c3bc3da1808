"""The training loop, top to bottom: collect, (train model, roll out,) update policy, evaluate,
checkpoint. SAC runs the phases without a model; MBPO (``agent.algo=mbpo``) adds the two
model phases (Janner et al. 2019, algorithm 2).

Only the gymnasium API is used here; the composition root builds the envs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agent.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from agent.logger import RunLogger
from agent.replay import ReplayBuffer
from agent.sac import SAC, SACConfig


@dataclass
class TrainerConfig:
    """The schedule of a run, in env steps."""

    total_steps: int = 30_000  # env steps in all
    eval_every: int = 2_500  # env steps between evaluations
    eval_episodes: int = 10  # episodes per evaluation (deterministic policy)
    checkpoint_every: int = 5_000  # env steps between checkpoints
    log_every: int = 1_000  # env steps between progress lines
    replay_capacity: int = 1_000_000  # real transitions kept

    def __post_init__(self) -> None:
        for name in ("total_steps", "eval_every", "eval_episodes", "checkpoint_every",
                     "log_every", "replay_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Counters:
    """What a resumed run continues from."""

    env_steps: int = 0
    episodes: int = 0
    updates: int = 0


@dataclass
class Run:
    """Everything one training run holds; the phases below read and change it."""

    env: gym.Env
    eval_env: gym.Env
    sac: SAC
    replay: ReplayBuffer
    cfg: TrainerConfig
    sac_cfg: SACConfig
    rng: np.random.Generator
    generator: torch.Generator
    logger: RunLogger
    run_dir: Path
    seed: int
    device: torch.device
    counters: Counters = field(default_factory=Counters)
    returns: deque = field(default_factory=lambda: deque(maxlen=20))
    successes: deque = field(default_factory=lambda: deque(maxlen=20))
    episode_return: float = 0.0
    last_eval: dict[str, Any] = field(default_factory=dict)
    last_update: dict[str, float] = field(default_factory=dict)
    seeded: bool = False  # the env's first reset in this process is seeded


# ------------------------------------------------------------------------------- the loop
def train(run: Run) -> dict[str, Any]:
    """Run until ``total_steps`` env steps; returns the final evaluation."""
    obs = start_episode(run)
    while run.counters.env_steps < run.cfg.total_steps:
        obs = collect_step(run, obs)
        update_policy(run)
        step = run.counters.env_steps
        if step % run.cfg.eval_every == 0:
            evaluate(run)
        if step % run.cfg.log_every == 0:
            report_progress(run)
        if step % run.cfg.checkpoint_every == 0:
            checkpoint(run)
    if run.counters.env_steps % run.cfg.eval_every or not run.last_eval:
        evaluate(run)
    checkpoint(run)
    return run.last_eval


# ---------------------------------------------------------------------------- the phases
def start_episode(run: Run) -> np.ndarray:
    """Reset the env; the first reset of a run (or of a resume) is seeded."""
    seed = None if run.seeded else run.seed + run.counters.episodes
    run.seeded = True
    obs, _ = run.env.reset(seed=seed)
    run.episode_return = 0.0
    return obs


def collect_step(run: Run, obs: np.ndarray) -> np.ndarray:
    """One real env step: random actions before ``learning_starts``, then the stochastic
    policy. Stores the *executed* action where the env reports it."""
    if run.counters.env_steps < run.sac_cfg.learning_starts:
        action = run.rng.uniform(-1.0, 1.0, run.env.action_space.shape).astype(np.float32)
    else:
        action = run.sac.act(obs)
    next_obs, reward, terminated, truncated, info = run.env.step(action)
    executed = info.get("executed_action", action)
    run.replay.add(obs, executed, reward, next_obs, terminated, truncated)
    run.counters.env_steps += 1
    run.episode_return += float(reward)
    if not (terminated or truncated):
        return next_obs
    run.counters.episodes += 1
    run.returns.append(run.episode_return)
    if "is_success" in info:
        run.successes.append(float(info["is_success"]))
    return start_episode(run)


def update_policy(run: Run) -> None:
    """``utd`` SAC updates on real data, once ``learning_starts`` steps are in replay."""
    if run.counters.env_steps < run.sac_cfg.learning_starts:
        return
    for _ in range(run.sac_cfg.utd):
        batch = run.replay.sample(run.sac_cfg.batch_size, run.rng, run.device)
        run.last_update = run.sac.update(batch)
        run.counters.updates += 1


def evaluate(run: Run) -> dict[str, Any]:
    """Deterministic policy for ``eval_episodes`` on the eval env; logs and returns the
    figures."""
    result = evaluate_policy(run.sac, run.eval_env, run.cfg.eval_episodes,
                             seed=10_000 + run.counters.env_steps)
    run.last_eval = {"eval_return": result["mean_return"],
                     "eval_success_rate": result["success_rate"]}
    event = {"env_steps": run.counters.env_steps, "episodes": run.counters.episodes,
             "updates": run.counters.updates, **run.last_eval, **_recent(run)}
    event.update(run.last_update)
    run.logger.log(event)
    return run.last_eval


def report_progress(run: Run) -> None:
    run.logger.progress(run.counters.env_steps, {**_recent(run), **run.last_eval})


def checkpoint(run: Run) -> Path:
    """Save networks, optimizers, replay, counters and RNG states (crash-safe)."""
    state = {"sac": run.sac.state_dict(), "counters": vars(run.counters).copy(),
             "rng": run.rng.bit_generator.state, "generator": run.generator.get_state(),
             "returns": list(run.returns), "successes": list(run.successes),
             "saved_at": time.time()}
    return save_checkpoint(run.run_dir, run.counters.env_steps, state, {"replay": run.replay})


# --------------------------------------------------------------------------------- helpers
def evaluate_policy(sac: SAC, env: gym.Env, episodes: int, seed: int = 0,
                    render: bool = False) -> dict[str, Any]:
    """Run the deterministic policy for ``episodes`` episodes.

    Returns ``mean_return``, ``success_rate`` (``None`` where the env reports no
    ``is_success``), per-episode ``returns``, and ``frames`` when ``render``.
    """
    returns, successes, frames = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total, info = False, 0.0, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(sac.act(obs, deterministic=True))
            total += float(reward)
            done = terminated or truncated
            if render:
                frames.append(env.render())
        returns.append(total)
        if "is_success" in info:
            successes.append(float(info["is_success"]))
    return {"mean_return": float(np.mean(returns)), "returns": returns,
            "success_rate": float(np.mean(successes)) if successes else None,
            "episodes": episodes, "frames": frames}


def _recent(run: Run) -> dict[str, Any]:
    return {"episode_return": float(np.mean(run.returns)) if run.returns else None,
            "success_rate": float(np.mean(run.successes)) if run.successes else None}


def restore(run: Run, checkpoint_dir: Path | None = None) -> bool:
    """Load the newest checkpoint of ``run.run_dir`` (or ``checkpoint_dir``) into ``run``;
    ``False`` when there is none."""
    path = checkpoint_dir or latest_checkpoint(run.run_dir)
    if path is None:
        return False
    state, buffers = load_checkpoint(path, map_location=run.device)
    run.sac.load_state_dict(state["sac"])
    run.replay = buffers["replay"]
    run.counters = Counters(**state["counters"])
    run.rng.bit_generator.state = state["rng"]
    run.generator.set_state(state["generator"])
    run.returns.extend(state["returns"])
    run.successes.extend(state["successes"])
    return True
