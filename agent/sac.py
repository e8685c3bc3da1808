"""Soft Actor-Critic with clipped double Q and automatic temperature (Haarnoja et al. 2018a,b).

The losses and the soft target update live in :mod:`agent.math`; this module holds the
networks, the optimizers and the order of the steps (as cleanrl ``sac_continuous_action.py``):
one critic step per :meth:`SAC.update`, the actor and temperature every
``actor_update_interval`` updates, then the polyak update of the target critic.

Randomness (no global RNG is read or changed):

- ``generator`` (the caller's, usually on the CPU) draws the acting noise in :meth:`SAC.act`
  and, once at construction, the seeds of the network weights and of the update generator.
- the update generator, on ``device``, draws the noise of the updates; its state is part of
  :meth:`SAC.state_dict`, so a resumed run continues the exact stream. Two generators are
  needed because ``torch.randn`` must run on its generator's device.
"""

from __future__ import annotations

import contextlib
import copy
import math
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.layers import Normalizer, adam, resolve_precision
from mbpo_arm.agent.math import (
    actor_loss,
    critic_target,
    polyak_update,
    squashed_gaussian,
    temperature_loss,
)
from mbpo_arm.agent.networks import Actor, TwinCritic
from mbpo_arm.agent.types import TransitionBatch

