"""Planning on the learned model (``agent.act.planner``), in one command: env steps to the
target for ``pets``, ``mbpo`` and ``mbpo`` with ``act.planner=cem`` (also with
``act.respect_shield=true`` on the arm), the plan time per action at 20 Hz on one CPU thread
against the actor's budget (50 ms, capped at 40 ms by the 20 Hz tick) with the share of ticks
that would fall back to the policy, and the shield's interventions per 1 000 steps with and
without ``respect_shield``.

    .venv/bin/python bench/planning.py [--tasks reach inverted_pendulum] [--seeds 0 1 2]
        [--steps N] [--agents pets mbpo mbpo+cem mbpo+cem+shield] [--timing-only] [--jobs 2]

Training runs go through ``mbpo-arm train`` (bench/learning_curve.py's runner; finished runs
under ``--runs`` are reused) with ``trainer.stop_at`` at the target, so a run that gets there
ends. Timing builds each agent's planner as the async actor does (its own CPU ensemble, fp32,
one thread; untrained weights, which do not change the cost) and plans from the twin's states
at 20 Hz: first with no budget (the full plan's time), then with the actor's budget
(``agent.act.budget_ms``, at most 80% of the tick: the fallbacks). Prints the tables; writes
``bench/results/planning.json`` and ``planning.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from learning_curve import run_one, steps_to

from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.runtime.actor import PLAN_SHARE
from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.launch.build import build_actor_planner, build_policy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TASKS = {  # task config: the metric and target, the agents' overrides, the step cap
    "reach": {"metric": "eval_success_rate", "target": 0.9, "steps": 8000, "eval_every": 500,
              "agents": {"pets": ["agent=pets_reach"], "mbpo": ["agent=mbpo_reach"],
                         "mbpo+cem": ["agent=mbpo_reach", "agent.act.planner=cem"],
                         "mbpo+cem+shield": ["agent=mbpo_reach", "agent.act.planner=cem",
                                             "agent.act.respect_shield=true"]}},
    "inverted_pendulum": {
        "metric": "eval_return", "target": 1000.0, "steps": 5000, "eval_every": 250,
        "agents": {"pets": ["agent=pets_inverted_pendulum"],
                   "mbpo": ["agent=mbpo_inverted_pendulum"],
                   "mbpo+cem": ["agent=mbpo_inverted_pendulum", "agent.act.planner=cem"]}},
}
HZ = 20


def train(task: str, label: str, seed: int, steps: int, runs: Path, fresh: bool) -> Path:
    """One seed of one agent through ``mbpo-arm train``, stopping at the task's target."""
    spec = TASKS[task]
    agent, *rest = spec["agents"][label]
    extra = [*rest, f"trainer.eval_every={spec['eval_every']}", "trainer.eval_episodes=10",
             f"trainer.stop_at={spec['target']}", f"trainer.stop_metric={spec['metric']}"]
    return run_one(agent.removeprefix("agent="), task, seed, steps,
                   runs / f"{task}-{label}-s{seed}", extra, fresh)


def shield_per_1000(events: list[dict], learning_starts: int) -> float | None:
    """The shield's interventions per 1 000 env steps after ``learning_starts`` (the random
    steps before it are the same with and without ``respect_shield``), from the cumulative
    ``shield_<rule>`` counts of the evaluation events."""
    evals = [e for e in events if "eval_return" in e and e["env_steps"] >= learning_starts]
    if len(evals) < 2:
        return None

    def total(e: dict) -> int:
        return sum(v for k, v in e.items() if k.startswith("shield_"))

    first, last = evals[0], evals[-1]
    return 1000.0 * (total(last) - total(first)) / (last["env_steps"] - first["env_steps"])


