"""The state of a training run and how it is saved, restored and evaluated.

:mod:`mbpo_arm.agent.train` holds the loop; this module holds what the loop works on, split
into the parts each phase needs: the :class:`Agent` (what learns), the trainer's
:class:`Progress` (what it counts and reports), and the :class:`Run` that holds them with the
envs and the schedule.
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
from mbpo_arm.agent.config import EnsembleConfig, MBPOConfig, TrainerConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble
from mbpo_arm.agent.logger import RunLogger
from mbpo_arm.agent.planning import CEMPlanner
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.sac import SAC
from mbpo_arm.agent.threads import ThreadGovernor


@dataclass
class Model:
    """The dynamics side of MBPO: the ensemble (``fit``: its size and training settings), the
    schedule (``mbpo``), its elites, the buffer of model rollouts, and the task's pure reward
    (``None``: learned), termination and observation completion (``None``: the prediction as
    it is) functions."""

    ensemble: ProbabilisticEnsemble
    fit: EnsembleConfig
    mbpo: MBPOConfig
    reward_fn: Callable | None
    termination_fn: Callable | None
    derive_fn: Callable | None = None
    relabel_fn: Callable | None = None  # envs.tasks.RelabelFn; None: the task has no goals
    buffer: ReplayBuffer | None = None
    elites: list[int] = field(default_factory=list)
    horizon: int = 0


@dataclass
class Agent:
    """What learns, and what a checkpoint holds of it: the policy (SAC, with its settings),
    the real transitions, the dynamics model (``None`` for model-free SAC) and the run's
    random streams (``rng`` for numpy sampling, ``generator`` for torch). ``planner``: CEM-MPC
    over the model that acts instead of the policy (``agent.act.planner``); ``policy_learns``:
    SAC is trained (False for ``agent=pets``, which only plans)."""

    sac: SAC
    replay: ReplayBuffer
    rng: np.random.Generator
    generator: torch.Generator
    model: Model | None = None
    planner: CEMPlanner | None = None
    policy_learns: bool = True

    @property
    def device(self) -> torch.device:
        return self.sac.device


@dataclass
class Counters:
    """What a resumed run continues from."""

    env_steps: int = 0
    episodes: int = 0
    updates: int = 0


@dataclass
class Progress:
    """The trainer's counters and the figures it reports (recent episodes, the last
    evaluation, update, model fit and rollout, the shield's interventions per rule)."""

    counters: Counters = field(default_factory=Counters)
    returns: deque = field(default_factory=lambda: deque(maxlen=20))
    successes: deque = field(default_factory=lambda: deque(maxlen=20))
    episode_return: float = 0.0
    last_eval: dict[str, Any] = field(default_factory=dict)
    last_update: dict[str, float] = field(default_factory=dict)
    model_log: dict[str, Any] = field(default_factory=dict)  # latest model and rollout figures
    rolled_out_at: int = -1  # env step of the last model rollout (-1: none in this process)
    shield_counts: dict[str, int] = field(default_factory=dict)  # interventions per rule

    def end_episode(self, success: float | None) -> None:
        """Count the finished episode and keep its return (and success, where reported)."""
        self.counters.episodes += 1
        self.returns.append(self.episode_return)
        if success is not None:
            self.successes.append(success)
        self.episode_return = 0.0


@dataclass
class Run:
    """One training run: its envs, what learns (``agent``), the trainer's ``schedule`` and
    ``progress``, and where results go. The phases of :mod:`mbpo_arm.agent.train` take the
    parts they use."""

    env: gym.Env
    eval_env: gym.Env
    agent: Agent
    schedule: TrainerConfig
    logger: RunLogger
    run_dir: Path
    seed: int
    progress: Progress = field(default_factory=Progress)
    seeded: bool = False  # the env's first reset in this process is seeded
    threads: ThreadGovernor | None = None  # threads=auto: polled between steps


# ----------------------------------------------------------------------- save and restore
def save_run(run: Run) -> Path:
    """Save networks, optimizers, both buffers, counters and RNG states (crash-safe)."""
    agent, progress = run.agent, run.progress
    state = {"sac": agent.sac.state_dict(), "counters": vars(progress.counters).copy(),
             "rng": agent.rng.bit_generator.state, "generator": agent.generator.get_state(),
             "returns": list(progress.returns), "successes": list(progress.successes),
             "saved_at": time.time()}
    buffers = {"replay": agent.replay}
    if agent.model is not None:
        state["model"] = {"ensemble": agent.model.ensemble.state_dict(),
                          "elites": agent.model.elites, "horizon": agent.model.horizon}
        if agent.model.buffer is not None:
            buffers["model_buffer"] = agent.model.buffer
    return save_checkpoint(run.run_dir, progress.counters.env_steps, state, buffers)


def restore(run: Run, checkpoint_dir: Path | None = None) -> bool:
    """Load the newest checkpoint of ``run.run_dir`` (or ``checkpoint_dir``) into ``run``;
    ``False`` when there is none. A damaged one (a file that does not match its manifest,
    a non-finite tensor) raises :class:`~mbpo_arm.agent.checkpoint.DamagedCheckpoint`."""
    path = checkpoint_dir or latest_checkpoint(run.run_dir)
    if path is None:
        return False
    agent, progress = run.agent, run.progress
    state, buffers = load_checkpoint(path, ("replay", "model_buffer"), map_location=agent.device)
    agent.sac.load_state_dict(state["sac"])
    agent.replay = buffers["replay"]
    progress.counters = Counters(**state["counters"])
    agent.rng.bit_generator.state = state["rng"]
    agent.generator.set_state(state["generator"].cpu())
    progress.returns.extend(state["returns"])
    progress.successes.extend(state["successes"])
    if agent.model is not None and "model" in state:
        agent.model.ensemble.load_state_dict(state["model"]["ensemble"])
        agent.model.elites = list(state["model"]["elites"])
        agent.model.horizon = int(state["model"]["horizon"])
        agent.model.buffer = buffers.get("model_buffer")
    return True


def evaluate_policy(sac: SAC, env: gym.Env, episodes: int, seed: int = 0,
                    render: bool = False, act: Callable[[np.ndarray], np.ndarray] | None = None,
                    on_reset: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Run the deterministic policy (or ``act``, e.g. a planner; ``on_reset`` before each
    episode) for ``episodes`` episodes.

    Returns ``mean_return``, ``success_rate`` (``None`` where the env reports no
    ``is_success``), per-episode ``returns``, and ``frames`` when ``render``.
    """
    returns, successes, frames = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        on_reset()
        done, total, info = False, 0.0, {}
        while not done:
            action = sac.act(obs, deterministic=True) if act is None else act(obs)
            obs, reward, terminated, truncated, info = env.step(action)
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
