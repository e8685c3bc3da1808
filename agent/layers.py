"""Shared layers: one linear layer for all members of an ensemble (weights ``[E, in, out]``,
one batched matmul), and a per-feature normalizer.

Used by the dynamics ensemble (E = 7) and by SAC's twin critics (E = 2), so every member runs
in a single computation (mbrl-lib ``EnsembleLinearLayer``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """``y[e] = x[e] @ W[e] + b[e]`` for every member ``e``.

    Args:
        members: ``E``.
        in_features, out_features: ``D_in``, ``D_out``.
    Shapes:
        input ``[E, B, D_in]`` -> output ``[E, B, D_out]``.
    """

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each member initialised like ``nn.Linear`` (Kaiming-uniform), independently."""
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.members}, in={self.in_features}, out={self.out_features}"


class Normalizer(nn.Module):
    """Per-feature standardisation; ``mean``/``std`` ``[D]`` are buffers (in the state_dict).

    A feature whose std is below ``eps`` (e.g. constant) keeps std 1 (as MBPO's
    ``TensorStandardScaler``) and is flagged in the ``varying`` buffer (0.0), so a model can
    predict it exactly instead of sampling noise around it.
    """

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.register_buffer("varying", torch.ones(size))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        """Fit on ``data`` ``[N, D]``."""
        std = data.std(dim=0, unbiased=False)
        self.mean.copy_(data.mean(dim=0))
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))
        self.varying.copy_((std >= self.eps).float())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
