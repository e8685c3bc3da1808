"""Micro-benchmarks of the learning stack, each against a straightforward loop in the same run.

    python bench/micro.py [--repeats 5] [--threads 1 2] [--device cpu]

Rows: ensemble training samples/s and forward states/s (batched ``[E, in, out]`` vs one
member at a time), model rollout transitions/s at a 100k-state batch (row blocks vs one pass),
SAC updates/s at batch 256 (both critics in one pass vs one after the other), and MBPO
wall-clock seconds per env step at UTD 20 on ``ArmReach-v0``. Medians over ``--repeats``;
prints a table, saves JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from baselines import LoopCritic, LoopEnsemble

from mbpo_arm.agent.config import EnsembleConfig, SACConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.rollout import branched_rollout
from mbpo_arm.agent.sac import SAC

ROOT = Path(__file__).resolve().parents[1]

OBS, ACT = 19, 5  # ArmReach-v0


def timed(fn: Callable[[], int], repeats: int, warmup: int = 1) -> float:
    """Median items/s of ``fn`` (which returns how many items it processed)."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def ensemble_training(device: torch.device, repeats: int) -> dict[str, float]:
    """Member-samples/s through forward + backward + Adam, 7 members, 4x200, batch 256."""
    cfg = EnsembleConfig()
    x = torch.randn(cfg.members, cfg.batch_size, OBS + ACT, device=device)
    y = torch.randn(cfg.members, cfg.batch_size, OBS, device=device)
    out = {}
    for name, model in (("batched", ProbabilisticEnsemble(OBS, ACT, cfg).to(device)),
                        ("loop", LoopEnsemble(OBS + ACT, OBS, cfg).to(device))):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt) -> int:
            for _ in range(20):
                loss = model.loss(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            _sync(device)
            return 20 * x.shape[0] * x.shape[1]

        out[name] = timed(step, repeats)
    return out


@torch.no_grad()
def ensemble_forward(device: torch.device, repeats: int, batch: int = 100_000
                     ) -> dict[str, float]:
    """States/s through all 7 members (the prediction inside a 100k rollout), in blocks of
    4096 rows: one batched pass per block vs the members one after another."""
    cfg = EnsembleConfig()
    x = torch.randn(batch, OBS + ACT, device=device)
    out = {}
    for name, model in (("batched", ProbabilisticEnsemble(OBS, ACT, cfg).to(device)),
                        ("loop", LoopEnsemble(OBS + ACT, OBS, cfg).to(device))):
        def run(model=model) -> int:
            for block in x.split(4096):
                model(block.expand(cfg.members, -1, -1))
            _sync(device)
            return batch
        out[name] = timed(run, repeats)
    return out


def rollouts(device: torch.device, repeats: int, batch: int = 100_000) -> dict[str, float]:
    """Model transitions/s of ``branched_rollout`` at horizon 1 from ``batch`` states, with
    the SAC policy and 5 elites; chunked rows (CPU-friendly) vs one pass."""
    model = ProbabilisticEnsemble(OBS, ACT, EnsembleConfig()).to(device)
    sac = SAC(OBS, ACT, SACConfig(), device=device, generator=torch.Generator().manual_seed(0))
    start = np.random.default_rng(0).normal(size=(batch, OBS)).astype(np.float32)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, chunk in (("chunked", 4096), ("one pass", None)):
        def run(chunk=chunk) -> int:
            data, _ = branched_rollout(model, [0, 1, 2, 3, 4], sac.policy_tensor, start, 1,
                                       None if model.learn_reward else _zero_reward, None,
                                       gen, chunk_size=chunk)
            _sync(device)
            return len(data["obs"])
        out[name] = timed(run, repeats)
    return out


def sac_updates(device: torch.device, repeats: int) -> dict[str, float]:
    """SAC updates/s at batch 256, (256, 256): twin critic in one pass vs a loop of two."""
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(10_000, OBS, ACT)
    n = 10_000
    replay.add(rng.normal(size=(n, OBS)), rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n),
               rng.normal(size=(n, OBS)), np.zeros(n, bool), np.zeros(n, bool))
    out = {}
    for name in ("one pass", "loop"):
        sac = SAC(OBS, ACT, SACConfig(), device=device,
                  generator=torch.Generator().manual_seed(0))
        if name == "loop":
            sac.critic = LoopCritic(OBS, ACT, sac.cfg.hidden).to(device)
            sac.critic_target = LoopCritic(OBS, ACT, sac.cfg.hidden).to(device)
            sac.critic_target.load_state_dict(sac.critic.state_dict())
            sac.critic_target.requires_grad_(False)
            sac._make_optimizers()
        batches = [replay.sample(256, rng, device) for _ in range(50)]

        def run(sac=sac, batches=batches) -> int:
            for b in batches:
                sac.update(b)
            _sync(device)
            return len(batches)

        out[name] = timed(run, repeats)
    return out


