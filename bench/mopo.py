"""MOPO benchmark on an ``ArmReach-v0`` "medium" dataset, with the commands a user runs.

1. ``mbpo-arm collect policy=medium`` makes the dataset (behaviour success ~40-60%).
2. Per seed: ``mbpo-arm pretrain`` with the preset's lambda (MOPO) and with
   ``agent.mopo.penalty_coef=0`` (offline MBPO without the penalty), same data.
3. Optional (``--finetune-steps``): ``mbpo-arm train init_from=<MOPO run>`` against MBPO from
   scratch, env steps to ``--target`` success (``trainer.stop_at``).

    python bench/mopo.py --seeds 0 1 2 --updates 5000 --model-epochs 50
    python bench/mopo.py --seeds 0 1 2 --finetune-steps 5000 --report-only
    python bench/mopo.py --finetune-steps 4000 --scratch-runs runs/bench-reach  # MBPO from
        # scratch taken from bench/learning_curve.py --agents mbpo_reach --runs runs/bench-reach

Prints a table, saves ``<out>.json`` and ``<out>.png``. Finished runs under ``--runs`` are
reused. Each run gets one CPU thread; ``--jobs`` run at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, median

from mbpo_arm.agent.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]

CLI = [sys.executable, "-m", "mbpo_arm.launch.cli"]
QUIET = ["logger.wandb=disabled", "logger.progress=false"]


def sh(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def make_dataset(a: argparse.Namespace) -> dict:
    path = a.runs / "reach-medium.npz"
    if not path.exists():
        sh([*CLI, "collect", "task=reach", "policy=medium", f"episodes={a.episodes}",
            f"noise={a.noise}", "seed=100", f"out={path}"], a.runs / "collect.log")
    from mbpo_arm.agent.dataset import load_dataset

    meta = load_dataset(path).meta
    return {"path": str(path), "transitions": meta.transitions, "episodes": meta.episodes,
            "behaviour_success_rate": meta.extra["behaviour_success_rate"],
            "behaviour_return": meta.extra["behaviour_return"]}


def pretrain(a: argparse.Namespace, dataset: str, seed: int, penalty: float) -> dict:
    name = f"{'mopo' if penalty > 0 else 'nopenalty'}-s{seed}"
    run = a.runs / name
    info = run / "pretrain.json"
    if not info.exists() and not a.report_only:
        sh([*CLI, "pretrain", f"dataset={dataset}", "task=reach", "agent=mopo_reach",
            f"seed={seed}", f"run_dir={run}", f"agent.mopo.penalty_coef={penalty}",
            f"agent.mopo.gradient_steps={a.updates}", f"agent.mopo.eval_every={a.eval_every}",
            f"agent.mopo.model_max_epochs={a.model_epochs}",
            f"trainer.eval_episodes={a.eval_episodes}", *QUIET], run / "stdout.log")
    if not info.exists():
        return {"run": str(run), "final": None}
    evals = [e for e in read_metrics(run) if e.get("eval_success_rate") is not None]
    return {"run": str(run), "final": evals[-1]["eval_success_rate"],
            "final_return": evals[-1]["eval_return"],
            "curve": [(e["updates"], e["eval_success_rate"]) for e in evals]}


def online(a: argparse.Namespace, seed: int, init_from: str | None) -> dict:
    name = f"{'finetune' if init_from else 'scratch'}-s{seed}"
    run = a.runs / name
    if init_from is None and a.scratch_runs is not None:  # learning_curve.py's mbpo_reach runs
        run = a.scratch_runs / f"reach-mbpo_reach-s{seed}"
        if not (run / "checkpoints").exists():
            raise SystemExit(f"{run}: no finished MBPO run there; run bench/learning_curve.py "
                             f"--agents mbpo_reach --runs {a.scratch_runs} first")
    extra = [f"init_from={init_from}", "agent=mopo_reach"] if init_from else \
        ["agent=mbpo_reach", "agent.sac.hidden=[128,128]"]
    if not (run / "checkpoints").exists() and not a.report_only:
        sh([*CLI, "train", "task=reach", *extra, f"seed={seed}", f"run_dir={run}",
            f"trainer.total_steps={a.finetune_steps}", f"trainer.eval_every={a.online_eval}",
            f"trainer.stop_at={a.target}", f"trainer.eval_episodes={a.eval_episodes}",
            *QUIET], run / "stdout.log")
    evals = [e for e in read_metrics(run) if e.get("eval_success_rate") is not None]
    hit = next((e["env_steps"] for e in evals if e["eval_success_rate"] >= a.target), None)
    return {"run": str(run), "steps_to_target": hit,
            "curve": [(e["env_steps"], e["eval_success_rate"]) for e in evals]}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    online_part = bool(result.get("finetune"))
    fig, axes = plt.subplots(1, 2 if online_part else 1, figsize=(11 if online_part else 6, 4),
                             squeeze=False)
    ax = axes[0][0]
    for key, color in (("mopo", "tab:blue"), ("nopenalty", "tab:red")):
        for i, r in enumerate(result[key].values()):
            if r.get("curve"):
                x, y = zip(*r["curve"], strict=True)
                ax.plot(x, y, "o-", color=color, alpha=0.7, label=key if i == 0 else None)
    ax.axhline(result["dataset"]["behaviour_success_rate"], color="k", ls="--",
               label="behaviour policy")
    ax.set(xlabel="SAC updates (offline)", ylabel="eval success rate", ylim=(-0.05, 1.05),
           title="ArmReach-v0 medium: offline")
    ax.legend()
    if not online_part:
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return
    ax = axes[0][1]
    for key, color in (("finetune", "tab:blue"), ("scratch", "tab:gray")):
        for i, r in enumerate(result.get(key, {}).values()):
            if r.get("curve"):
                x, y = zip(*r["curve"], strict=True)
                ax.plot(x, y, "o-", color=color, alpha=0.7, label=key if i == 0 else None)
    ax.axhline(result["target"], color="k", ls=":")
    ax.set(xlabel="online env steps", ylabel="eval success rate", ylim=(-0.05, 1.05),
           title="fine-tune from MOPO vs MBPO from scratch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.55)
    p.add_argument("--penalty", type=float, default=0.1, help="MOPO lambda")
    p.add_argument("--updates", type=int, default=5000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--model-epochs", type=int, default=50)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--finetune-steps", type=int, default=0, help="0: skip the online part")
    p.add_argument("--online-eval", type=int, default=500)
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-mopo")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reach_mopo")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--scratch-runs", type=Path, default=None,
                   help="take MBPO from scratch from bench/learning_curve.py --agents "
                        "mbpo_reach --runs DIR (same preset and online eval, 10 episodes) "
                        "instead of training it again")
    a = p.parse_args()
    a.runs = a.runs.resolve()
    dataset = make_dataset(a)
    jobs = [(s, pen) for s in a.seeds for pen in (a.penalty, 0.0)]
    with ThreadPoolExecutor(a.jobs) as pool:
        done = list(pool.map(lambda j: pretrain(a, dataset["path"], *j), jobs))
    result: dict = {"dataset": dataset, "target": a.target, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "mopo": {}, "nopenalty": {}}
    for (seed, pen), r in zip(jobs, done, strict=True):
        result["mopo" if pen > 0 else "nopenalty"][str(seed)] = r
    if a.finetune_steps:
        on = [(s, str(a.runs / f"mopo-s{s}")) for s in a.seeds] + [(s, None) for s in a.seeds]
        with ThreadPoolExecutor(a.jobs) as pool:
            outs = list(pool.map(lambda j: online(a, *j), on))
        for (seed, init), r in zip(on, outs, strict=True):
            result.setdefault("finetune" if init else "scratch", {})[str(seed)] = r
    report(result)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1).replace(f"{ROOT}/", "")  # no machine paths in results
    a.out.with_suffix(".json").write_text(text)
    plot(result, a.out.with_suffix(".png"))
    print(f"saved {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}")


def report(result: dict) -> None:
    d = result["dataset"]
    print(f"\ndataset: {d['transitions']} transitions, {d['episodes']} episodes, behaviour "
          f"success {d['behaviour_success_rate']:.2f}, return {d['behaviour_return']:.2f}")
    print(f"{'method':<12} {'per seed (final eval success)':<34} {'mean':>6} {'median':>7} "
          f"{'mean return':>12}")
    for key in ("mopo", "nopenalty"):
        done = [r for r in result[key].values() if r["final"] is not None]
        vals = [r["final"] for r in done]
        shown = ", ".join(f"{v:.2f}" for v in vals)
        stats = (f"{mean(vals):6.2f} {median(vals):7.2f} "
                 f"{mean(r['final_return'] for r in done):12.2f}") if vals else "-"
        print(f"{key:<12} {shown:<34} {stats}")
    for key in ("finetune", "scratch"):
        if key in result:
            hits = {s: r["steps_to_target"] for s, r in result[key].items()}
            print(f"{key:<12} env steps to {result['target']:.0%}: {hits}")


if __name__ == "__main__":
    main()
