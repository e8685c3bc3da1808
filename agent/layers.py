"""One linear layer for all members of an ensemble: weights ``[E, in, out]``, one batched matmul.

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
