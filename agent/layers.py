"""Shared layers: one linear layer for all members of an ensemble (weights ``[E, in, out]``,
one batched matmul), a per-feature normalizer, and what every learner network runs under:
the number format (:func:`resolve_precision`, :func:`autocast`) and the optimizer
(:func:`adam`).

Used by the dynamics ensemble (E = 7) and by SAC's twin critics (E = 2), so every member runs
in a single computation (mbrl-lib ``EnsembleLinearLayer``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mbpo_arm.agent.config import PRECISIONS

FUSED_DEVICES = ("cpu", "cuda")  # where torch.optim.Adam(fused=True) has a kernel we use


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


# ------------------------------------------------------------------ precision and optimizer
def native_bf16(device: str | torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively: a CPU with AMX-BF16 or AVX512-BF16
    (the ``amx_bf16`` / ``avx512_bf16`` flags of ``cpuinfo``; oneDNN then uses them, about 7x
    fp32's GFLOP/s with AMX), or a CUDA device that ``torch.cuda.is_bf16_supported()``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto`` | ``fp32`` | ``bf16`` -> ``fp32`` or ``bf16``: ``auto`` picks ``bf16`` where
    :func:`native_bf16` says ``device`` runs it natively, else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision} is not allowed; choose one of "
                         f"{', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The forward passes' context: bfloat16 autocast on ``device`` with ``bf16``, a no-op
    with ``fp32``. Parameters stay float32 and their gradients come back float32 (autocast
    casts on the fly); callers turn the outputs back to float32 before any loss."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def adam(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float
         ) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused kernel where the parameters' device and dtype
    have one (CPU and CUDA float32), else the foreach kernel; either way one pass over all
    tensors instead of the per-tensor loop torch picks on CPU by default (one SAC update at
    hidden 512: Adam 24% of the time before).

    ``load_state_dict`` keeps this choice: torch takes the ``fused`` / ``foreach`` flags from
    the saved param groups (``Optimizer.load_state_dict``), so a hook puts them back and moves
    ``step`` where the kernel wants it (fused: float32 on the parameter's device; else CPU).
    """
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(
        p.device.type in FUSED_DEVICES and p.dtype in (torch.float32, torch.float64)
        for p in tensors)
    opt = torch.optim.Adam(groups, lr=lr, fused=fused or None, foreach=None if fused else True)
    opt.register_load_state_dict_post_hook(functools.partial(_keep_kernel, fused=fused))
    return opt


def _keep_kernel(opt: torch.optim.Optimizer, fused: bool) -> None:
    for group in opt.param_groups:
        group["fused"], group["foreach"] = (True, None) if fused else (None, True)
        for p in group["params"]:
            state = opt.state.get(p, {})
            if torch.is_tensor(state.get("step")):
                device = p.device if fused else torch.device("cpu")
                state["step"] = state["step"].to(dtype=torch.float32, device=device)
