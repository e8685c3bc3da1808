"""Learner speed by number format and Adam kernel: one SAC update, one ensemble fit epoch, one
model rollout batch.

Three set-ups, timed in the same process and interleaved (every repeat runs each set-up once,
in turn, so a slow spell of a shared machine hits all of them alike):

- ``fp32 + plain Adam``: float32 and ``torch.optim.Adam`` with its per-tensor loop (what torch
  picks on CPU unless asked; the learner before ``precision`` and :func:`agent.layers.adam`),
- ``fp32 + fused Adam``: float32 and :func:`agent.layers.adam` (fused kernel),
- ``bf16 + fused Adam``: ``precision=bf16`` (bfloat16 autocast of the forward passes) and
  the fused kernel.

Rows: ms per SAC update at batch 256 with hidden (256, 256) and (512, 512) (ArmReach-v0 sizes,
19 observations, 5 actions); ms per ensemble epoch (7 members, 4x200, batch 256, 10k
transitions: 8k trained); ms per model rollout batch (100k start states, horizon 1, 5 elites,
rows of 4096, the SAC policy; no optimizer, so both fp32 set-ups run the same code). Medians
over ``--repeats``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/learner_speed.py --repeats 7

Prints a table; writes bench/results/learner_speed.json and learner_speed.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mbpo_arm.agent.config import EnsembleConfig, SACConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble
from mbpo_arm.agent.ensemble_train import _model_data, _optimizer, _train_epoch
from mbpo_arm.agent.layers import native_bf16
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.rollout import branched_rollout
from mbpo_arm.agent.sac import SAC

RESULTS = Path(__file__).resolve().parent / "results"
OBS, ACT = 19, 5  # ArmReach-v0
SETUPS = {"fp32 + plain Adam": ("fp32", False), "fp32 + fused Adam": ("fp32", True),
          "bf16 + fused Adam": ("bf16", True)}
Timer = Callable[[], float]  # runs once, returns ms per item


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain(opt: torch.optim.Optimizer) -> torch.optim.Adam:
    """The same parameter groups and settings under the per-tensor Adam loop."""
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")}
              for g in opt.param_groups]
    return torch.optim.Adam(groups, foreach=False, fused=False)


def sac_timer(hidden: int, precision: str, fused: bool, device: torch.device,
              updates: int = 20) -> Timer:
    """ms per :meth:`SAC.update` at batch 256, over ``updates`` updates on replay batches."""
    rng = np.random.default_rng(0)
    n = 10_000
    replay = ReplayBuffer(n, OBS, ACT)
    replay.add(rng.normal(size=(n, OBS)), rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n),
               rng.normal(size=(n, OBS)), np.zeros(n, bool), np.zeros(n, bool))
    sac = SAC(OBS, ACT, SACConfig(hidden=(hidden, hidden)), device=device,
              generator=torch.Generator().manual_seed(0), precision=precision)
    if not fused:
        sac.actor_opt, sac.critic_opt, sac.alpha_opt = (
            plain(o) for o in (sac.actor_opt, sac.critic_opt, sac.alpha_opt))
    batches = [replay.sample(256, rng, device) for _ in range(updates)]

    def run() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for b in batches:
            sac.update(b)
        _sync(device)
        return (time.perf_counter() - t0) * 1e3 / updates
    return run


def ensemble_timer(precision: str, fused: bool, device: torch.device, n: int = 10_000) -> Timer:
    """ms per ensemble training epoch (``agent.ensemble_train._train_epoch``) on ``n``
    transitions, 80% trained, each member on its bootstrap."""
    cfg = EnsembleConfig(device=str(device))
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(OBS, ACT, cfg, precision=precision)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, ACT)).astype(np.float32)
    nxt = obs + 0.1 * rng.normal(size=(n, OBS)).astype(np.float32)
    x, y = _model_data(model, obs, act, nxt, None)
    train = int(0.8 * n)
    boot = torch.as_tensor(rng.integers(0, train, (cfg.members, train)), device=device)
    opt = _optimizer(model, cfg)
    opt = opt if fused else plain(opt)
    gen = torch.Generator().manual_seed(0)

    def run() -> float:
        _sync(device)
        t0 = time.perf_counter()
        _train_epoch(model, opt, x[:train], y[:train], boot, cfg.batch_size, gen)
        _sync(device)
        return (time.perf_counter() - t0) * 1e3
    return run


def rollout_timer(precision: str, fused: bool, device: torch.device,
                  batch: int = 100_000) -> Timer:
    """ms per :func:`branched_rollout` of ``batch`` start states at horizon 1 (``fused`` has
    no part: a rollout runs no optimizer)."""
    del fused
    cfg = EnsembleConfig(device=str(device))
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(OBS, ACT, cfg, precision=precision)
    sac = SAC(OBS, ACT, SACConfig(), device=device, generator=torch.Generator().manual_seed(0),
              precision=precision)
    start = np.random.default_rng(0).normal(size=(batch, OBS)).astype(np.float32)
    gen = torch.Generator().manual_seed(0)

    def reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return -next_obs.norm(dim=-1)

    def run() -> float:
        t0 = time.perf_counter()
        branched_rollout(model, [0, 1, 2, 3, 4], sac.policy_tensor, start, 1, reward, None,
                         gen, chunk_size=4096 if device.type == "cpu" else None)
        return (time.perf_counter() - t0) * 1e3
    return run


ROWS: dict[str, Callable[[str, bool, torch.device], Timer]] = {
    "SAC update, hidden 256 (ms)": lambda p, f, d: sac_timer(256, p, f, d),
    "SAC update, hidden 512 (ms)": lambda p, f, d: sac_timer(512, p, f, d),
    "ensemble fit epoch (ms)": ensemble_timer,
    "rollout batch 100k (ms)": rollout_timer,
}


def measure(device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    """Median ms per item of every row and set-up, repeats interleaved across set-ups."""
    out: dict[str, dict[str, float]] = {}
    for row, make in ROWS.items():
        timers = {name: make(p, f, device) for name, (p, f) in SETUPS.items()}
        for t in timers.values():  # warm-up: first-call allocations, oneDNN kernel choice
            t()
        times: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(repeats):
            for name, t in timers.items():
                times[name].append(t())
        out[row] = {name: statistics.median(v) for name, v in times.items()}
        print(f"  {row}: " + ", ".join(f"{k} {v:.2f}" for k, v in out[row].items()), flush=True)
    return out


def plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4))
    colors = ("tab:gray", "tab:blue", "tab:orange")
    for ax, (row, by_setup) in zip(axes, results.items(), strict=True):
        names = list(by_setup)
        ax.bar(range(len(names)), [by_setup[n] for n in names], color=colors)
        base = by_setup[names[0]]
        for i, n in enumerate(names):
            ax.text(i, by_setup[n], f"{base / by_setup[n]:.1f}x", ha="center", va="bottom")
        ax.set_xticks(range(len(names)), [n.replace(" + ", "\n") for n in names], fontsize=8)
        ax.set_title(row, fontsize=9)
    fig.suptitle("learner speed (lower is better; x: speed-up over fp32 + plain Adam)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per set-up (>= 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"learner speed on {device}, {args.threads} torch thread(s), native bf16: "
          f"{native_bf16(device)}", flush=True)
    results = measure(device, args.repeats)
    names = list(SETUPS)
    print(f"\n{'ms per item':<30}" + "".join(f"{n:>20}" for n in names) + f"{'bf16 speed-up':>15}")
    for row, by_setup in results.items():
        print(f"{row:<30}" + "".join(f"{by_setup[n]:>20.2f}" for n in names)
              + f"{by_setup[names[0]] / by_setup[names[-1]]:>14.1f}x")
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "python":
            platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": args.threads, "repeats": args.repeats, "cpus": os.cpu_count(),
            "native_bf16": native_bf16(device), "load_average_1min": os.getloadavg()[0]}
    (RESULTS / "learner_speed.json").write_text(json.dumps({**meta, "median_ms": results},
                                                           indent=1))
    plot(results, RESULTS / "learner_speed.png")


if __name__ == "__main__":
    main()
