"""Tick timing of ``runtime=async`` on the twin while the learner saturates its core.

    python bench/runtime_jitter.py [--hz 50] [--seconds 600] [--agent sac] [--utd 20]
        [--pacing robot|actor] [--out bench/results/runtime_jitter] [key=value ...]

Runs ``mbpo-arm train runtime=async`` on ``ArmReach-v0`` at ``--hz`` for ``--seconds`` with SAC
at UTD ``--utd`` (or ``--agent mbpo_reach``), so the learner always has work. Prints a table:
tick period and absolute jitter (p50 / p99 / max), missed deadlines, weight latency (publish to
use, actor side), policy version lag, achieved UTD, transitions/s, queue depth, and the log /
actor / learner counts; saves ``<out>-<hz>hz.json`` and a PNG of the period and jitter histograms.

The baseline, in the same command: a probe process that does nothing but keep the same
schedule (the actor's :class:`~agent.runtime.actor.Schedule`, same priority, no work) runs
alongside for the whole run, and the CPUs' steal time (``/proc/stat``: time a hypervisor ran
something else while this machine's virtual CPU was due) is read before and after. One stall
watcher per CPU (pinned, one FIFO level above the actor, waking every millisecond, as
``cyclictest`` does) records every wake-up more than 0.5 ms late: time in which that CPU ran
nothing of this machine's. Each missed deadline of the actor (and of the probe) is checked
against them: a miss that a CPU stall covers is the platform's; one that none covers is the
runtime's. Run it on an otherwise idle machine: timings on a loaded one measure the load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.io import load_npz
from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.priority import FIFO_PRIORITY
from mbpo_arm.configs.loader import load_run_config

ROOT = Path(__file__).resolve().parents[1]


def run_once(args: argparse.Namespace, run_dir: Path) -> dict:
    """One async run in a subprocess; returns its ``runtime_stats.json`` plus UTD figures."""
    overrides = ["train", "--backend", "mujoco", "runtime=async", "task=reach",
                 f"agent={args.agent}",
                 "logger.wandb=disabled", "logger.progress=false", f"run_dir={run_dir}",
                 f"trainer.total_steps={int(args.hz * args.seconds)}",
                 f"agent.sac.utd={args.utd}", f"runtime.control_hz={args.hz}",
                 f"runtime.pacing={args.pacing}", f"runtime.priority={args.priority}",
                 *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", *overrides], cwd=ROOT,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    stats = json.loads((run_dir / "runtime_stats.json").read_text())
    learner = [e for e in read_metrics(run_dir) if e.get("achieved_utd") is not None]
    stats["achieved_utd"] = learner[-1]["achieved_utd"] if learner else None
    stats["updates_per_s"] = float(np.median([e["updates_per_s"] for e in learner])) \
        if learner else None
    return stats


def probe(hz: float, stop: Any, priority: str, out: str) -> None:
    """The baseline: keep the actor's schedule at the actor's priority doing no work until
    ``stop.value`` is set; write the lateness figures to ``out`` (JSON)."""
    from mbpo_arm.agent.runtime.actor import Schedule, percentiles
    from mbpo_arm.agent.runtime.priority import raise_priority

    cfg = RuntimeConfig()
    applied, _ = raise_priority(priority)
    schedule = Schedule(1.0 / hz, cfg.spin_s, cfg.miss_tolerance)
    while True:
        schedule.wait()
        if stop.value:  # the run is over: what delayed this tick is not the run's
            break
        schedule.mark(time.perf_counter())
    Path(out).write_text(json.dumps({
        "scheduling": applied, "ticks": len(schedule.lateness),
        "missed_deadlines": schedule.missed, "skipped_ticks": schedule.skipped,
        "abs_jitter": percentiles(np.abs(schedule.lateness)),
        "missed_late": schedule.missed_lateness(),
        "missed_at": schedule.missed_at, "missed_cpu": schedule.missed_cpu}))


def stall_watch(cpu: int, stop: Any, out: str, period: float = 0.001,
                min_gap: float = 0.0005) -> None:
    """Watch one CPU for stalls until ``stop.value`` is set: pinned to ``cpu`` one FIFO level
    above the actor, wake every ``period`` s and record each wake-up later than ``min_gap`` as a
    stall ``(due, woke)`` (``perf_counter`` s) in ``out`` (JSON). A stall here is time the
    CPU ran nothing of this machine's at top priority: the hypervisor ran another guest
    (steal) or the kernel was busy. Costs ~1 % of the CPU (a few us per wake-up)."""
    os.sched_setaffinity(0, [cpu])
    with contextlib.suppress(PermissionError, OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY + 1))
    stalls, due = [], time.perf_counter() + period
    while not stop.value:
        time.sleep(max(due - time.perf_counter(), 0.0))
        woke = time.perf_counter()
        if woke - due > min_gap:
            stalls.append((due, woke))
        due = max(due + period, woke)  # no burst after a stall
    Path(out).write_text(json.dumps({"cpu": cpu, "stalls": stalls}))


def explained_misses(lateness: np.ndarray, missed_at: np.ndarray, missed_cpu: np.ndarray,
                     stalls: dict[int, np.ndarray], tolerance: float,
                     watch_period: float = 0.001) -> dict[str, int]:
    """How many missed ticks a CPU stall explains: the missed tick's lateness ``[M]``, the
    time it came ``[M]`` and its CPU ``[M]``; ``stalls[cpu]`` ``[S, 2]`` (due, woke) of
    :func:`stall_watch`. A miss is explained when stalls overlap the interval from its due
    time to its tick by at least the lateness beyond ``tolerance`` (a stall may have begun up
    to ``watch_period`` before the watcher was due). Counts: on the CPU the tick ran on, and
    on any CPU (a helper thread holding the GIL may have been the one stalled)."""
    def overlap(cpu: int, start: float, end: float) -> float:
        s = stalls.get(cpu, np.zeros((0, 2)))
        return float(np.clip(np.minimum(s[:, 1], end) - np.maximum(s[:, 0] - watch_period, start),
                             0, None).sum())

    own = anywhere = 0
    for late, t, cpu in zip(lateness, missed_at, missed_cpu, strict=True):
        need = late - tolerance
        own += int(overlap(int(cpu), t - late, t) >= need)
        anywhere += int(max((overlap(c, t - late, t) for c in stalls), default=0.0) >= need)
    return {"missed": len(missed_at), "stall_on_its_cpu": own, "stall_on_any_cpu": anywhere}


def steal_s() -> float | None:
    """Seconds of steal time over all CPUs so far (``/proc/stat``); ``None`` off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else None


