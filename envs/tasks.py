"""Rewards and terminations as pure, batched functions of ``(obs, action, next_obs)``.

The env and the model rollouts share these, so a learned model never has to learn a reward the
task already knows (Janner et al. 2019 use the known termination functions the same way). Each
function takes arrays shaped ``[..., D]`` (NumPy or torch alike) and returns ``[...]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Array = Any  # np.ndarray | torch.Tensor: the functions below work on either
RewardFn = Callable[[Array, Array, Array], Array]
TerminationFn = Callable[[Array, Array, Array], Array]
DeriveFn = Callable[[Array, Array], Array]  # (obs, predicted next_obs) -> next_obs
RelabelFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]  # goal relabelling


def _norm(x: Array) -> Array:
    """Euclidean norm over the last axis, for NumPy arrays and tensors alike."""
    return (x**2).sum(-1) ** 0.5


def _all_finite(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.isfinite(x).all(-1)
    return np.isfinite(x).all(-1)


@dataclass(frozen=True)
class ReachLayout:
    """Where things sit in an ``ArmReach`` observation of ``J`` joints (``D = 2 J + 9``):
    ``[q (J), qdot (J), ee position (3), target position (3), target - ee (3)]``.

    The last block repeats what the two before it hold; giving the networks the offset
    directly, as goal-reaching tasks commonly do, makes the fine approach far easier to learn.
    """

    joints: int

    @property
    def ee(self) -> slice:
        return slice(2 * self.joints, 2 * self.joints + 3)

    @property
    def target(self) -> slice:
        return slice(2 * self.joints + 3, 2 * self.joints + 6)

    @property
    def offset(self) -> slice:
        return slice(2 * self.joints + 6, 2 * self.joints + 9)

    @property
    def obs_dim(self) -> int:
        return 2 * self.joints + 9


def reach_distance(obs: Array, layout: ReachLayout) -> Array:
    """``[...]`` distance from the end effector to the target (m)."""
    return _norm(obs[..., layout.ee] - obs[..., layout.target])


def reach_reward(obs: Array, action: Array, next_obs: Array, *, layout: ReachLayout,
                 action_cost: float) -> Array:
    """``-||ee' - target'|| - action_cost * ||a||^2`` (``[...]``)."""
    return -reach_distance(next_obs, layout) - action_cost * (action**2).sum(-1)


def reach_derive(obs: Array, next_obs: Array, *, layout: ReachLayout,
                 ee_fn: Callable[[Array], Array]) -> Array:
    """A predicted reach observation made consistent: the target copied from ``obs`` (it
    never moves), the end effector from the predicted joint positions by forward kinematics
    ``ee_fn`` (``[..., J] -> [..., 3]``), and the offset from those two. Joint positions carry
    the model's error through the kinematics, which is far smaller than a separately predicted
    end effector's, and the reward never sees an offset that disagrees with the rest.

    Args:
        obs, next_obs: ``[..., 2 J + 9]`` (torch or NumPy alike). Returns the same shape.
    """
    joints = next_obs[..., :2 * layout.joints]
    ee = ee_fn(next_obs[..., :layout.joints])
    target = obs[..., layout.target]
    cat = torch.cat if isinstance(next_obs, torch.Tensor) else np.concatenate
    return cat([joints, ee, target, target - ee], -1)


def reach_relabel(obs: np.ndarray, fraction: float, rng: np.random.Generator, *,
                  layout: ReachLayout, near: float = 0.03) -> np.ndarray:
    """Model-rollout start states ``[N, D]`` with the target of a random ``fraction`` of rows
    replaced (a copy; ``obs`` is kept). A third of the new targets are other rows' targets
    (the task's own target distribution), a third other rows' end-effector positions (goals
    the arm has reached), a third the row's own end effector plus Gaussian noise of ``near``
    m per axis (the last few centimetres of an approach, where success is decided).

    The target does not enter the dynamics, so the model's predictions hold for any target,
    and the task's reward follows from it: hindsight goals (Andrychowicz et al. 2017, HER) in
    model rollouts (Yang et al. 2021, "MHER"), so the policy practises many goals from each
    real state.
    """
    out = np.array(obs, copy=True)
    n = len(out)
    rows = np.flatnonzero(rng.random(n) < fraction)
    donors = rng.integers(0, n, len(rows))
    kind = rng.integers(0, 3, len(rows))[:, None]
    donor = obs[donors]
    new = np.where(kind == 0, donor[:, layout.target], donor[:, layout.ee])
    ee = out[rows, layout.ee]
    new = np.where(kind == 2, ee + rng.normal(0.0, near, ee.shape), new)
    out[rows, layout.target] = new
    out[rows, layout.offset] = new - ee
    return out


def never_terminates(obs: Array, action: Array, next_obs: Array) -> Array:
    """A reach episode ends only by its time limit, which is ``truncated``, never this."""
    if isinstance(next_obs, torch.Tensor):
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)
    return np.zeros(np.shape(next_obs)[:-1], dtype=bool)


def inverted_pendulum_termination(obs: Array, action: Array, next_obs: Array) -> Array:
    """``InvertedPendulum-v5``: the pole leaves +-0.2 rad or the state is not finite."""
    return ~_all_finite(next_obs) | (abs(next_obs[..., 1]) > 0.2)


def inverted_pendulum_reward(obs: Array, action: Array, next_obs: Array) -> Array:
    """``InvertedPendulum-v5``: 1 while the pole is up, 0 on the step that ends it."""
    alive = ~inverted_pendulum_termination(obs, action, next_obs)
    return alive.float() if isinstance(alive, torch.Tensor) else alive.astype(np.float64)


def hopper_termination(obs: Array, action: Array, next_obs: Array) -> Array:
    """``Hopper-v5`` (default ranges, positions excluded from the observation): unhealthy when
    the height leaves ``(0.7, inf)``, the torso angle leaves ``(-0.2, 0.2)`` or any later
    entry leaves ``(-100, 100)`` (the env checks unclipped velocities; the observation clips
    them at 10, so those never trip here)."""
    z, angle, rest = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy = (z > 0.7) & (angle > -0.2) & (angle < 0.2) & (abs(rest) < 100).all(-1)
    return ~healthy | ~_all_finite(next_obs)


@dataclass(frozen=True)
class TaskFunctions:
    """What model rollouts need from a task. ``reward`` is ``None`` where the reward is not a
    function of the observations (Hopper's uses the x position, which the observation
    excludes); the dynamics model then learns it."""

    reward: RewardFn | None
    termination: TerminationFn
    derive: DeriveFn | None = None  # recomputes what follows from the rest of a prediction
    relabel: RelabelFn | None = None  # new goals for model-rollout starts (goal tasks)


def task_functions(env_id: str) -> TaskFunctions:
    """The pure reward and termination of a gymnasium task id. ``ArmReach`` envs give their
    own (:meth:`envs.reach.ArmReachEnv.task_functions`). An id without known functions gets a
    learned reward and no termination, correct for tasks that end only by a time limit."""
    if env_id.startswith("InvertedPendulum"):
        return TaskFunctions(inverted_pendulum_reward, inverted_pendulum_termination)
    if env_id.startswith("Hopper"):
        return TaskFunctions(None, hopper_termination)
    return TaskFunctions(None, never_terminates)
