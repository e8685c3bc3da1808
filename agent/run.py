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

from agent.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from agent.ensemble import EnsembleConfig, ProbabilisticEnsemble
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
    stop_at: float | None = None  # stop early once an evaluation's stop_metric reaches this
    stop_metric: str = "eval_success_rate"  # eval_success_rate or eval_return

    def __post_init__(self) -> None:
        for name in ("total_steps", "eval_every", "eval_episodes", "checkpoint_every",
                     "log_every", "replay_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.stop_metric not in ("eval_success_rate", "eval_return"):
            raise ValueError(f"trainer.stop_metric={self.stop_metric!r} is not allowed; choose "
                             "eval_success_rate or eval_return")


@dataclass
class MBPOConfig:
    """Model-based policy optimization (Janner et al. 2019, algorithm 2 and appendix C)."""

    model_train_every: int = 250  # env steps between model trainings (each followed by a rollout)
    rollout_every: int | None = None  # env steps between rollouts; None: model_train_every
    model_learning_starts: int = 5_000  # real steps collected before the first model training
    rollout_batch: int = 100_000  # real start states per branched rollout
    # [start_epoch, end_epoch, min_h, max_h]: horizon grows linearly between the epochs
    horizon_schedule: tuple[int, int, int, int] = (20, 100, 1, 15)
    epoch_length: int = 1_000  # env steps per epoch (the schedule's and retention's unit)
    retain_epochs: int = 1  # epochs of model rollouts kept in the model buffer
    real_ratio: float = 0.05  # fraction of real transitions in each SAC batch
    penalty_coef: float = 0.0  # MOPO lambda: reward - lambda * max member std norm
    penalty_anneal_steps: int = 0  # lambda falls linearly to 0 over these env steps; 0: constant
    max_disagreement: float | None = None  # stop a branch beyond this elite discrepancy
    report_horizons: tuple[int, ...] = (1, 5, 10)  # multi-step error horizons in the report
    rollout_chunk: int | None = 4096  # rows per ensemble pass on CPU; null for one pass
    goal_relabel: float = 0.0  # goal tasks: fraction of rollout starts given another goal

    def __post_init__(self) -> None:
        self.horizon_schedule = tuple(int(h) for h in self.horizon_schedule)  # type: ignore
        self.report_horizons = tuple(int(h) for h in self.report_horizons)
        if len(self.horizon_schedule) != 4 or self.horizon_schedule[2] < 1 \
                or self.horizon_schedule[3] < self.horizon_schedule[2]:
            raise ValueError("agent.mbpo.horizon_schedule must be [start_epoch, end_epoch, "
                             f"min_h, max_h] with 1 <= min_h <= max_h, got "
                             f"{list(self.horizon_schedule)}")
        if self.rollout_every is not None and self.rollout_every < 1:
            raise ValueError(f"agent.mbpo.rollout_every must be >= 1 or null, got "
                             f"{self.rollout_every}")
        for name in ("model_train_every", "rollout_batch", "epoch_length", "retain_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.mbpo.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"agent.mbpo.real_ratio must be in [0, 1], got {self.real_ratio}")
        if not 0.0 <= self.goal_relabel <= 1.0:
            raise ValueError(f"agent.mbpo.goal_relabel must be in [0, 1], got {self.goal_relabel}")
        if self.penalty_coef < 0:
            raise ValueError(f"agent.mbpo.penalty_coef must be >= 0, got {self.penalty_coef}")
        if self.penalty_anneal_steps < 0:
            raise ValueError("agent.mbpo.penalty_anneal_steps must be >= 0, got "
                             f"{self.penalty_anneal_steps}")

    @property
    def rollout_period(self) -> int:
        """Env steps between model rollouts."""
        return self.rollout_every or self.model_train_every

    def model_buffer_capacity(self, horizon: int) -> int:
        """Retention epochs x rollouts per epoch x rollout batch x horizon (MBPO's sizing)."""
        per_epoch = max(self.epoch_length // self.rollout_period, 1)
        return self.retain_epochs * per_epoch * self.rollout_batch * horizon


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
