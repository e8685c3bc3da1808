"""Benchmark-only baselines: the per-member loops the batched ensemble and critics are
measured against (``bench/micro.py``). Never used for training."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mbpo_arm.agent.config import EnsembleConfig
from mbpo_arm.agent.math import gaussian_nll, soft_clamp
from mbpo_arm.agent.networks import mlp


class LoopEnsemble(nn.Module):
    """``E`` separate ``nn.Sequential`` MLPs run one after another; same maths as
    ``ProbabilisticEnsemble`` without normalizers. Only a benchmark baseline for the batched
    ensemble; never used for training."""

    def __init__(self, in_dim: int, out_dim: int, cfg: EnsembleConfig) -> None:
        super().__init__()
        self.out_dim = out_dim
        sizes = [in_dim] + [cfg.hidden] * cfg.layers

        def mlp() -> nn.Sequential:
            mods: list[nn.Module] = []
            for i, o in zip(sizes[:-1], sizes[1:], strict=True):
                mods += [nn.Linear(i, o), nn.SiLU()]
            return nn.Sequential(*mods, nn.Linear(sizes[-1], 2 * out_dim))

        self.nets = nn.ModuleList(mlp() for _ in range(cfg.members))
        self.max_log_var = nn.Parameter(torch.full((cfg.members, 1, out_dim), 0.5))
        self.min_log_var = nn.Parameter(torch.full((cfg.members, 1, out_dim), -10.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[E, B, D_in]`` -> ``mean, log_var`` ``[E, B, D_out]``."""
        out = torch.stack([net(xe) for net, xe in zip(self.nets, x, strict=True)])
        mean, raw = out.split(self.out_dim, dim=-1)
        return mean, soft_clamp(raw, self.min_log_var, self.max_log_var)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, log_var = self(x)
        bound = 0.01 * (self.max_log_var.sum() - self.min_log_var.sum())
        return gaussian_nll(mean, log_var, target).sum() + bound



class LoopCritic(nn.Module):
    """Reference for benchmarks and tests: ``E`` separate ``nn.Sequential`` critics evaluated
    one after another. Same interface and output ``[E, B]`` as :class:`TwinCritic`."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256),
                 members: int = 2, activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.members = members
        self.qs = nn.ModuleList(mlp(obs_dim + act_dim, hidden, 1, activation)
                                for _ in range(members))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])

