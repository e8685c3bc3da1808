"""Planning on the learned model: CEM-MPC over the probabilistic ensemble.

At every step the cross-entropy method searches action sequences of ``H`` steps, each scored
by the task's reward along the ensemble's predicted trajectories (plus, for MBPO, the critic's
value at the horizon), and the first action of the best sequence is executed; the next step
plans again from the plan shifted by one step (model-predictive control; Chua et al. 2018,
PETS, sec. 5; Sikchi et al. 2021, LOOP; Hansen et al. 2024, TD-MPC2).

Propagation is PETS's trajectory sampling TS-inf: each particle follows one elite member for the
whole horizon, sampling that member's Gaussian at every step. Every sequence gets ``P``
particles on *each* elite, so the ensemble runs one batched pass per step with ``[E', C P, .]``
inputs and no row is computed by a member it does not follow.

With :class:`Limits` (the shield's position limits and workspace box, from the limits file the
shield reads) a sequence whose predicted joints or end effector leave them is infeasible: it
ranks below every feasible one, so it is never chosen while a feasible one was scored.

Shapes: ``E'`` elites, ``C`` candidate sequences, ``P`` particles per sequence and elite,
``N = C P``, ``H`` horizon, ``D`` observation size, ``A`` action size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mbpo_arm.agent.config import PlannerConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, draw_normal, member_index, predict
from mbpo_arm.agent.math import squashed_gaussian
from mbpo_arm.agent.rollout import DeriveFn, Policy, RewardFn, TerminationFn
from mbpo_arm.agent.sac import SAC

ValueFn = Callable[[torch.Tensor], torch.Tensor]  # obs [B, D] -> value [B]
INFEASIBLE = 1e9  # rank offset of a sequence that leaves the limits: below any feasible return


@dataclass(frozen=True)
class Limits:
    """The box a planned state must stay in: the joint positions ``obs[..., joints]`` ``[J]``
    within ``[lower, upper]`` (the shield's position limits less its margin) and, unless
    ``ee`` is ``None``, the end effector ``obs[..., ee]`` within ``[box_lower, box_upper]``
    ``[3]`` (the shield's workspace box, its ``min_height`` folded into the lower z)."""

    joints: slice
    lower: torch.Tensor
    upper: torch.Tensor
    ee: slice | None = None
    box_lower: torch.Tensor | None = None
    box_upper: torch.Tensor | None = None

    def violation(self, obs: torch.Tensor) -> torch.Tensor:
        """How far the states ``[..., D]`` are outside, summed over coordinates (rad and m);
        0 inside, ``inf`` for a non-finite state."""
        q = obs[..., self.joints]
        out = ((self.lower - q).clamp(min=0) + (q - self.upper).clamp(min=0)).sum(-1)
        if self.ee is not None:
            p = obs[..., self.ee]
            out = out + ((self.box_lower - p).clamp(min=0)
                         + (p - self.box_upper).clamp(min=0)).sum(-1)
        return torch.where(torch.isfinite(out), out, torch.full_like(out, float("inf")))


# ------------------------------------------------------------------------ the maths
def shift_plan(mean: torch.Tensor) -> torch.Tensor:
    """The warm start ``[H, A]``: the last plan advanced one step, zeros (the first plan's
    mean) appended (PETS; mbrl-lib ``TrajectoryOptimizerAgent``)."""
    return torch.cat([mean[1:], torch.zeros_like(mean[:1])])


def rank_scores(returns: torch.Tensor, violation: torch.Tensor) -> torch.Tensor:
    """``[C]`` ranks: the return of a feasible sequence, ``-INFEASIBLE - violation`` of an
    infeasible one (so the least violating comes first among those); a non-finite return (a
    model gone astray) ranks just above the infeasible. In float64: at 1e9 float32 would
    round violations apart by less than 64 to one."""
    finite = torch.nan_to_num(returns.double(), nan=-INFEASIBLE / 2, posinf=-INFEASIBLE / 2,
                              neginf=-INFEASIBLE / 2)
    violation = violation.double()
    return torch.where(violation > 0, -INFEASIBLE - violation, finite)


def refit(elites: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
          momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CEM's update: the Gaussian ``[H, A]`` moved towards the elites' ``[K, H, A]`` mean and
    std, keeping ``momentum`` of the old (PETS's alpha = 0.1)."""
    new_mean, new_std = elites.mean(0), elites.std(0, unbiased=False)
    return (momentum * mean + (1 - momentum) * new_mean,
            momentum * std + (1 - momentum) * new_std)


@torch.no_grad()
def score_sequences(ensemble: ProbabilisticEnsemble, elites: Sequence[int], obs: torch.Tensor,
                    actions: torch.Tensor, *, particles: int, reward_fn: RewardFn | None,
                    termination_fn: TerminationFn | None, derive_fn: DeriveFn | None,
                    generator: torch.Generator | None, value_fn: ValueFn | None = None,
                    gamma: float = 1.0, limits: Limits | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected return and worst violation of ``C`` open-loop sequences from one state.

    Args:
        obs: ``[D]`` the current state; ``actions``: ``[C, H, A]`` in ``[-1, 1]``.
        particles: ``P`` TS-inf particles per sequence on each elite (``E' P`` in all).
        reward_fn, termination_fn, derive_fn: the task's pure functions (``reward_fn``
            ``None``: the ensemble's learned reward); a terminated particle earns nothing more.
        value_fn: ``V(s_H)`` ``[B]`` added at the horizon with ``gamma^H`` (LOOP); ``None``: none.
        limits: scored per predicted state of a live particle; ``None``: all feasible.
    Returns:
        ``returns`` ``[C]`` (mean over the ``E' P`` particles of ``sum_t gamma^t r_t``) and
        ``violation`` ``[C]`` (the largest over particles of the summed excess; 0: feasible).
    """
    e, (c, h, a_dim), d = len(elites), actions.shape, ensemble.obs_dim
    if reward_fn is None and not ensemble.learn_reward:
        raise ValueError("reward_fn is None but the ensemble does not learn the reward")
    dev, n = obs.device, c * particles
    members = member_index(ensemble, elites, dev)
    norm = ensemble.out_norm
    state = obs.reshape(1, 1, d).expand(e, n, d)
    acts = actions.repeat_interleave(particles, 0)  # [N, H, A]
    ret = torch.zeros(e, n, device=dev)
    viol = torch.zeros(e, n, device=dev)
    alive = torch.ones(e, n, dtype=torch.bool, device=dev)

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(e * n, x.shape[-1])

    for t in range(h):
        act = acts[:, t].expand(e, n, a_dim)
        mean, log_var = ensemble(torch.cat([state, act], -1), members)
        mean = torch.where(norm.varying.bool(), norm.denormalize(mean), norm.mean)
        std = torch.exp(0.5 * log_var) * norm.std * norm.varying
        sample = mean + std * draw_normal(tuple(mean.shape), generator, dev)
        nxt = state + sample[..., :d]
        if derive_fn is not None:
            nxt = derive_fn(flat(state), flat(nxt)).reshape(e, n, d)
        reward = sample[..., d] if reward_fn is None \
            else reward_fn(flat(state), flat(act), flat(nxt)).reshape(e, n)
        ret += torch.where(alive, reward, 0.0) * gamma**t
        if limits is not None:
            viol += torch.where(alive, limits.violation(nxt), 0.0)
        if termination_fn is not None:
            alive &= ~termination_fn(flat(state), flat(act), flat(nxt)).reshape(e, n).bool()
        state = nxt
    if value_fn is not None:
        ret += torch.where(alive, value_fn(flat(state)).reshape(e, n), 0.0) * gamma**h
    return (ret.reshape(e, c, particles).mean((0, 2)),
            viol.reshape(e, c, particles).amax((0, 2)))


# ---------------------------------------------------------------------- the planner
class CEMPlanner:
    """CEM-MPC over an ensemble (see the module docstring); :meth:`plan` once per step.

    Each plan starts from the last one shifted by a step, with ``init_std``; every iteration
    scores ``population`` sequences (a ``policy_fraction`` of them rolled out by ``policy``
    through the model once per plan, as TD-MPC2 mixes policy trajectories into its samples)
    and refits the Gaussian to the ``elite_fraction`` best. The mean itself is scored in the
    last iteration and the executed action is the first of the best sequence scored in any
    iteration (Pinneri et al. 2020, iCEM), so a chosen sequence is always one that was scored,
    feasible whenever any scored sequence was.

    Args:
        ensemble: the MBPO/PETS ensemble (the very object that is trained); ``cfg``: agent.act.
        reward_fn, termination_fn, derive_fn: the task's pure functions (:mod:`envs.tasks`).
        generator: the planner's random stream (CPU or the ensemble's device).
        policy: batched stochastic policy for the seeded sequences; ``None``: none (PETS).
        value_fn: the value at the horizon (MBPO's critic); ``gamma``: the discount.
        limits: the shield's limits for ``respect_shield``; ``None``: unconstrained.
    """

    def __init__(self, ensemble: ProbabilisticEnsemble, cfg: PlannerConfig, act_dim: int,
                 reward_fn: RewardFn | None, termination_fn: TerminationFn | None,
                 derive_fn: DeriveFn | None = None, *, generator: torch.Generator,
                 policy: Policy | None = None, value_fn: ValueFn | None = None,
                 gamma: float = 1.0, limits: Limits | None = None) -> None:
        self.ensemble, self.cfg, self.act_dim = ensemble, cfg, act_dim
        self.reward_fn, self.termination_fn, self.derive_fn = reward_fn, termination_fn, derive_fn
        self.generator, self.policy, self.value_fn = generator, policy, value_fn
        self.gamma, self.limits = gamma, limits
        self.horizon = cfg.plan_horizon(value_fn is not None)
        self.n_policy = int(round(cfg.policy_fraction * cfg.population)) if policy else 0
        self.device = next(ensemble.parameters()).device
        self.mean = torch.zeros(self.horizon, act_dim, device=self.device)
        self.start_mean = self.mean.clone()  # the warm start the last plan began from
        self.times: list[float] = []  # seconds per plan (completed or not)
        self.overruns = 0  # plans abandoned for the budget
        self.chosen_feasible: list[bool] = []  # per plan with limits: was the chosen feasible
        self.last: dict[str, float] = {}

    def reset(self) -> None:
        """A new episode: forget the warm start."""
        self.mean = torch.zeros_like(self.mean)

    def fallback_action(self) -> np.ndarray:
        """The current warm start's first action: the last plan's next step (``[A]``)."""
        return self.mean[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def plan(self, obs: np.ndarray, elites: Sequence[int],
             budget_s: float | None = None) -> np.ndarray | None:
        """The first action ``[A]`` of the best sequence from ``obs`` ``[D]``; ``None`` when
        ``budget_s`` is given and the plan would overrun it (checked before each iteration
        from the time per iteration so far, and at the end): the warm start then still
        advances a step, so the next plan starts in time."""
        t0, cfg = time.perf_counter(), self.cfg
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        mean = shift_plan(self.mean)
        self.start_mean = mean.clone()
        std = torch.full_like(mean, cfg.init_std)
        seeded = self.policy_sequences(obs_t, elites) if self.n_policy else None
        best_rank, best, best_ret, best_viol = -float("inf"), mean, 0.0, 0.0
        for i in range(cfg.iterations):
            elapsed = time.perf_counter() - t0
            if budget_s is not None and i > 0 and elapsed * (i + 1) / i > budget_s:
                return self._abandon(t0)
            noise = draw_normal((cfg.population - self.n_policy, self.horizon, self.act_dim),
                                self.generator, self.device)
            parts = [(mean + std * noise).clamp(-1.0, 1.0)]
            if seeded is not None:
                parts.append(seeded)
            if i == cfg.iterations - 1:
                parts.append(mean[None])
            cand = torch.cat(parts)
            ret, viol = score_sequences(
                self.ensemble, elites, obs_t, cand, particles=cfg.particles,
                reward_fn=self.reward_fn, termination_fn=self.termination_fn,
                derive_fn=self.derive_fn, generator=self.generator, value_fn=self.value_fn,
                gamma=self.gamma, limits=self.limits)
            rank = rank_scores(ret, viol)
            mean, std = refit(cand[rank.topk(cfg.elites).indices], mean, std, cfg.momentum)
            j = int(rank.argmax())
            if float(rank[j]) > best_rank:
                best_rank, best = float(rank[j]), cand[j]
                best_ret, best_viol = float(ret[j]), float(viol[j])
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            return self._abandon(t0)
        self.mean = mean
        self.times.append(time.perf_counter() - t0)
        if self.limits is not None:
            self.chosen_feasible.append(best_viol == 0)
        self.last = {"plan_return": best_ret, "plan_violation": best_viol}
        return best[0].cpu().numpy().astype(np.float32)

    def _abandon(self, t0: float) -> None:
        """Over budget: count it and keep the old plan, shifted a step, as the warm start
        (an unfinished search is not a plan)."""
        self.mean = shift_plan(self.mean)
        self.overruns += 1
        self.times.append(time.perf_counter() - t0)
        return None

    @torch.no_grad()
    def policy_sequences(self, obs: torch.Tensor, elites: Sequence[int]) -> torch.Tensor:
        """``[n_policy, H, A]`` sequences of the policy rolled through the model from ``obs``
        ``[D]`` (one TS1 sample per step, ``ensemble.predict``)."""
        state = obs.expand(self.n_policy, -1)
        steps = []
        for _ in range(self.horizon):
            action = self.policy(state).clamp(-1.0, 1.0)
            steps.append(action)
            pred = predict(self.ensemble, state, action, elites, self.generator)
            state = pred.next_obs if self.derive_fn is None \
                else self.derive_fn(state, pred.next_obs)
        return torch.stack(steps, 1)

    def figures(self) -> dict[str, Any]:
        """Plan time per action (ms, p50/p99), plans over budget and, with limits, the share
        of plans whose chosen sequence was feasible; for the progress events."""
        if not self.times:
            return {}
        p50, p99 = np.percentile(np.asarray(self.times) * 1e3, [50, 99])
        out: dict[str, Any] = {"plan_ms_p50": float(p50), "plan_ms_p99": float(p99),
                               "plans": len(self.times), "plan_overruns": self.overruns}
        if self.chosen_feasible:
            out["plan_feasible"] = float(np.mean(self.chosen_feasible))
        return out


# ------------------------------------------------------------------- SAC's part in it
def sac_policy(sac: SAC, generator: torch.Generator) -> Policy:
    """SAC's stochastic policy as a batched torch function drawing from ``generator`` (the
    planner's, not SAC's own streams)."""

    def policy(obs: torch.Tensor) -> torch.Tensor:
        mean, log_std = sac.actor(sac.normalize(obs.to(sac.device)))
        noise = draw_normal(tuple(mean.shape), generator, mean.device)
        return squashed_gaussian(mean, log_std, noise)[0].to(obs.device)

    return policy


def sac_value(sac: SAC) -> ValueFn:
    """``V(s) = min_i Q_i(s, tanh(mu(s)))`` ``[B]``: the clipped double-Q value of the
    deterministic action (LOOP and TD-MPC2 end their plans with the learned Q)."""

    def value(obs: torch.Tensor) -> torch.Tensor:
        norm = sac.normalize(obs.to(sac.device))
        mean, log_std = sac.actor(norm)
        return sac.critic(norm, squashed_gaussian(mean, log_std, None)[0]).amin(0).to(obs.device)

    return value


def acting_state(sac: SAC, ensemble: ProbabilisticEnsemble | None = None,
                 elites: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    """What the async actor needs to act, published as one vector: SAC's acting state and,
    for a planner, the critic (``critic.*``), the ensemble (``ensemble.*``) and the elites as
    an ``[E]`` 0/1 mask (``elites``)."""
    state = sac.acting_state()
    if ensemble is None:
        return state
    mask = torch.zeros(ensemble.members)
    mask[list(elites)] = 1.0
    return {**state, **{f"critic.{k}": v for k, v in sac.critic.state_dict().items()},
            **{f"ensemble.{k}": v for k, v in ensemble.state_dict().items()}, "elites": mask}


def load_acting_state(sac: SAC, ensemble: ProbabilisticEnsemble | None,
                      state: dict[str, torch.Tensor]) -> list[int]:
    """Load :func:`acting_state`'s tensors (the actor process); returns the elites (none
    while the ensemble is unfitted)."""
    sac.load_acting_state(state)
    if ensemble is None:
        return []
    sac.critic.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("critic.")})
    ensemble.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("ensemble.")})
    return np.flatnonzero(state["elites"].numpy() > 0.5).tolist()