def run_tolerance(run_dir: Path) -> float:
    """The run's missed-deadline tolerance (s), from the config it saved."""
    cfg = load_run_config([f"resume={run_dir}"])[0].runtime
    return cfg.miss_tolerance * cfg.period


def attribute(stats: dict, ticks: dict[str, np.ndarray], run_dir: Path, cpus: list[int],
              tolerance: float) -> dict[str, Any]:
    """The CPU stalls the watchers saw and how many of the actor's and the probe's missed
    deadlines they explain (:func:`explained_misses`)."""
    stalls = {}
    for c in cpus:
        path = run_dir / f"stalls{c}.json"
        if path.exists():
            stalls[c] = np.asarray(json.loads(path.read_text())["stalls"]).reshape(-1, 2)
    if not stalls:
        return {}
    out: dict[str, Any] = {"cpu_stalls": {
        str(c): {"count": len(s), "longest_s": float((s[:, 1] - s[:, 0]).max(initial=0.0)),
                 "total_s": float((s[:, 1] - s[:, 0]).sum())} for c, s in stalls.items()}}
    out["actor_misses"] = explained_misses(ticks["missed_late"], ticks["missed_at"],
                                           ticks["missed_cpu"], stalls, tolerance)
    base = stats.get("probe")
    if base:
        out["probe_misses"] = explained_misses(
            np.asarray(base["missed_late"]), np.asarray(base["missed_at"]),
            np.asarray(base["missed_cpu"]), stalls, tolerance)
    return out


