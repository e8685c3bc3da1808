"""The maths of the agent as pure functions: tensors in, tensors out.

Modules (SAC, the ensemble, the rollouts) stay thin and call these. Shapes use ``B`` for the
batch, ``E`` for ensemble members, ``D`` for feature sizes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

LOG_2 = math.log(2.0)


# ----------------------------------------------------------------------------------------- SAC
@torch.no_grad()
def polyak_update(params: Iterable[torch.Tensor], target: Iterable[torch.Tensor],
                  tau: float) -> None:
    """``target <- (1 - tau) * target + tau * params`` in place (SB3 ``polyak_update``)."""
    params, target = list(params), list(target)
    torch._foreach_lerp_(target, params, tau)


def squashed_gaussian(mean: torch.Tensor, log_std: torch.Tensor,
                      noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``tanh(mean + std * noise)`` and its log-probability.

    Args:
        mean, log_std: ``[B, A]``.
        noise: ``[B, A]`` standard normal draws, or ``None`` for the deterministic action.
    Returns:
        action ``[B, A]`` in ``(-1, 1)`` and log-probability ``[B]``.

    The tanh correction uses the numerically stable form
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (Haarnoja et al. 2018, appendix C;
    the stable form as in cleanrl / SpinningUp).
    """
    u = mean if noise is None else mean + log_std.exp() * noise
    logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std
            - 0.5 * math.log(2 * math.pi)).sum(-1)
    logp = logp - (2 * (LOG_2 - u - F.softplus(-2 * u))).sum(-1)
    return torch.tanh(u), logp


def critic_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                  next_logp: torch.Tensor, alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """Soft Bellman target ``r + gamma (1 - terminated) (Q'(s', a') - alpha log pi(a'|s'))``.

    All ``[B]``; ``next_q`` is the minimum of the twin target critics. Truncated transitions
    bootstrap (only ``terminated`` stops the bootstrap).
    """
    return reward + gamma * (1.0 - terminated) * (next_q - alpha * next_logp)


def actor_loss(q: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """SAC policy loss ``E[alpha log pi(a|s) - min_i Q_i(s, a)]``; ``q``, ``logp`` are ``[B]``."""
    return (alpha * logp - q).mean()


def temperature_loss(log_alpha: torch.Tensor, logp: torch.Tensor,
                     target_entropy: float) -> torch.Tensor:
    """Automatic entropy tuning loss ``-log_alpha * (log pi + H_target)`` (Haarnoja et al.
    2018b, "SAC Algorithms and Applications", eq. 18); ``logp`` is ``[B]`` and detached here."""
    return -(log_alpha * (logp.detach() + target_entropy)).mean()


# ------------------------------------------------------------------------- dynamics ensemble
def soft_clamp(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Smoothly keep ``x`` inside ``[lower, upper]`` with softplus walls, so the learned bounds
    still receive gradients (Chua et al. 2018, PETS, appendix A.1)."""
    x = upper - F.softplus(upper - x)
    return lower + F.softplus(x - lower)


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood per member, up to the constant ``0.5 log 2 pi``.

    Args:
        mean, log_var, target: ``[E, B, D]``.
    Returns:
        ``[E]``: mean over batch and dimensions of ``0.5 ((t - mu)^2 / var + log var)``.
    """
    inv_var = torch.exp(-log_var)
    return (0.5 * ((mean - target) ** 2 * inv_var + log_var)).mean(dim=(1, 2))


def rollout_horizon(epoch: int, schedule: Sequence[int]) -> int:
    """Linear horizon schedule ``[start_epoch, end_epoch, min_h, max_h]`` (Janner et al. 2019,
    MBPO, appendix C): ``min_h`` before ``start_epoch``, ``max_h`` after ``end_epoch``,
    linear in between, rounded down."""
    start, end, min_h, max_h = schedule
    if end <= start:
        return int(max_h if epoch >= end else min_h)
    frac = min(max((epoch - start) / (end - start), 0.0), 1.0)
    return int(min_h + frac * (max_h - min_h))


def mopo_penalty(std: torch.Tensor) -> torch.Tensor:
    """MOPO uncertainty ``max_i ||Sigma_i(s, a)||_F`` over members (Yu et al. 2020, sec. 4.3).

    Args:
        std: ``[E, B, D]`` predicted standard deviations of each member.
    Returns:
        ``[B]`` the largest member's std norm.
    """
    return std.norm(dim=-1).amax(dim=0)


def ensemble_disagreement(mean: torch.Tensor) -> torch.Tensor:
    """MOReL discrepancy ``max_{i,j} ||mu_i(s, a) - mu_j(s, a)||_2`` over pairs of members
    (Kidambi et al. 2020, MOReL, sec. 4.2: the unknown state-action detector).

    Args:
        mean: ``[E, B, D]`` each member's predicted mean.
    Returns:
        ``[B]``; zeros for a single member.
    """
    out = mean.new_zeros(mean.shape[1])
    for i in range(mean.shape[0]):
        for j in range(i + 1, mean.shape[0]):
            out = torch.maximum(out, (mean[i] - mean[j]).norm(dim=-1))
    return out


def mopo_reward(reward: torch.Tensor, std: torch.Tensor, penalty_coef: float) -> torch.Tensor:
    """MOPO's uncertainty-penalised reward ``r - lambda * max_i ||Sigma_i(s, a)||_F``
    (Yu et al. 2020, eq. 5 with the heuristic ``u(s, a)`` of sec. 4.3).

    Args:
        reward: ``[B]``; std: ``[E, B, D]`` each member's predicted std.
    Returns:
        ``[B]``.
    """
    return reward - penalty_coef * mopo_penalty(std)


def annealed_penalty(penalty_coef: float, step: int, anneal_steps: int) -> float:
    """The MOPO lambda ``step`` env steps into fine-tuning: linear from ``penalty_coef`` to 0
    over ``anneal_steps`` (``anneal_steps=0``: constant). Online data makes the offline
    pessimism unnecessary where the policy now goes."""
    if anneal_steps <= 0:
        return float(penalty_coef)
    return float(penalty_coef) * max(0.0, 1.0 - step / anneal_steps)