def time_plans(task: str, label: str, ticks: int) -> dict[str, float] | None:
    """Plan time per action (ms p50/p99) over ``ticks`` ticks at 20 Hz without a budget, and
    the share of ticks over ``agent.act.budget_ms`` with it; ``None`` for a policy agent."""
    rc, _ = load_run_config(["backend=mujoco", f"task={task}",
                             *TASKS[task]["agents"][label]])
    env, sac = build_policy(rc)
    planner = build_actor_planner(rc, env, sac)
    if planner is None:
        env.close()
        return None
    elites = list(range(rc.agent.model.elites))
    budget_s = min(rc.agent.act.budget_ms / 1e3, PLAN_SHARE / HZ)  # as the actor caps it
    figures: dict[str, float] = {}
    for budget in (None, budget_s):
        planner.times, planner.overruns = [], 0
        obs, _ = env.reset(seed=0)
        planner.reset()
        next_tick = time.perf_counter()
        for _ in range(ticks):
            action = planner.plan(obs, elites, budget_s=budget)
            if action is None:
                action = planner.fallback_action()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
                planner.reset()
            next_tick += 1.0 / HZ
            time.sleep(max(next_tick - time.perf_counter(), 0.0))
        times = np.asarray(planner.times) * 1e3
        if budget is None:
            figures.update(plan_ms_p50=float(np.median(times)),
                           plan_ms_p99=float(np.percentile(times, 99)))
        else:
            figures.update(budget_ms=rc.agent.act.budget_ms,
                           fallback_share=planner.overruns / len(planner.times))
    env.close()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--agents", nargs="+", default=None, help="default: all of each task's")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="cap per run (default: per task)")
    p.add_argument("--ticks", type=int, default=100, help="timed ticks per agent and budget")
    p.add_argument("--timing-only", action="store_true", help="no training runs")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=Path, default=RESULTS / "runs" / "planning")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "planning")
    a = p.parse_args()
    torch.set_num_threads(1)
    result: dict[str, dict] = {}
    for task in a.tasks:
        spec = TASKS[task]
        labels = [x for x in (a.agents or spec["agents"]) if x in spec["agents"]]
        rows: dict[str, dict] = {label: {"timing": time_plans(task, label, a.ticks)}
                                 for label in labels}
        if not a.timing_only:
            from concurrent.futures import ThreadPoolExecutor

            jobs = [(label, s) for label in labels for s in a.seeds]
            with ThreadPoolExecutor(a.jobs) as pool:
                steps = a.steps or spec["steps"]
                dirs = list(pool.map(lambda j, t=task, n=steps: train(t, j[0], j[1], n, a.runs,
                                                                      a.fresh), jobs))
            for (label, seed), run_dir in zip(jobs, dirs, strict=True):
                events = read_metrics(run_dir)
                cfg, _ = load_run_config([f"resume={run_dir}"])
                row = rows[label].setdefault("seeds", {})
                row[seed] = {"steps_to_target": steps_to(events, spec["metric"], spec["target"]),
                             "shield_per_1000": shield_per_1000(
                                 events, cfg.agent.sac.learning_starts),
                             "curve": [(e["env_steps"], e[spec["metric"]]) for e in events
                                       if e.get(spec["metric"]) is not None]}
            for row in rows.values():
                reached = sorted(v["steps_to_target"] or float("inf")
                                 for v in row["seeds"].values())
                med = float(np.median(reached))
                row["median_steps_to_target"] = None if np.isinf(med) else med
        result[task] = {"metric": spec["metric"], "target": spec["target"], "agents": rows}
    report(result, a)


def report(result: dict, a: argparse.Namespace) -> None:
    """The tables, ``<out>.json`` and, with training runs, ``<out>.png`` (the curves)."""
    for task, t in result.items():
        seeds = "no training runs" if a.timing_only else f"seeds {a.seeds}"
        print(f"\n{task}: env steps to {t['metric']} >= {t['target']} ({seeds}); "
              f"plan time per action at {HZ} Hz, 1 thread")
        print(f"{'agent':<17} {'median steps':>12} {'per seed':>22} {'shield/1k':>10} "
              f"{'plan p50 ms':>11} {'p99 ms':>8} {'fallback':>9}")
        for label, row in t["agents"].items():
            timing = row["timing"] or {}
            seeds = row.get("seeds", {})
            shield = [v["shield_per_1000"] for v in seeds.values()
                      if v["shield_per_1000"] is not None]
            print(f"{label:<17} {fmt(row.get('median_steps_to_target')):>12} "
                  f"{str([v['steps_to_target'] for v in seeds.values()]):>22} "
                  f"{fmt(np.median(shield) if shield else None, '.2f'):>10} "
                  f"{fmt(timing.get('plan_ms_p50'), '.1f'):>11} "
                  f"{fmt(timing.get('plan_ms_p99'), '.1f'):>8} "
                  f"{fmt(timing.get('fallback_share'), '.2f'):>9}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(
        {"seeds": a.seeds, "hz": HZ, "threads": 1, "tasks": result}, indent=1))
    plot(result, a.out.with_suffix(".png"))
    print(f"\nwrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}")


def fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result), figsize=(6 * len(result), 4), squeeze=False)
    for ax, (task, t) in zip(axes[0], result.items(), strict=True):
        for i, (label, row) in enumerate(t["agents"].items()):
            timing = row["timing"] or {}
            for j, seed in enumerate(row.get("seeds", {}).values()):
                x, y = zip(*seed["curve"], strict=True) if seed["curve"] else ((), ())
                name = f"{label} (plan {timing['plan_ms_p50']:.0f} ms)" \
                    if timing and j == 0 else (label if j == 0 else None)
                ax.plot(x, y, color=f"C{i}", alpha=0.8, label=name)
        ax.axhline(t["target"], color="gray", ls="--", lw=1)
        ax.set_title(f"{task}: {t['metric']}")
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
