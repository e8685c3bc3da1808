"""Branched model rollouts: short model trajectories from real states (Janner et al. 2019,
MBPO, sec. 4 and algorithm 2), with MOPO's uncertainty-penalised reward (Yu et al. 2020).

All branches advance together: one policy call and one ensemble pass per step for every branch
still alive. Shapes: ``N`` start states, ``D`` observation size, ``A`` action size, ``M``
transitions kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, predict
from mbpo_arm.agent.math import ensemble_disagreement, mopo_penalty, mopo_reward

Policy = Callable[[torch.Tensor], torch.Tensor]  # obs [B, D] -> action [B, A]
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # -> [B]
TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # -> [B]
DeriveFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # obs, next_obs -> next_obs
KEYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


def _step(model: ProbabilisticEnsemble, elites: Sequence[int], policy: Policy,
          obs: torch.Tensor, reward_fn: RewardFn | None, termination_fn: TerminationFn | None,
          generator: torch.Generator | None, penalty_coef: float,
          max_disagreement: float | None, chunk_size: int | None, derive_fn: DeriveFn | None
          ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One model step for the ``B`` live branches ``obs`` ``[B, D]``.

    Returns the kept transitions (keys of ``KEYS`` but ``truncated``, plus ``penalty``), the
    next observations of the branches that go on, and how many branches the disagreement
    threshold stopped (a 0-d tensor, so no device sync per step).
    """
    action = policy(obs)
    pred = predict(model, obs, action, elites, generator, chunk_size)
    next_obs = pred.next_obs if derive_fn is None else derive_fn(obs, pred.next_obs)
    penalty = mopo_penalty(pred.member_std)  # [B]
    reward = pred.reward if reward_fn is None else reward_fn(obs, action, next_obs)
    reward = mopo_reward(reward, pred.member_std, penalty_coef)
    if termination_fn is None:
        terminated = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
    else:
        terminated = termination_fn(obs, action, next_obs).bool()
    if max_disagreement is None:
        keep = torch.ones_like(terminated)
    else:
        keep = ensemble_disagreement(pred.member_mean[..., :model.obs_dim]) <= max_disagreement
    step = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs,
            "terminated": terminated, "penalty": penalty}
    step = {k: v[keep] for k, v in step.items()}
    return step, next_obs[keep & ~terminated], (~keep).sum()


@torch.no_grad()
def branched_rollout(model: ProbabilisticEnsemble, elites: Sequence[int], policy: Policy,
                     start_obs: np.ndarray, horizon: int, reward_fn: RewardFn | None,
                     termination_fn: TerminationFn | None,
                     generator: torch.Generator | None = None, penalty_coef: float = 0.0,
                     max_disagreement: float | None = None, chunk_size: int | None = None,
                     derive_fn: DeriveFn | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Roll the policy in the model for up to ``horizon`` steps from each of ``N`` real states.

    Each step samples every branch's next state from one random elite (TS1, ``predict``). A
    branch stops after a transition that ``termination_fn`` marks terminated (that transition
    is kept), or when the elites disagree too much: if the MOReL discrepancy (largest distance
    between two elites' mean next states, raw units; Kidambi et al. 2020, ``ensemble_disagreement``)
    exceeds ``max_disagreement``, that transition is dropped and the branch ends. So with
    ``max_disagreement=0`` no transition is kept unless the elites agree exactly.

    Args:
        elites: member indices from the last ``ModelReport``.
        policy: batched ``obs [B, D] -> action [B, A]`` (torch, on the model's device).
        start_obs: ``[N, D]`` real states.
        reward_fn: the task's pure ``(obs, action, next_obs) -> [B]``; ``None`` uses the
            model's learned reward (the model must have ``learn_reward``).
        termination_fn: the task's pure ``(obs, action, next_obs) -> [B]`` bool; ``None`` never
            terminates.
        penalty_coef: MOPO's lambda: ``reward - lambda * max_e ||sigma_e||`` (Yu et al. 2020).
        max_disagreement: threshold on the discrepancy; ``None`` disables it.
        chunk_size: rows per ensemble pass (see ``predict``); ``None`` = all live branches.
        derive_fn: the task's ``(obs, next_obs) -> next_obs`` that recomputes the parts of a
            predicted observation that follow from the rest (``envs.tasks.reach_derive``),
            applied before the reward and the termination; ``None`` keeps the prediction.
    Returns:
        ``data``: flat ``[M, ...]`` arrays under ``KEYS``; float32, ``terminated``/``truncated``
        bool, ``truncated`` all False (no time limit inside a model rollout).
        ``stats``: transitions, mean_length (kept transitions per branch),
        stopped_by_disagreement and terminated (fractions of branches), mean_penalty (mean
        MOPO uncertainty over kept transitions, nan if none).
    """
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    if reward_fn is None and not model.learn_reward:
        raise ValueError("reward_fn is None but the ensemble does not learn the reward")
    dev = next(model.parameters()).device
    obs = torch.as_tensor(np.asarray(start_obs), dtype=torch.float32, device=dev)
    n_start = obs.shape[0]
    steps: list[dict[str, torch.Tensor]] = []
    stopped = torch.zeros((), dtype=torch.long, device=dev)
    for _ in range(horizon):
        if obs.shape[0] == 0:
            break
        step, obs, n_stopped = _step(model, elites, policy, obs, reward_fn, termination_fn,
                                     generator, penalty_coef, max_disagreement, chunk_size,
                                     derive_fn)
        steps.append(step)
        stopped += n_stopped
    return _collect(steps, n_start, model.obs_dim, model.act_dim, int(stopped))


def _collect(steps: list[dict[str, torch.Tensor]], n_start: int, obs_dim: int, act_dim: int,
             stopped: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Concatenate the per-step tensors into flat numpy arrays and summarise."""
    empty = {"obs": np.zeros((0, obs_dim), np.float32),
             "action": np.zeros((0, act_dim), np.float32),
             "reward": np.zeros(0, np.float32), "next_obs": np.zeros((0, obs_dim), np.float32),
             "terminated": np.zeros(0, bool), "penalty": np.zeros(0, np.float32)}
    cat = {k: torch.cat([s[k] for s in steps]).cpu().numpy() if steps else v
           for k, v in empty.items()}
    penalty = cat.pop("penalty")
    data = {k: cat[k].astype(bool if k == "terminated" else np.float32, copy=False)
            for k in KEYS[:-1]}
    data["truncated"] = np.zeros(len(penalty), bool)
    m, n = len(penalty), max(n_start, 1)
    stats = {"transitions": float(m), "mean_length": m / n, "stopped_by_disagreement": stopped / n,
             "terminated": float(data["terminated"].sum()) / n,
             "mean_penalty": float(penalty.mean()) if m else float("nan")}
    return data, stats