def mbpo_step_time(device: str, steps: int = 500) -> dict[str, float]:
    """Wall-clock seconds per env step of MBPO (UTD 20) on ArmReach-v0 in the twin, over
    ``steps`` steps after the model's first training, model training and rollouts included
    (measured through the same composition root as ``mbpo-arm train``)."""
    import tempfile

    from mbpo_arm.agent.train import (
        collect_step,
        model_due,
        rollout_model,
        start_episode,
        train_model,
        update_policy,
    )
    from mbpo_arm.configs.loader import load_run_config
    from mbpo_arm.launch.build import build_run

    with tempfile.TemporaryDirectory() as tmp:
        rc, _ = load_run_config(["agent=mbpo_reach", "logger.wandb=disabled",
                                 f"device={device}"])
        run = build_run(rc, Path(tmp))
        obs = start_episode(run)
        phases = {"collect": 0.0, "model": 0.0, "sac": 0.0}
        warm = run.agent.model.mbpo.model_learning_starts
        for i in range(warm + steps):
            t0 = time.perf_counter()
            obs = collect_step(run, obs)
            t1 = time.perf_counter()
            step = run.progress.counters.env_steps
            if model_due(run.agent.model, step):
                train_model(run.agent, run.run_dir, step)
                rollout_model(run.agent, step)
            t2 = time.perf_counter()
            update_policy(run.agent, run.progress)
            t3 = time.perf_counter()
            if i >= warm:
                for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    phases[k] += dt / steps
        run.logger.close()
    return {"total": sum(phases.values()), **phases}


def _zero_reward(o: torch.Tensor, a: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return torch.zeros(o.shape[0], device=o.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--mbpo-steps", type=int, default=500, help="0 skips the MBPO row")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "micro")
    a = p.parse_args()
    device = torch.device(a.device)
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        tag = f"{a.device}, {threads} thr"
        for label, unit, fn, fast, slow in (
                ("ensemble training", "samples/s", ensemble_training, "batched", "loop"),
                ("ensemble forward, 100k", "states/s", ensemble_forward, "batched", "loop"),
                ("rollout, 100k batch, h=1", "transitions/s", rollouts, "chunked", "one pass"),
                ("SAC update, batch 256", "updates/s", sac_updates, "one pass", "loop")):
            r = fn(device, a.repeats)
            rows.append({"what": label, "setting": tag, "unit": unit, fast: r[fast],
                         slow: r[slow], "ratio": r[fast] / r[slow], "fast": fast, "slow": slow})
            print(f"{label:28s} {tag:14s} {fast:>9s} {r[fast]:12.0f} {unit:14s} "
                  f"{slow:>9s} {r[slow]:12.0f}   x{r[fast] / r[slow]:.2f}", flush=True)
        if a.mbpo_steps:
            m = mbpo_step_time(a.device, a.mbpo_steps)
            rows.append({"what": "MBPO s per env step, UTD 20", "setting": tag, "unit": "s",
                         **m})
            print(f"{'MBPO s/env step, UTD 20':28s} {tag:14s} total {m['total']:.3f} s "
                  f"(collect {m['collect']:.4f}, model {m['model']:.3f}, sac {m['sac']:.3f})",
                  flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps({"repeats": a.repeats, "rows": rows},
                                                     indent=2))
    _plot(rows, a.out.with_suffix(".png"))
    print(f"\nwrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}")


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio_rows = [r for r in rows if "ratio" in r]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['what']}\n{r['setting']}" for r in ratio_rows]
    ax.barh(labels, [r["ratio"] for r in ratio_rows], color="tab:blue")
    ax.axvline(1.0, color="gray", ls="--")
    ax.set_xlabel("speed-up of the batched computation over the loop (x)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
