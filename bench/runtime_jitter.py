"""Tick timing of ``runtime=async`` on the twin while the learner saturates its core.

    python bench/runtime_jitter.py [--hz 50] [--seconds 600] [--agent sac] [--utd 20]
        [--pacing robot|actor] [--out bench/results/runtime_jitter] [key=value ...]

Runs ``python -m mbpo_launch.runtime`` (the same composition ``mbpo-arm train runtime=async``
uses) on ``ArmReach-v0`` at ``--hz`` for ``--seconds`` with SAC at UTD ``--utd`` (or
``--agent mbpo_reach``), so the learner always has work. Prints a table: tick period and
absolute jitter (p50 / p99 / max), missed deadlines, weight latency (publish to use, actor
side), policy version lag, achieved UTD, transitions/s, queue depth, and the log / actor /
learner counts; saves ``<out>-<hz>hz.json`` and a PNG of the period and jitter histograms.

The baseline, in the same command: a probe process that does nothing but keep the same
schedule (the actor's :class:`~agent.runtime.actor.Schedule`, same priority, no work) runs
alongside for the whole run, and the CPUs' steal time (``/proc/stat``: time a hypervisor ran
something else while this machine's virtual CPU was due) is read before and after. A tick the
probe misses too is the platform's, not the runtime's. Run it on an otherwise idle machine:
timings on a loaded one measure the load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.io import load_npz  # noqa: E402
from agent.logger import read_metrics  # noqa: E402


def run_once(args: argparse.Namespace, run_dir: Path) -> dict:
    """One async run in a subprocess; returns its ``runtime_stats.json`` plus UTD figures."""
    overrides = ["--backend", "mujoco", "task=reach", f"agent={args.agent}",
                 "logger.wandb=disabled", "logger.progress=false", f"run_dir={run_dir}",
                 f"trainer.total_steps={int(args.hz * args.seconds)}",
                 f"agent.sac.utd={args.utd}", f"runtime.control_hz={args.hz}",
                 f"runtime.pacing={args.pacing}", f"runtime.priority={args.priority}",
                 *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    subprocess.run([sys.executable, "-m", "mbpo_launch.runtime", *overrides], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    stats = json.loads((run_dir / "runtime_stats.json").read_text())
    learner = [e for e in read_metrics(run_dir) if e.get("achieved_utd") is not None]
    stats["achieved_utd"] = learner[-1]["achieved_utd"] if learner else None
    stats["updates_per_s"] = float(np.median([e["updates_per_s"] for e in learner])) \
        if learner else None
    return stats


def probe(hz: float, stop: Any, priority: str, out: str) -> None:
    """The baseline: keep the actor's schedule at the actor's priority doing no work until
    ``stop`` (an event) is set; write the lateness figures to ``out`` (JSON)."""
    from agent.runtime.actor import Schedule, percentiles
    from agent.runtime.config import RuntimeConfig
    from agent.runtime.priority import raise_priority

    cfg = RuntimeConfig()
    applied, _ = raise_priority(priority)
    schedule = Schedule(1.0 / hz, cfg.spin_s, cfg.miss_tolerance)
    while not stop.is_set():
        schedule.wait()
        schedule.mark(time.perf_counter())
    Path(out).write_text(json.dumps({
        "scheduling": applied, "ticks": len(schedule.lateness),
        "missed_deadlines": schedule.missed, "skipped_ticks": schedule.skipped,
        "abs_jitter": percentiles(np.abs(schedule.lateness))}))


def steal_s() -> float | None:
    """Seconds of steal time over all CPUs so far (``/proc/stat``); ``None`` off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else None


