"""Learning-curve benchmark: train agents for several seeds with the same command a user runs,
then report env steps to a target and the curves in one PNG.

    python bench/learning_curve.py --agents sac --task reach --seeds 0 1 2 --steps 50000
    python bench/learning_curve.py --agents sac mbpo --metric eval_success_rate --target 0.9

Prints a table, saves ``<out>.json`` and ``<out>.png``. Runs ``--jobs`` seeds at once, each
on one CPU thread. Existing complete runs under ``--runs`` are reused (``--fresh`` redoes them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

from mbpo_arm.agent.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def run_one(agent: str, task: str, seed: int, steps: int, run_dir: Path, extra: list[str],
            fresh: bool) -> Path:
    """Train one seed with ``mbpo-arm train`` unless a finished run is already there."""
    done = [e for e in read_metrics(run_dir) if e.get("eval_return") is not None]
    stopped = any("stopped_at_target" in e for e in read_metrics(run_dir))
    if not fresh and done and (done[-1]["env_steps"] >= steps or stopped):
        return run_dir
    if fresh and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "mbpo_arm.launch.cli", "train", "--backend", "mujoco",
           f"task={task}",
           f"agent={agent}", f"trainer.total_steps={steps}", f"seed={seed}",
           f"run_dir={run_dir}", "logger.wandb=disabled", "logger.progress=false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return run_dir


def steps_to(events: list[dict], metric: str, target: float) -> int | None:
    """First evaluated env step where ``metric`` reached ``target``; ``None`` if never."""
    for e in events:
        if e.get(metric) is not None and e[metric] >= target:
            return int(e["env_steps"])
    return None


def summarize(curves: dict[str, dict[int, list[dict]]], metric: str, target: float) -> dict:
    table = {}
    for agent, seeds in curves.items():
        reached = {s: steps_to(ev, metric, target) for s, ev in seeds.items()}
        finals = [ev[-1][metric] for ev in seeds.values() if ev]
        hit = [v for v in reached.values() if v is not None]
        # A seed that never reached the target counts as infinitely slow in the median.
        ordered = sorted(v if v is not None else float("inf") for v in reached.values())
        med = median(ordered) if ordered else None
        table[agent] = {"steps_to_target": reached, "median_steps_to_target":
                        None if med is None or med == float("inf") else med,
                        "seeds_reaching": len(hit), "final": finals,
                        "median_final": median(finals) if finals else None}
    return table


def plot(curves: dict[str, dict[int, list[dict]]], metric: str, target: float,
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (agent, seeds) in enumerate(curves.items()):
        for j, events in enumerate(seeds.values()):
            ax.plot([e["env_steps"] for e in events], [e[metric] for e in events],
                    color=f"C{i}", alpha=0.8, label=agent if j == 0 else None)
    ax.axhline(target, color="gray", ls="--", lw=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", nargs="+", default=["sac"])
    p.add_argument("--task", default="reach")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, nargs="+", default=[50_000],
                   help="env steps per agent (one value, or one per agent)")
    p.add_argument("--metric", default="eval_success_rate")
    p.add_argument("--target", type=float, default=0.8)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=Path, default=ROOT / "bench" / "results" / "runs")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "learning_curve")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="summarize the runs already under --runs (finished or not), train none")
    p.add_argument("overrides", nargs="*", help="key=value passed to every run")
    a = p.parse_args()
    per_agent = a.steps * len(a.agents) if len(a.steps) == 1 else a.steps
    steps = dict(zip(a.agents, per_agent, strict=True))
    jobs = [(ag, s) for ag in a.agents for s in a.seeds]
    dirs = [a.runs / f"{a.task}-{ag}-s{s}" for ag, s in jobs]
    if not a.report_only:
        with ThreadPoolExecutor(a.jobs) as pool:
            dirs = list(pool.map(lambda j: run_one(j[0][0], a.task, j[0][1], steps[j[0][0]],
                                                   j[1], a.overrides, a.fresh),
                                 zip(jobs, dirs, strict=True)))
    curves: dict[str, dict[int, list[dict]]] = {ag: {} for ag in a.agents}
    for (ag, s), d in zip(jobs, dirs, strict=True):
        curves[ag][s] = [e for e in read_metrics(d) if e.get(a.metric) is not None]
    table = summarize(curves, a.metric, a.target)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, a.metric, a.target, a.out.with_suffix(".png"))
    result = {"task": a.task, "metric": a.metric, "target": a.target, "seeds": a.seeds,
              "steps": steps, "overrides": a.overrides, "agents": table,
              "last_step": {ag: {s: ev[-1]["env_steps"] if ev else None for s, ev in c.items()}
                            for ag, c in curves.items()}}
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(f"{'agent':8s} {'median steps to ' + str(a.target):>24s} {'per seed':>30s} "
          f"{'median final':>13s}")
    for ag, row in table.items():
        print(f"{ag:8s} {str(row['median_steps_to_target']):>24s} "
              f"{str(list(row['steps_to_target'].values())):>30s} {row['median_final']:>13.3f}")
    print(f"\nwrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
