"""SAC's networks: an MLP builder, the Gaussian actor, and the twin critic as one ensemble.

Shapes: ``B`` batch, ``E`` critic members, ``A`` action size. With ``precision="bf16"`` the
hidden layers run under bfloat16 autocast (:func:`~agent.layers.autocast`) and the outputs
come back float32; parameters stay float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mbpo_arm.agent.layers import EnsembleLinear, autocast

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int,
        activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear -> activation`` for each width in ``hidden``, then a linear output layer.

    Shapes: ``[..., in_dim]`` -> ``[..., out_dim]``.
    """
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), activation()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Diagonal Gaussian policy before the tanh squashing (``agent.math.squashed_gaussian``).

    ``forward(obs [B, obs_dim]) -> (mean [B, A], log_std [B, A])``, ``log_std`` squashed
    smoothly into ``[LOG_STD_MIN, LOG_STD_MAX]`` = ``[-5, 2]`` by a tanh, so its gradient
    never vanishes at a hard clip (cleanrl ``sac_continuous_action.py``, after OpenAI
    baselines / SpinningUp). ``precision``: ``fp32`` or ``bf16`` (the MLP under autocast).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: Callable[[], nn.Module] = nn.ReLU, precision: str = "fp32") -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        self.precision = precision
        self.net = mlp(obs_dim, hidden, 2 * act_dim, activation)  # mean and log_std heads

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.precision, obs.device):
            out = self.net(obs)
        mean, log_std = out.float().chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return mean, log_std


class TwinCritic(nn.Module):
    """``E`` Q-functions as one ensemble MLP: every member runs in the same batched matmuls.

    ``layer_norm`` adds a LayerNorm after each hidden layer, which keeps Q estimates bounded at
    high update-to-data ratios (Ball et al. 2023, "RLPD"; Nauman et al. 2024, "BRO").

    ``forward(obs [B, obs_dim], action [B, A]) -> q [E, B]``: the input ``[B, obs + A]`` is
    broadcast to ``[E, B, obs + A]`` (a stride-0 view, no copy) and passed through
    :class:`~agent.layers.EnsembleLinear` layers, ``[E, B, D] -> [E, B, 1]``. Members are
    initialised independently (clipped double Q, Fujimoto et al. 2018, needs them to differ).
    ``precision``: ``fp32`` or ``bf16`` (the layers under autocast, ``q`` float32).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256),
                 members: int = 2, activation: Callable[[], nn.Module] = nn.ReLU,
                 layer_norm: bool = False, precision: str = "fp32") -> None:
        super().__init__()
        self.members, self.precision = members, precision
        dims = [obs_dim + act_dim, *hidden, 1]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers.append(EnsembleLinear(members, d_in, d_out))
            if layer_norm:  # per member and sample, no shared affine: members stay independent
                layers.append(nn.LayerNorm(d_out, elementwise_affine=False))
            layers.append(activation())
        # no normalization or activation on the output
        self.net = nn.Sequential(*layers[:-(2 if layer_norm else 1)])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        x = x.unsqueeze(0).expand(self.members, *x.shape)
        with autocast(self.precision, x.device):
            q = self.net(x)
        return q.float().squeeze(-1)
