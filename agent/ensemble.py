"""Probabilistic dynamics ensemble (PETS / MBPO): configuration, model and prediction.

Every member predicts a diagonal Gaussian over ``[delta_obs, (reward)]`` from
``concat(obs, action)``; all members run in one batched computation (``EnsembleLinear``).
Shapes use ``E`` for members, ``B`` for the batch, ``D`` for the observation size, ``A`` for
the action size, ``D_in = D + A`` and ``D_out = D (+ 1 with a learned reward)``.

Inputs and targets are both normalized with statistics fitted on the data of each training
call, so the Gaussian NLL weighs every output dimension alike (a reward on a scale of 100
would otherwise swamp joint deltas of 1e-3); ``predict`` maps back to raw units.

Elite indices are never stored on the model: ``agent.ensemble_train.train_ensemble`` returns
them in its report and the caller passes them back to ``predict`` and the rollouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mbpo_arm.agent.config import EnsembleConfig
from mbpo_arm.agent.layers import EnsembleLinear, Normalizer, autocast, resolve_precision
from mbpo_arm.agent.math import gaussian_nll, soft_clamp

ACTIVATIONS = {"silu": F.silu, "relu": F.relu, "elu": F.elu, "gelu": F.gelu, "tanh": torch.tanh}


class ProbabilisticEnsemble(nn.Module):
    """``E`` MLPs, each predicting a Gaussian over normalized ``[delta_obs, (reward)]``.

    The log-variance is soft-clamped between learned bounds (Chua et al. 2018, PETS, app. A.1).
    The bounds are per member (``[E, 1, D_out]``, mbrl-lib shares one pair) so that members stay
    fully independent and each member's best weights can be snapshotted on their own.

    ``precision``: ``fp32``, ``bf16`` (the linear layers under bfloat16 autocast, in fitting
    and in rollouts; normalizers, the clamp, the loss and the parameters stay float32) or
    ``auto`` (``bf16`` where ``cfg.device`` runs it natively).
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: EnsembleConfig,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.precision = resolve_precision(precision, cfg.device)  # fp32 or bf16
        self.obs_dim, self.act_dim, self.members = obs_dim, act_dim, cfg.members
        self.learn_reward = cfg.learn_reward
        self.in_dim, self.out_dim = obs_dim + act_dim, obs_dim + int(cfg.learn_reward)
        sizes = [self.in_dim] + [cfg.hidden] * cfg.layers + [2 * self.out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(cfg.members, i, o)
                                    for i, o in zip(sizes[:-1], sizes[1:], strict=True))
        self.activation = ACTIVATIONS[cfg.activation]
        self.max_log_var = nn.Parameter(torch.full((cfg.members, 1, self.out_dim), 0.5))
        self.min_log_var = nn.Parameter(torch.full((cfg.members, 1, self.out_dim), -10.0))
        self.in_norm, self.out_norm = Normalizer(self.in_dim), Normalizer(self.out_dim)
        self._subset: tuple[tuple, tuple] | None = None  # (key, parameters): see _members_of
        self.to(cfg.device)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw inputs ``[E', B, D_in]`` -> normalized-target ``mean, log_var`` ``[E', B, D_out]``.

        ``members`` (``[E']`` long) runs only those members, e.g. the elites; ``None`` runs all.
        """
        h = self.in_norm.normalize(x)
        last = len(self.layers) - 1
        if members is None:
            params = [(layer.bias, layer.weight) for layer in self.layers]
            lo, hi = self.min_log_var, self.max_log_var
        else:
            *params, (lo, hi) = self._members_of(members)
        with autocast(self.precision, h.device):
            for i, (bias, weight) in enumerate(params):
                h = torch.baddbmm(bias, h, weight)
                if i < last:
                    h = self.activation(h)
        mean, raw_log_var = h.float().split(self.out_dim, dim=-1)
        return mean, soft_clamp(raw_log_var, lo, hi)

    def _members_of(self, members: torch.Tensor) -> tuple:
        """``(bias, weight)`` per layer and ``(min_log_var, max_log_var)`` of ``members``
        only. Outside autograd they are kept until a parameter changes (its version or
        storage): a plan runs the same elites some 50 times, and gathering ~1 MB of weights
        each time took a fifth of it."""
        tensors = [t for layer in self.layers for t in (layer.bias, layer.weight)]
        tensors += [self.min_log_var, self.max_log_var]

        def gather() -> tuple:
            picked = [t[members] for t in tensors]
            return tuple(zip(picked[::2], picked[1::2], strict=True))

        if torch.is_grad_enabled():
            return gather()
        key = (tuple(members.tolist()), members.device,
               tuple((t._version, t.data_ptr()) for t in tensors))
        if self._subset is None or self._subset[0] != key:
            self._subset = (key, gather())
        return self._subset[1]

    def bound_loss(self) -> torch.Tensor:
        """``0.01 (sum max_log_var - sum min_log_var)``: keeps the learned bounds tight
        (PETS; mbrl-lib ``GaussianMLP.loss``)."""
        return 0.01 * (self.max_log_var.sum() - self.min_log_var.sum())

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss: per-member Gaussian NLL summed over members plus the bound term.

        ``x`` raw ``[E, B, D_in]``, ``target`` normalized ``[E, B, D_out]``.
        """
        mean, log_var = self(x)
        return gaussian_nll(mean, log_var, target).sum() + self.bound_loss()


# --------------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class Prediction:
    """One model step for ``B`` states, in raw units.

    Attributes:
        next_obs: ``[B, D]`` sampled from one random elite per sample (TS1; Chua et al. 2018).
        reward: ``[B]`` sampled the same way, or ``None`` without a learned reward.
        member_mean: ``[E_elite, B, D_out]`` each elite's predicted mean of ``[delta_obs,
            (reward)]`` (for disagreement measures).
        member_std: ``[E_elite, B, D_out]`` each elite's predicted std (for the MOPO penalty).
    """

    next_obs: torch.Tensor
    reward: torch.Tensor | None
    member_mean: torch.Tensor
    member_std: torch.Tensor


def member_index(model: ProbabilisticEnsemble, elites: Sequence[int], device: torch.device
             ) -> torch.Tensor | None:
    """Index tensor of ``elites``, or ``None`` when they are all members in order."""
    if list(elites) == list(range(model.members)):
        return None
    return torch.as_tensor(list(elites), dtype=torch.long, device=device)


@torch.no_grad()
def predict(model: ProbabilisticEnsemble, obs: torch.Tensor, action: torch.Tensor,
            elites: Sequence[int], generator: torch.Generator | None = None,
            chunk_size: int | None = None) -> Prediction:
    """Sample ``s' ~ N(s + mu_k, sigma_k^2)`` with ``k`` a random elite per sample.

    ``obs`` ``[B, D]``, ``action`` ``[B, A]``. One batched pass runs the elites only (the
    other members' outputs would be discarded), then each sample gathers its own member.
    ``chunk_size`` splits that pass into row blocks: ``None`` (one block) suits a GPU; on a CPU
    blocks of ~4096 rows (``[5, 4096, 200]`` activations, 16 MB) ran a 100k-row batch about
    1.7x faster on one thread than one block of 400 MB activations, which are allocated and
    page-faulted afresh every layer. Results do not depend on it (up to float rounding).
    """
    if len(elites) == 0:
        raise ValueError("predict needs at least one elite")
    dev = obs.device
    x = torch.cat([obs, action], dim=-1)
    members = member_index(model, elites, dev)
    blocks = [model(c.expand(len(elites), -1, -1), members)
              for c in x.split(chunk_size or max(x.shape[0], 1))]
    mean = torch.cat([m for m, _ in blocks], dim=1)
    log_var = torch.cat([v for _, v in blocks], dim=1)
    # An output that never changed in the data (the reach target within an episode) is
    # predicted exactly: sampling noise there would only corrupt the reward.
    norm = model.out_norm
    mean = torch.where(norm.varying.bool(), norm.denormalize(mean), norm.mean)
    std = torch.exp(0.5 * log_var) * norm.std * norm.varying
    b = torch.arange(obs.shape[0], device=dev)
    k = draw_index(len(elites), obs.shape[0], generator, dev)
    noise = draw_normal(tuple(std.shape[1:]), generator, dev)
    sample = mean[k, b] + std[k, b] * noise
    reward = sample[:, model.obs_dim] if model.learn_reward else None
    return Prediction(obs + sample[:, :model.obs_dim], reward, mean, std)


def draw_uniform(shape: tuple[int, ...], generator: torch.Generator | None,
                 device: torch.device) -> torch.Tensor:
    """``U(0, 1)`` draws on ``device`` from a generator that may live on another device."""
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def draw_normal(shape: tuple[int, ...], generator: torch.Generator | None,
                device: torch.device) -> torch.Tensor:
    """Standard normal draws on ``device`` from a generator that may live on another device."""
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev).to(device)


def draw_index(high: int, size: int, generator: torch.Generator | None,
               device: torch.device) -> torch.Tensor:
    """``[size]`` uniform integers in ``[0, high)`` on ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.randint(high, (size,), generator=generator, device=gdev).to(device)