def table(stats: dict, hz: float) -> str:
    ms = lambda v: "-" if v is None else f"{1e3 * v:8.3f}"  # noqa: E731
    rows = [f"runtime=async at {hz:g} Hz (period {1e3 / hz:.1f} ms), {stats['ticks']} ticks",
            f"{'':24s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}"]
    for key in ("period", "abs_jitter", "weight_latency"):
        p = stats[key]
        rows.append(f"{key:24s}{ms(p['p50'])} {ms(p['p99'])} {ms(p['max'])}")
    lag, depth = ({k: "-" if v is None else f"{v:.0f}" for k, v in stats[key].items()}
                  for key in ("version_lag", "queue_depth"))
    rows += [f"{'missed deadlines':24s}{stats['missed_deadlines']}",
             f"{'skipped ticks':24s}{stats.get('skipped_ticks', '-')}",
             f"{'reset timeouts':24s}{stats.get('reset_timeouts', '-')}",
             f"{'actor scheduling':24s}{stats.get('scheduling', {}).get('priority', '-')}",
             f"{'version lag (updates)':24s}p50 {lag['p50']}  p99 {lag['p99']}  max {lag['max']}",
             f"{'queue depth':24s}p50 {depth['p50']}  p99 {depth['p99']}  max {depth['max']}",
             f"{'achieved UTD':24s}{_num(stats['achieved_utd'])} "
             f"({_num(stats['updates_per_s'])} updates/s)",
             f"{'transitions/s':24s}{stats['transitions_per_s']:.2f}",
             f"{'log/actor/learner':24s}{stats['log_steps']}/{stats['actor_steps']}/"
             f"{stats['learner_steps']}"]
    base = stats.get("probe")
    if base:
        j = base["abs_jitter"]
        rows.append(f"{'baseline probe':24s}abs jitter p50 {ms(j['p50']).strip()} / p99 "
                    f"{ms(j['p99']).strip()} / max {ms(j['max']).strip()} ms, missed "
                    f"{base['missed_deadlines']} of {base['ticks']}, skipped "
                    f"{base['skipped_ticks']} ({base['scheduling']}, no work)")
    if stats.get("steal_s") is not None:
        rows.append(f"{'CPU steal time':24s}{stats['steal_s']:.2f} s over all CPUs "
                    f"(a hypervisor running something else)")
    return "\n".join(rows)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot(ticks: dict[str, np.ndarray], hz: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].hist(1e3 * ticks["period"], bins=100)
    axes[0].axvline(1e3 / hz, color="k", ls="--", lw=1)
    axes[0].set(xlabel="tick period (ms)", ylabel="ticks", yscale="log")
    axes[1].hist(1e3 * np.abs(ticks["lateness"]), bins=100)
    axes[1].set(xlabel="|lateness vs schedule| (ms)", yscale="log")
    fig.suptitle(f"runtime=async, {hz:g} Hz, learner saturating its core")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--agent", default="sac", help="sac or mbpo_reach")
    parser.add_argument("--utd", type=int, default=20, help="agent.sac.utd (learner load)")
    parser.add_argument("--pacing", default="robot", choices=("robot", "actor"))
    parser.add_argument("--priority", default="fifo", help="runtime.priority (also the probe's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/runtime_jitter")
    parser.add_argument("overrides", nargs="*", help="more key=value overrides")
    args = parser.parse_args()
    stem = Path(f"{args.out}-{args.hz:g}hz")
    run_dir = stem.with_name(stem.name + "-run")
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists; remove it or pass another --out")
    run_dir.mkdir(parents=True)
    probe_out = run_dir / "probe.json"
    stolen = steal_s()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    base = ctx.Process(target=probe, args=(args.hz, stop, args.priority, str(probe_out)),
                       daemon=True)
    base.start()
    try:
        stats = run_once(args, run_dir)
    finally:
        stop.set()
        base.join(timeout=60)
    stats["probe"] = json.loads(probe_out.read_text()) if probe_out.exists() else None
    stats["steal_s"] = None if stolen is None else steal_s() - stolen
    print(table(stats, args.hz))
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = Path(f"{stem}.json"), Path(f"{stem}.png")
    shown = {k: str(v.relative_to(ROOT) if isinstance(v, Path) and v.is_relative_to(ROOT)
                     else v) for k, v in vars(args).items()}  # no machine paths in results
    json_path.write_text(json.dumps({"args": shown, **stats}, indent=1))
    plot(load_npz(run_dir / "runtime_ticks.npz"), args.hz, png_path)
    print(f"saved {json_path} and {png_path}")


if __name__ == "__main__":
    main()
