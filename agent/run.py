"""The state of a training run and how it is saved, restored and evaluated.

:mod:`agent.train` holds the loop; this module holds what the loop works on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mbpo_arm.agent.config import EnsembleConfig, MBPOConfig, SACConfig, TrainerConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble
from mbpo_arm.agent.logger import RunLogger
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.sac import SAC


@dataclass
class Model:
    """The dynamics side of MBPO: the ensemble, its elites, the buffer of model rollouts, and
    the task's pure reward (``None``: learned), termination and observation completion
    (``None``: the prediction as it is) functions."""

    ensemble: ProbabilisticEnsemble
    cfg: EnsembleConfig
    mbpo: MBPOConfig
    reward_fn: Callable | None
    termination_fn: Callable | None
    derive_fn: Callable | None = None
    relabel_fn: Callable | None = None  # envs.tasks.RelabelFn; None: the task has no goals
    buffer: ReplayBuffer | None = None
    elites: list[int] = field(default_factory=list)
    horizon: int = 0


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
    model: Model | None = None  # MBPO's model; None for model-free SAC
    model_log: dict[str, Any] = field(default_factory=dict)  # latest model and rollout figures
    rolled_out_at: int = -1  # env step of the last model rollout (-1: none in this process)
    shield_counts: dict[str, int] = field(default_factory=dict)  # interventions per rule


# ----------------------------------------------------------------------- save and restore
def save_run(run: Run) -> Path:
    """Save networks, optimizers, both buffers, counters and RNG states (crash-safe)."""
    state = {"sac": run.sac.state_dict(), "counters": vars(run.counters).copy(),
             "rng": run.rng.bit_generator.state, "generator": run.generator.get_state(),
             "returns": list(run.returns), "successes": list(run.successes),
             "saved_at": time.time()}
    buffers = {"replay": run.replay}
    if run.model is not None:
        state["model"] = {"ensemble": run.model.ensemble.state_dict(),
                          "elites": run.model.elites, "horizon": run.model.horizon}
        if run.model.buffer is not None:
            buffers["model_buffer"] = run.model.buffer
    return save_checkpoint(run.run_dir, run.counters.env_steps, state, buffers)


def restore(run: Run, checkpoint_dir: Path | None = None) -> bool:
    """Load the newest checkpoint of ``run.run_dir`` (or ``checkpoint_dir``) into ``run``;
    ``False`` when there is none."""
    path = checkpoint_dir or latest_checkpoint(run.run_dir)
    if path is None:
        return False
    state, buffers = load_checkpoint(path, ("replay", "model_buffer"), map_location=run.device)
    run.sac.load_state_dict(state["sac"])
    run.replay = buffers["replay"]
    run.counters = Counters(**state["counters"])
    run.rng.bit_generator.state = state["rng"]
    run.generator.set_state(state["generator"].cpu())
    run.returns.extend(state["returns"])
    run.successes.extend(state["successes"])
    if run.model is not None and "model" in state:
        run.model.ensemble.load_state_dict(state["model"]["ensemble"])
        run.model.elites = list(state["model"]["elites"])
        run.model.horizon = int(state["model"]["horizon"])
        run.model.buffer = buffers.get("model_buffer")
    return True


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
