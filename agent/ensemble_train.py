"""Training and quality report of the dynamics ensemble (Janner et al. 2019, MBPO, app. C).

``train_ensemble`` fits a ``ProbabilisticEnsemble`` on all data so far and returns a
``ModelReport`` naming the elites; ``multistep_error`` measures open-loop error along real
trajectories. ``LoopEnsemble`` is a one-member-at-a-time baseline, used only to benchmark the
batched ensemble.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mbpo_arm.agent.config import EnsembleConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, draw_uniform, member_index
from mbpo_arm.agent.layers import adam
from mbpo_arm.agent.math import gaussian_nll

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class ModelReport:
    """What one ``train_ensemble`` call did and how good the model is (JSON via ``to_dict``).

    MSE and NLL are on the holdout set in normalized target units; NLL omits ``0.5 log 2 pi``.
    """

    epochs: int  # epochs run before early stop or the cap
    train_nll: float  # mean training NLL over members in the last epoch
    holdout_mse: list[float]  # per member, of the kept (best) weights
    elite_holdout_mse: float  # mean over the elites
    holdout_nll: list[float]  # per member
    elite_holdout_nll: float  # mean over the elites
    initial_holdout_mse: float  # mean over members before this call's training
    initial_holdout_nll: float  # mean over members before this call's training
    elites: list[int]  # indices of the best members, best first
    train_size: int  # transitions trained on (before bootstrapping)
    holdout_size: int  # transitions held out
    seconds: float  # wall time of the call
    samples_per_s: float  # member-samples through forward+backward per second of training
    multistep_mse: dict[int, float] = field(default_factory=dict)  # from multistep_error

    def to_dict(self) -> dict:
        d = asdict(self)
        d["multistep_mse"] = {str(k): v for k, v in self.multistep_mse.items()}
        return d


def holdout_split(n: int, cfg: EnsembleConfig, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(train_idx, holdout_idx)`` of ``n`` items; the holdout is
    ``min(holdout_ratio * n, max_holdout)`` items and is shared by all members."""
    n_hold = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
    if n - n_hold < 1:
        raise ValueError(f"need at least one training transition, got n={n}")
    perm = rng.permutation(n)
    return perm[n_hold:], perm[:n_hold]


def _as_tensor(x: ArrayLike, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x), dtype=torch.float32,
                           device=device)