def table(stats: dict, hz: float) -> str:
    ms = lambda v: "-" if v is None else f"{1e3 * v:8.3f}"  # noqa: E731
    rows = [f"runtime=async at {hz:g} Hz (period {1e3 / hz:.1f} ms), {stats['ticks']} ticks",
            f"{'':24s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}"]
    for key in ("period", "abs_jitter", "weight_latency"):
        p = stats[key]
        rows.append(f"{key:24s}{ms(p['p50'])} {ms(p['p99'])} {ms(p['max'])}")
    lag, depth = ({k: "-" if v is None else f"{v:.0f}" for k, v in stats[key].items()}
                  for key in ("version_lag", "queue_depth"))
    rows += [f"{'missed deadlines':24s}{stats['missed_deadlines']}{_explained(stats)}",
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
    for cpu, st in stats.get("cpu_stalls", {}).items():
        rows.append(f"{'CPU ' + cpu + ' stalls':24s}{st['count']} over 0.5 ms, longest "
                    f"{1e3 * st['longest_s']:.1f} ms, {st['total_s']:.2f} s in all")
    if stats.get("probe_misses"):
        m = stats["probe_misses"]
        rows.append(f"{'probe misses explained':24s}{m['stall_on_its_cpu']} of {m['missed']} by "
                    f"a stall of its CPU, {m['stall_on_any_cpu']} of some CPU")
    if stats.get("steal_s") is not None:
        rows.append(f"{'CPU steal time':24s}{stats['steal_s']:.2f} s over all CPUs "
                    f"(a hypervisor running something else)")
    return "\n".join(rows)


def _explained(stats: dict) -> str:
    m = stats.get("actor_misses")
    if m is None:
        return ""
    return (f" ({m['stall_on_its_cpu']} during a stall of the actor's CPU, "
            f"{m['stall_on_any_cpu']} of some CPU)")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot(ticks: dict[str, np.ndarray], hz: float, tolerance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].hist(1e3 * ticks["period"], bins=100)
    axes[0].axvline(1e3 / hz, color="k", ls="--", lw=1)
    axes[0].set(xlabel="tick period (ms)", ylabel="ticks", yscale="log")
    axes[1].hist(1e3 * np.abs(ticks["lateness"]), bins=100)
    axes[1].axvline(1e3 * tolerance, color="r", ls="--", lw=1,
                    label="missed beyond")
    axes[1].set(xlabel="|lateness vs schedule| (ms)", yscale="log")
    axes[1].legend()
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
    stop = ctx.RawValue("b", 0)  # no lock: a helper must not wait on the main process to stop
    cpus = sorted(os.sched_getaffinity(0))
    helpers = [ctx.Process(target=probe, args=(args.hz, stop, args.priority, str(probe_out)),
                           daemon=True)]
    helpers += [ctx.Process(target=stall_watch, args=(c, stop, str(run_dir / f"stalls{c}.json")),
                            daemon=True) for c in cpus]
    for h in helpers:
        h.start()
    try:
        stats = run_once(args, run_dir)
    finally:
        stop.value = 1
        for h in helpers:
            h.join(timeout=60)
    stats["probe"] = json.loads(probe_out.read_text()) if probe_out.exists() else None
    stats["steal_s"] = None if stolen is None else steal_s() - stolen
    ticks = load_npz(run_dir / "runtime_ticks.npz")
    tolerance = run_tolerance(run_dir)
    stats.update(attribute(stats, ticks, run_dir, cpus, tolerance))
    print(table(stats, args.hz))
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = Path(f"{stem}.json"), Path(f"{stem}.png")
    shown = {k: (str(v.relative_to(ROOT) if v.is_relative_to(ROOT) else v)
                 if isinstance(v, Path) else v) for k, v in vars(args).items()}  # no machine paths
    json_path.write_text(json.dumps({"args": shown, **stats}, indent=1))
    plot(ticks, args.hz, tolerance, png_path)
    print(f"saved {json_path} and {png_path}")


if __name__ == "__main__":
    main()