_SEED_HIGH = 2**62


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(_SEED_HIGH, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for ``module`` inside the block; inputs still get theirs (the actor
    step differentiates through the critic without accumulating critic gradients)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class SAC:
    """The agent: :meth:`act` for the env, :meth:`update` on a :class:`TransitionBatch`.

    Args:
        obs_dim, act_dim: observation and (normalized, ``[-1, 1]``) action sizes.
        cfg: hyperparameters.
        device: where networks, optimizer states and updates live; batches must be on it.
        generator: acting noise and the seeds of weights and update noise (see the module
            docstring); ``None``: a nondeterministically seeded CPU generator.
        precision: ``fp32``, ``bf16`` (the networks' forward passes under bfloat16 autocast;
            losses, targets, normalizer, parameters and Adam states stay float32) or ``auto``
            (``bf16`` where ``device`` runs it natively, :func:`~agent.layers.resolve_precision`).
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig,
                 device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, precision: str = "fp32") -> None:
        self.obs_dim, self.act_dim, self.cfg = obs_dim, act_dim, cfg
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)  # fp32 or bf16
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        self.generator = generator
        self.target_entropy = float(-act_dim if cfg.target_entropy is None
                                    else cfg.target_entropy)
        with torch.random.fork_rng(devices=[]):  # weights from our seed, global RNG untouched
            torch.default_generator.manual_seed(_draw_seed(generator))
            self.actor = Actor(obs_dim, act_dim, cfg.hidden,
                               precision=self.precision).to(self.device)
            self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden,
                                     layer_norm=cfg.critic_layer_norm,
                                     precision=self.precision).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device,
                                      requires_grad=True)
        self._make_optimizers()
        self._update_gen = torch.Generator(device=self.device)
        self._update_gen.manual_seed(_draw_seed(generator))
        self.updates = 0  # calls of update() so far
        self.obs_norm = Normalizer(obs_dim, eps=1e-3).to(self.device)
        self.obs_norm_fitted = False
        nan = torch.tensor(float("nan"), device=self.device)
        self._actor_metrics = {"actor_loss": nan, "alpha_loss": nan, "entropy": nan}

    def _make_optimizers(self) -> None:
        self.actor_opt = adam(self.actor.parameters(), lr=self.cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), lr=self.cfg.critic_lr)
        self.alpha_opt = adam([self.log_alpha], lr=self.cfg.alpha_lr)

    @property
    def alpha(self) -> torch.Tensor:
        """The temperature ``exp(log_alpha)``, a detached scalar tensor on ``device``."""
        return self.log_alpha.detach().exp()

    # ----------------------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in ``[-1, 1]`` for ``obs`` ``[obs_dim]`` -> ``[A]`` or ``[B, obs_dim]`` ->
        ``[B, A]`` (float32). ``deterministic``: ``tanh(mean)``; else a sample drawn with
        ``self.generator``."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32).to(self.device)
        single = obs_t.ndim == 1
        obs_t = obs_t.unsqueeze(0) if single else obs_t
        if obs_t.ndim != 2 or obs_t.shape[1] != self.obs_dim:
            raise ValueError(f"obs must be [obs_dim] or [B, obs_dim] with obs_dim="
                             f"{self.obs_dim}, got shape {list(np.shape(obs))}")
        mean, log_std = self.actor(self.normalize(obs_t))
        noise = None
        if not deterministic:
            noise = torch.randn(mean.shape, generator=self.generator,
                                device=self.generator.device).to(self.device)
        action, _ = squashed_gaussian(mean, log_std, noise)
        out = action.cpu().numpy()
        return out[0] if single else out

    @torch.no_grad()
    def policy_tensor(self, obs: torch.Tensor) -> torch.Tensor:
        """Stochastic actions ``[B, A]`` for ``obs`` ``[B, obs_dim]`` on ``device``, without
        leaving torch (model rollouts call this on 100k states at once)."""
        mean, log_std = self.actor(self.normalize(obs.to(self.device)))
        action, _ = squashed_gaussian(mean, log_std, self._randn(mean.shape))
        return action

    # ---------------------------------------------------------------------------- updates
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One critic step, the actor and alpha every ``actor_update_interval`` updates
        (starting with the first), then the target update.

        Returns ``critic_loss``, ``q_mean`` (mean of both critics on the batch),
        ``actor_loss``, ``alpha_loss``, ``entropy`` (``-mean log pi``; the last actor step's
        where this update had none) and ``alpha``.
        """
        metrics = self._update_critic(batch)
        if self.updates % self.cfg.actor_update_interval == 0:
            self._actor_metrics = self._update_actor_and_alpha(self.normalize(batch.obs))
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.cfg.tau)
        self.updates += 1
        metrics.update(self._actor_metrics, alpha=self.alpha)
        values = torch.stack(list(metrics.values())).tolist()  # one device sync, not six
        return dict(zip(metrics, values, strict=True))

    @torch.no_grad()
    def td_target(self, batch: TransitionBatch,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """Soft Bellman target ``[B]`` of the target critics (``agent.math.critic_target``):
        bootstraps unless ``terminated``; ``truncated`` does not stop it.

        ``noise`` ``[B, A]`` for the next action; ``None`` draws it from the update generator.
        """
        next_obs = self.normalize(batch.next_obs)
        mean, log_std = self.actor(next_obs)
        if noise is None:
            noise = self._randn(mean.shape)
        next_action, next_logp = squashed_gaussian(mean, log_std, noise)
        next_q = self.critic_target(next_obs, next_action).amin(dim=0)
        return critic_target(batch.reward, batch.terminated, next_q, next_logp, self.alpha,
                             self.cfg.gamma)

    def _update_critic(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        target = self.td_target(batch)
        q = self.critic(self.normalize(batch.obs), batch.action)  # [E, B]
        loss = (q - target).pow(2).mean(dim=1).sum()  # sum of members' MSE (cleanrl)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"critic_loss": loss.detach(), "q_mean": q.detach().mean()}

    def _update_actor_and_alpha(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, log_std = self.actor(obs)
        action, logp = squashed_gaussian(mean, log_std, self._randn(mean.shape))
        with _frozen(self.critic):
            q = self.critic(obs, action).amin(dim=0)  # clipped double Q (Fujimoto et al. 2018)
        loss = actor_loss(q, logp, self.alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        alpha_loss = torch.zeros((), device=self.device)
        if self.cfg.autotune:
            alpha_loss = temperature_loss(self.log_alpha, logp, self.target_entropy)
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        return {"actor_loss": loss.detach(), "alpha_loss": alpha_loss.detach(),
                "entropy": -logp.detach().mean()}

    # ------------------------------------------------------------------ observation scale
    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, obs_dim]`` standardized and clipped to +-10 once fitted; unchanged before
        (or with ``normalize_obs`` off)."""
        if not self.obs_norm_fitted:
            return obs
        return self.obs_norm.normalize(obs).clamp(-10.0, 10.0)

    @property
    def obs_fit_pending(self) -> bool:
        """``normalize_obs`` is on and the standardization is not fitted yet."""
        return self.cfg.normalize_obs and not self.obs_norm_fitted

    def fit_obs_normalizer(self, obs: np.ndarray) -> None:
        """Fit the observation standardization on ``[N, obs_dim]`` real observations, once
        (refitting would move the inputs under trained networks)."""
        if self.obs_fit_pending:
            self.obs_norm.fit(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
            self.obs_norm_fitted = True

    def _randn(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=self._update_gen, device=self.device)

    # ------------------------------------------------------------------------------ state
    def _check_dims(self, state: dict[str, Any], what: str) -> None:
        mine = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": self.cfg.hidden}
        theirs = {k: (tuple(state[k]) if k == "hidden" else state[k]) for k in mine}
        if theirs != mine:
            raise ValueError(f"{what} is for networks {theirs}, this SAC has {mine}")

    def policy_state_dict(self) -> dict[str, Any]:
        """What acting needs, as CPU copies: the actor's weights, its sizes, and ``version``
        (the number of updates behind them)."""
        return {"actor": {k: v.detach().to("cpu", copy=True)
                          for k, v in self.actor.state_dict().items()},
                "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden": list(self.cfg.hidden), "version": self.updates,
                "obs_norm": {k: v.detach().cpu() for k, v in self.obs_norm.state_dict().items()},
                "obs_norm_fitted": self.obs_norm_fitted}

    def acting_state(self) -> dict[str, torch.Tensor]:
        """What the actor process needs to act, as float tensors (published as one vector,
        :func:`agent.runtime.weights.flatten`): the actor's weights, the observation
        normalizer (``obs_norm.*``) and whether it is fitted (``obs_norm_fitted``, 0 or 1)."""
        return {**{f"actor.{k}": v for k, v in self.actor.state_dict().items()},
                **{f"obs_norm.{k}": v for k, v in self.obs_norm.state_dict().items()},
                "obs_norm_fitted": torch.tensor(float(self.obs_norm_fitted))}

    def load_acting_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`acting_state`'s tensors (in the actor process)."""
        self.actor.load_state_dict({k[6:]: v for k, v in state.items()
                                    if k.startswith("actor.")})
        self.obs_norm.load_state_dict({k[9:]: v for k, v in state.items()
                                       if k.startswith("obs_norm.")})
        self.obs_norm_fitted = bool(state["obs_norm_fitted"] > 0.5)

    def load_policy_state_dict(self, state: dict[str, Any]) -> None:
        """Load the actor from :meth:`policy_state_dict` (e.g. in an actor process)."""
        self._check_dims(state, "the policy state")
        self.actor.load_state_dict(state["actor"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.obs_norm_fitted = bool(state["obs_norm_fitted"])

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: networks, target, ``log_alpha``, optimizers, the
        update counter and the update generator. Tensors are references (as
        ``nn.Module.state_dict``): ``torch.save`` or ``copy.deepcopy`` it before updating."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "log_alpha": self.log_alpha.detach(),
                "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(),
                "updates": self.updates,
                "update_generator": self._update_gen.get_state(),
                "update_generator_device": self.device.type,
                "actor_metrics": {k: float(v) for k, v in self._actor_metrics.items()},
                "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden": list(self.cfg.hidden), "obs_norm": self.obs_norm.state_dict(),
                "obs_norm_fitted": self.obs_norm_fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (saved on any device) onto this agent's device."""
        self._check_dims(state, "the SAC state")
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.obs_norm_fitted = bool(state["obs_norm_fitted"])
        for name in ("actor", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("actor_opt", "critic_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
        gen_state = state["update_generator"].cpu()  # torch.load may map it onto a GPU
        if state["update_generator_device"] == self.device.type:
            self._update_gen.set_state(gen_state)
        else:  # CPU and CUDA generator states differ in format: reseed from it, deterministic
            self._update_gen.manual_seed(zlib.crc32(gen_state.numpy().tobytes()))
        self._actor_metrics = {k: torch.tensor(v, device=self.device)
                               for k, v in state["actor_metrics"].items()}

    def to(self, device: str | torch.device) -> SAC:
        """Move networks, ``log_alpha`` and optimizer states to ``device``; returns ``self``.

        The update generator is reseeded from its own stream on the new device (CPU and CUDA
        streams differ), so updates stay deterministic but differ from staying put.
        """
        device = torch.device(device)
        if device == self.device:
            return self
        opt_states = [opt.state_dict() for opt in (self.actor_opt, self.critic_opt,
                                                   self.alpha_opt)]
        for module in (self.actor, self.critic, self.critic_target, self.obs_norm):
            module.to(device)
        self.log_alpha = self.log_alpha.detach().to(device).requires_grad_(True)
        self._make_optimizers()  # fresh optimizers over the moved tensors, then their states,
        for opt, opt_state in zip((self.actor_opt, self.critic_opt, self.alpha_opt), opt_states,
                                  strict=True):
            opt.load_state_dict(opt_state)  # which load_state_dict casts onto the new device
        seed = _draw_seed(self._update_gen)
        self._update_gen = torch.Generator(device=device)
        self._update_gen.manual_seed(seed)
        self._actor_metrics = {k: v.to(device) for k, v in self._actor_metrics.items()}
        self.device = device
        return self