@torch.no_grad()
def _evaluate(model: ProbabilisticEnsemble, x: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member ``(mse [E], nll [E])`` of ``x`` ``[N, D_in]`` against normalized ``y``."""
    mean, log_var = model(x.expand(model.members, -1, -1))
    target = y.expand(model.members, -1, -1)
    return ((mean - target) ** 2).mean(dim=(1, 2)), gaussian_nll(mean, log_var, target)


def _optimizer(model: ProbabilisticEnsemble, cfg: EnsembleConfig) -> torch.optim.Adam:
    """Adam with one weight decay per layer on the weights only (MBPO decays weights, not
    biases); Adam's ``weight_decay`` adds ``wd * w`` to the gradient, i.e. an L2 term. Fused
    or foreach kernel: :func:`~agent.layers.adam`."""
    groups = [{"params": [layer.weight], "weight_decay": wd}
              for layer, wd in zip(model.layers, cfg.weight_decay, strict=True)]
    rest = [layer.bias for layer in model.layers] + [model.max_log_var, model.min_log_var]
    groups.append({"params": rest, "weight_decay": 0.0})
    return adam(groups, lr=cfg.lr)


def _train_epoch(model: ProbabilisticEnsemble, opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, boot: torch.Tensor, batch_size: int,
                 generator: torch.Generator | None) -> tuple[float, int]:
    """One pass over each member's bootstrap ``boot`` ``[E, N]`` (rows shuffled apart);
    returns the mean NLL over members and the member-samples processed."""
    order = torch.argsort(draw_uniform(tuple(boot.shape), generator, boot.device), dim=1)
    idx_all = boot.gather(1, order)
    total, steps, samples = 0.0, 0, 0
    for start in range(0, boot.shape[1], batch_size):
        idx = idx_all[:, start:start + batch_size]  # [E, b]
        loss = model.loss(x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, steps, samples = total + loss.item(), steps + 1, samples + idx.numel()
    return total / max(steps, 1) / model.members, samples


def _model_data(model: ProbabilisticEnsemble, obs: ArrayLike, action: ArrayLike,
                next_obs: ArrayLike, reward: ArrayLike | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Refit both normalizers on all data; return raw inputs ``[N, D_in]`` and normalized
    targets ``[N, D_out]``."""
    dev = next(model.parameters()).device
    obs_t, next_t = _as_tensor(obs, dev), _as_tensor(next_obs, dev)
    x = torch.cat([obs_t, _as_tensor(action, dev)], dim=-1)
    y = next_t - obs_t
    if model.learn_reward:
        if reward is None:
            raise ValueError("the ensemble learns the reward: train_ensemble needs reward")
        y = torch.cat([y, _as_tensor(reward, dev).reshape(-1, 1)], dim=-1)
    model.in_norm.fit(x)
    model.out_norm.fit(y)
    return x, model.out_norm.normalize(y)


def _fit(model: ProbabilisticEnsemble, cfg: EnsembleConfig, train: tuple[torch.Tensor, ...],
         hold: tuple[torch.Tensor, ...], boot: torch.Tensor,
         generator: torch.Generator | None) -> tuple[int, float, int, float]:
    """Epochs until no member improves its holdout MSE by ``cfg.improvement`` (relative) for
    ``cfg.patience`` epochs; each member ends with its own best weights (MBPO
    ``BNN._save_best``). Returns epochs, last train NLL, member-samples, training seconds."""
    best, _ = _evaluate(model, *hold)
    snapshot = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = _optimizer(model, cfg)
    cap = min(cfg.max_epochs or cfg.max_epochs_per_train, cfg.max_epochs_per_train)
    epochs, since, train_nll, samples, seconds = 0, 0, float("nan"), 0, 0.0
    while epochs < cap and since < cfg.patience:
        t0 = time.perf_counter()
        train_nll, n = _train_epoch(model, opt, *train, boot, cfg.batch_size, generator)
        seconds, samples, epochs = seconds + time.perf_counter() - t0, samples + n, epochs + 1
        mse, _ = _evaluate(model, *hold)
        improved = (best - mse) / best.clamp_min(1e-12) > cfg.improvement  # [E]
        since = 0 if bool(improved.any()) else since + 1
        best = torch.where(improved, mse, best)
        with torch.no_grad():
            for k, p in model.named_parameters():
                snapshot[k][improved] = p[improved]  # every parameter leads with E
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(snapshot[k])
    return epochs, train_nll, samples, seconds


def train_ensemble(model: ProbabilisticEnsemble, obs: ArrayLike, action: ArrayLike,
                   next_obs: ArrayLike, reward: ArrayLike | None, cfg: EnsembleConfig,
                   rng: np.random.Generator, generator: torch.Generator | None = None
                   ) -> ModelReport:
    """Fit the ensemble on all data so far and choose the elites.

    Args:
        obs, next_obs: ``[N, D]``; action: ``[N, A]``; reward: ``[N]``, needed only with
            ``learn_reward`` (else may be ``None``). numpy or torch.
        rng: draws the shared holdout (``holdout_split``, its first use) and each member's
            bootstrap of the training set.
        generator: shuffles each member's bootstrap every epoch (minibatches ``[E, B, D]``).
    Normalizers are refitted on all data and Adam starts afresh every call; training goes on
    from the current weights. With an empty holdout (tiny data) the training set stands in for
    it. The caller keeps ``report.elites`` and passes them back.
    """
    t0 = time.perf_counter()
    x, y = _model_data(model, obs, action, next_obs, reward)
    train_idx, hold_idx = holdout_split(x.shape[0], cfg, rng)
    if len(hold_idx) == 0:
        hold_idx = train_idx
    tr = torch.as_tensor(train_idx, device=x.device)
    ho = torch.as_tensor(hold_idx, device=x.device)
    boot = torch.as_tensor(rng.integers(0, len(tr), size=(model.members, len(tr))),
                           device=x.device)
    mse0, nll0 = _evaluate(model, x[ho], y[ho])
    epochs, train_nll, samples, train_s = _fit(model, cfg, (x[tr], y[tr]), (x[ho], y[ho]),
                                               boot, generator)
    mse, nll = _evaluate(model, x[ho], y[ho])
    elites = torch.argsort(mse)[:cfg.elites].tolist()
    return ModelReport(
        epochs=epochs, train_nll=train_nll, holdout_mse=mse.tolist(),
        elite_holdout_mse=float(mse[elites].mean()), holdout_nll=nll.tolist(),
        elite_holdout_nll=float(nll[elites].mean()), initial_holdout_mse=float(mse0.mean()),
        initial_holdout_nll=float(nll0.mean()), elites=elites, train_size=len(tr),
        holdout_size=len(ho), seconds=time.perf_counter() - t0,
        samples_per_s=samples / max(train_s, 1e-9))


@torch.no_grad()
def multistep_error(model: ProbabilisticEnsemble, elites: Sequence[int],
                    trajectories: Sequence[tuple[ArrayLike, ArrayLike]],
                    horizons: Sequence[int] = (1, 5, 10),
                    generator: torch.Generator | None = None,
                    max_starts: int = 4096,
                    derive_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                    ) -> dict[int, float]:
    """Open-loop error of the elite-mean model along real trajectories.

    Each trajectory is ``(obs [T+1, D], actions [T, A])``. From every start ``t`` (at most
    ``max_starts`` in all, drawn with ``generator``) the model is stepped with the recorded
    actions, ``s_{k+1} = s_k + mean_e mu_e(s_k, a_{t+k})``; the result at horizon ``h`` is the
    MSE (raw units, mean over dimensions and starts) against ``obs[t + h]``, over the starts
    with ``t + h <= T``. A horizon no start reaches gives ``nan``. ``derive_fn`` completes each
    predicted state as the rollouts do (``agent.rollout.branched_rollout``).
    """
    if min(horizons) < 1:
        raise ValueError(f"horizons must be >= 1, got {list(horizons)}")
    dev = next(model.parameters()).device
    h_max = max(horizons)
    starts, acts, targets, valid = [], [], [], []
    for obs_np, act_np in trajectories:
        o, a = _as_tensor(obs_np, dev), _as_tensor(act_np, dev)
        t_len = a.shape[0]
        if t_len == 0:
            continue
        steps = torch.arange(t_len, device=dev)[:, None] + torch.arange(h_max, device=dev)
        ok = steps < t_len  # [T, H]: start t has a recorded step t + k
        steps = steps.clamp_max(t_len - 1)
        starts.append(o[:-1])
        acts.append(a[steps])
        targets.append(o[steps + 1])
        valid.append(ok)
    if not starts:
        return {h: float("nan") for h in horizons}
    s, a, tgt, ok = (torch.cat(v) for v in (starts, acts, targets, valid))
    if s.shape[0] > max_starts:
        keep = torch.argsort(draw_uniform((s.shape[0],), generator, dev))[:max_starts]
        s, a, tgt, ok = s[keep], a[keep], tgt[keep], ok[keep]
    members = member_index(model, elites, dev)
    out: dict[int, float] = {}
    for k in range(h_max):
        x = torch.cat([s, a[:, k]], dim=-1).expand(len(elites), -1, -1)
        mean, _ = model(x, members)
        nxt = s + model.out_norm.denormalize(mean).mean(dim=0)[:, :model.obs_dim]
        s = nxt if derive_fn is None else derive_fn(s, nxt)
        if k + 1 in horizons:
            err = ((s - tgt[:, k]) ** 2).mean(dim=-1)[ok[:, k]]
            out[k + 1] = float(err.mean()) if err.numel() else float("nan")
    return out
