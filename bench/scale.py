"""``runtime=ray`` at scale: N twin actors feeding one learner on a local multi-node Ray
cluster, against ``runtime=async`` in the same command; and (``--reach-to-90``) async MBPO
on reach with the learner as a Ray actor, env steps to 90% success against ``runtime=async``.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python bench/scale.py [--twins 1 2 4]
        [--repeats 3] [--window 15] [key=value ...]
    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python bench/scale.py --reach-to-90 [--seed 0]
        [--reach-steps 10000]

Throughput: one ``ray.cluster_utils.Cluster`` on this machine (a head node for the robot's
``mbpo-arm train runtime=ray`` process, a node for the learner, a node for the twins; the
learner and the twins reserve no CPUs, they are placed by custom resources). Every repeat runs
each N of ``--twins`` once, in turn, and one ``runtime=async`` run with the same agent (SAC,
small, UTD 20 so the learner never idles) and the same robot (50 Hz on the twin). Once the
learner has updated and every twin has shipped, a window of ``--window`` s measures: env
transitions/s into the learner (the host's merged count), learner updates/s, the CPU seconds
(``/proc/<pid>/stat``) per transition of each twin actor (its pid from the host), per update of
the learner process and per merged transition of the learner's host (its intake); after
the run, the weight latency (host publish to load, p50/p99) of the twins and of the robot
(``runtime_stats.json``). The robot then stops as on Ctrl-C. Medians over ``--repeats``.

Projection (not measured): transitions/s at N = 16 and 64 twins, one core each, = N / (twin
CPU-s per transition), capped by the intake (one core for the host: 1 / host CPU-s per merged
transition); the learner's updates/s stay what one learner process does, so UTD falls as 1/N.

Prints tables; writes bench/results/scale.json and scale.png (``--reach-to-90``:
scale_reach.json and scale_reach.png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.runtime.replay_log import HEADER, record_dtype

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMESPACE = "mbpo-arm-bench"
HZ = 50
RECORD = record_dtype(19, 5).itemsize  # ArmReach-v0
AGENT = ["agent=sac", "agent.sac.learning_starts=200", "agent.sac.batch_size=64",
         "agent.sac.hidden=[64,64]", "agent.sac.utd=20"]
COMMON = ["--backend", "mujoco", "task=reach", "logger.wandb=disabled", "logger.progress=false",
          "trainer.eval_every=100000000", "trainer.checkpoint_every=100000000",
          "runtime.checkpoint_every_s=30", "runtime.log_every_s=1"]
PROJECT = (16, 64)
CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def train(mode: str, run_dir: Path, *args: str) -> subprocess.Popen:
    """``mbpo-arm train runtime=<mode>`` in a subprocess (its output in ``<run_dir>.log``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-m", "mbpo_arm.launch.cli", "train", *COMMON, f"runtime={mode}",
           f"run_dir={run_dir}", *args]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    out = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def ray_args(address: str, name: str, twins: int) -> list[str]:
    return [f"runtime.ray.address={address}", f"runtime.ray.learner_name={name}",
            f"runtime.ray.namespace={NAMESPACE}", f"runtime.ray.twins={twins}",
            "runtime.ray.learner_num_cpus=0", "runtime.ray.learner_resources={learner_node: 1}",
            "runtime.ray.twin_num_cpus=0", "runtime.ray.twin_resources={twin_node: 1}"]


def start_cluster() -> Any:
    """Head (the robot's process), a learner node, a twin node; this process connected."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"learner_node": 1})
    cluster.add_node(num_cpus=1, resources={"twin_node": 64})
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    return cluster


def until(what: str, predicate: Any, proc: subprocess.Popen, timeout: float = 180.0) -> Any:
    end = time.monotonic() + timeout
    while not (got := predicate()):
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended waiting for {what} (rc {proc.returncode})")
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.25)
    return got


def stop(proc: subprocess.Popen, run_dir: Path) -> dict[str, Any]:
    """Ctrl-C: the orderly stop; the run's ``runtime_stats.json``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    path = run_dir / "runtime_stats.json"
    return json.loads(path.read_text()) if path.exists() else {}


def poll(host: Any) -> dict[str, Any] | None:
    import ray

    try:
        return ray.get(host.poll.remote(), timeout=5.0)
    except (ray.exceptions.RayError, TimeoutError):
        return None


def ray_run(address: str, twins: int, run_dir: Path, window: float, tag: str,
            extra: list[str]) -> dict[str, Any]:
    """One ``runtime=ray`` run with ``twins`` twin actors; the window's figures."""
    import ray

    name = f"scale-{tag}"
    proc = train("ray", run_dir, *ray_args(address, name, twins), *AGENT,
                 "trainer.total_steps=100000000", f"runtime.control_hz={HZ}", *extra)
    try:
        until("the learner host", lambda: name in [a["name"] for a in
                                                   ray.util.list_named_actors(True)], proc)
        host = ray.get_actor(name, namespace=NAMESPACE)
        sources = [f"twin{i}" for i in range(twins)]

        def ready() -> dict[str, Any] | None:
            s = poll(host)
            ok = s and s["updates"] > 0 and all(s["sources"].get(t, 0) > 0 for t in sources)
            return s if ok else None

        until("the first update and every twin's data", ready, proc)
        time.sleep(2.0)
        pids = ray.get(host.pids.remote(), timeout=10)
        s0 = until("the host", lambda: poll(host), proc)
        twin_pids = {t: s0["source_pids"][t] for t in sources}
        c0 = {k: cpu_s(p) for k, p in {**twin_pids, **pids}.items()}
        t0 = time.monotonic()
        time.sleep(window)
        s1 = until("the host", lambda: poll(host), proc)
        dt = time.monotonic() - t0
        c1 = {k: cpu_s(p) for k, p in {**twin_pids, **pids}.items()}
        if s1["learner_starts"] != s0["learner_starts"] or s1["source_pids"] != s0["source_pids"]:
            raise RuntimeError("a learner or twin restarted in the window")
    finally:
        stats = stop(proc, run_dir)
    merged, updates = s1["merged"] - s0["merged"], s1["updates"] - s0["updates"]
    per_twin = [(c1[t] - c0[t]) / max(s1["sources"][t] - s0["sources"][t], 1) for t in sources]
    twin_rate = sum(s1["sources"][t] - s0["sources"][t] for t in sources) / dt
    figures = stats.get("ray", {})
    twin_ages = [t["weight_age_s"] for t in figures.get("twins", []) if "weight_age_s" in t]
    robot_age = figures.get("weight_age_s", {})
    return {"twins": twins, "window_s": dt, "transitions_per_s": merged / dt,
            "twin_transitions_per_s": twin_rate, "updates_per_s": updates / dt,
            "utd": updates / max(merged, 1),
            "twin_cpu_s_per_transition": statistics.median(per_twin),
            "twin_cpu_s_per_transition_each": per_twin,
            "learner_cpu_s_per_update": (c1["learner"] - c0["learner"]) / max(updates, 1),
            "host_cpu_s_per_transition": (c1["host"] - c0["host"]) / max(merged, 1),
            "twin_weight_latency_p50_s": _med([a["p50"] for a in twin_ages]),
            "twin_weight_latency_p99_s": _med([a["p99"] for a in twin_ages]),
            "robot_weight_latency_p50_s": robot_age.get("p50"),
            "robot_weight_latency_p99_s": robot_age.get("p99"),
            "clean_stop": stats.get("clean_stop")}


def _med(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def log_records(run_dir: Path) -> int:
    path = run_dir / "replay.log"
    return max(path.stat().st_size - HEADER.size, 0) // RECORD if path.exists() else 0


def learner_events(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in read_metrics(run_dir) if e.get("updates_per_s") is not None]


def async_run(run_dir: Path, window: float, extra: list[str]) -> dict[str, Any]:
    """The baseline: one ``runtime=async`` run, the same agent and robot, the same window."""
    proc = train("async", run_dir, *AGENT, "trainer.total_steps=100000000",
                 f"runtime.control_hz={HZ}", *extra)
    try:
        until("the first update", lambda: any(e["updates"] > 0 for e in learner_events(run_dir)),
              proc)
        time.sleep(2.0)
        kids = children(proc.pid)  # the learner (the busiest), spawn's resource tracker
        c0 = {k: cpu_s(k) for k in kids}
        n0, e0, t0 = log_records(run_dir), len(learner_events(run_dir)), time.monotonic()
        time.sleep(window)
        n1, dt = log_records(run_dir), time.monotonic() - t0
        learner_cpu = max(cpu_s(k) - c0[k] for k in kids)
        events = learner_events(run_dir)[e0:]
    finally:
        stats = stop(proc, run_dir)
    age = stats.get("weight_latency") or {}
    return {"window_s": dt, "transitions_per_s": (n1 - n0) / dt,
            "updates_per_s": _med([e["updates_per_s"] for e in events]),
            "utd": _med([e.get("achieved_utd_window") for e in events]),
            "learner_cpu_s_per_update": learner_cpu / max(
                sum(e["updates_per_s"] for e in events) * dt / max(len(events), 1), 1),
            "weight_p50_s": age.get("p50"), "weight_p99_s": age.get("p99"),
            "clean_stop": stats.get("clean_stop")}


KEYS = ("transitions_per_s", "twin_transitions_per_s", "updates_per_s", "utd",
        "learner_cpu_s_per_update", "twin_cpu_s_per_transition", "host_cpu_s_per_transition",
        "twin_weight_latency_p50_s", "twin_weight_latency_p99_s",
        "robot_weight_latency_p50_s", "robot_weight_latency_p99_s", "weight_p50_s",
        "weight_p99_s")


def throughput(args: argparse.Namespace) -> None:
    import ray

    args.runs.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="scale-", dir=args.runs))
    raw: dict[str, list[dict[str, Any]]] = {str(n): [] for n in args.twins} | {"async": []}
    cluster = start_cluster()
    try:
        for r in range(args.repeats):
            for n in args.twins:
                got = ray_run(cluster.address, n, runs / f"ray-n{n}-r{r}", args.window,
                              f"n{n}-r{r}", args.overrides)
                raw[str(n)].append(got)
                print(f"  repeat {r} N={n}: {got['transitions_per_s']:.0f} transitions/s, "
                      f"{got['updates_per_s']:.0f} updates/s", flush=True)
            got = async_run(runs / f"async-r{r}", args.window, args.overrides)
            raw["async"].append(got)
            print(f"  repeat {r} async: {got['transitions_per_s']:.0f} transitions/s, "
                  f"{got['updates_per_s']:.0f} updates/s", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    med = {k: {key: _med([x.get(key) for x in v]) for key in KEYS} for k, v in raw.items()}
    base = med["async"]
    ratio = {str(n): {"transitions_per_s": med[str(n)]["transitions_per_s"]
                      / base["transitions_per_s"],
                      "updates_per_s": med[str(n)]["updates_per_s"] / base["updates_per_s"]}
             for n in args.twins}
    ray_runs = [x for n in args.twins for x in raw[str(n)]]
    twin_cpu = _med([x["twin_cpu_s_per_transition"] for x in ray_runs])
    host_cpu = _med([x["host_cpu_s_per_transition"] for x in ray_runs])
    upd = base["learner_cpu_s_per_update"]  # async: the learner ingests ~50/s, it updates
    ingest = _med([(x["learner_cpu_s_per_update"] - upd) * x["utd"] for x in ray_runs])
    caps = {"twins": 0.0, "host intake": 1.0 / host_cpu, "learner ingest": 1.0 / ingest}
    projection = {}
    for n in PROJECT:
        caps["twins"] = n / twin_cpu
        bound = min(caps, key=caps.__getitem__)
        rate = caps[bound]
        ups = max(0.0, (1.0 - ingest * rate) / upd)
        projection[str(n)] = {"transitions_per_s": rate, "bound": bound, "updates_per_s": ups,
                              "utd": ups / rate, **{f"{k} cap": v for k, v in caps.items()}}
    print(f"\n{'N twins':>8} {'trans/s':>9} {'twins/s':>9} {'upd/s':>7} {'UTD':>6} "
          f"{'CPU ms/tr/twin':>15} {'CPU ms/upd':>11} {'host CPU us/tr':>15} "
          f"{'w-lat p50/p99 ms (twins)':>25} {'(robot)':>12} {'x async tr/s':>13} {'x upd/s':>8}")
    for n in args.twins:
        m, q = med[str(n)], ratio[str(n)]
        print(f"{n:>8} {m['transitions_per_s']:>9.0f} {m['twin_transitions_per_s']:>9.0f} "
              f"{m['updates_per_s']:>7.0f} {m['utd']:>6.3f} "
              f"{1e3 * m['twin_cpu_s_per_transition']:>15.3f} "
              f"{1e3 * m['learner_cpu_s_per_update']:>11.2f} "
              f"{1e6 * m['host_cpu_s_per_transition']:>15.1f} "
              f"{_ms(m['twin_weight_latency_p50_s'])}/{_ms(m['twin_weight_latency_p99_s']):<12}"
              f"{_ms(m['robot_weight_latency_p50_s'])}/{_ms(m['robot_weight_latency_p99_s']):<7}"
              f"{q['transitions_per_s']:>12.1f}x {q['updates_per_s']:>7.2f}x")
    print(f"{'async':>8} {base['transitions_per_s']:>9.0f} {'-':>9} {base['updates_per_s']:>7.0f} "
          f"{base['utd'] or float('nan'):>6.3f} {'-':>15} {1e3 * upd:>11.2f} {'-':>15} "
          f"{'(actor) ' + _ms(base['weight_p50_s']) + '/' + _ms(base['weight_p99_s']):>25}"
          f"   (the baseline: same agent, robot at {HZ} Hz)")
    print("\nPROJECTION (not measured): one core per twin, one for the host, one for the learner")
    for n, p in projection.items():
        caps_s = ", ".join(f"{k} {v:.0f}" for k, v in p.items() if k.endswith(" cap"))
        print(f"  N={n:>3}: {p['transitions_per_s']:>8.0f} transitions/s ({p['bound']}-bound; "
              f"{caps_s}), {p['updates_per_s']:.0f} updates/s, UTD {p['utd']:.4f}")
    print(f"  from: twin {1e3 * twin_cpu:.3f} CPU-ms/transition, host {1e6 * host_cpu:.1f} "
          f"CPU-us/transition, learner {1e6 * ingest:.0f} CPU-us/transition ingested and "
          f"{1e3 * upd:.2f} CPU-ms/update (async run)")
    RESULTS.mkdir(exist_ok=True)
    meta = _meta(args) | {"window_s": args.window, "hz": HZ, "agent": AGENT}
    out = {**meta, "median": med, "ratio_vs_async": ratio, "projection": {
        "note": "PROJECTION, not measured: one core per twin, one for the host, one for the "
                "learner: transitions/s = min(N / twin CPU-s per transition, 1 / host CPU-s "
                "per merged transition, 1 / learner CPU-s per ingested transition); updates/s "
                "= (1 - ingest CPU-s/s) / learner CPU-s per update (the async run's)",
        "twin_cpu_s_per_transition": twin_cpu, "host_cpu_s_per_transition": host_cpu,
        "learner_cpu_s_per_update": upd, "learner_cpu_s_per_ingested_transition": ingest,
        "by_twins": projection}, "runs": raw}
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=1))
    plot(med, projection, args.twins, RESULTS / "scale.png")
    print(f"\nwrote {RESULTS / 'scale.json'} and {RESULTS / 'scale.png'}")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1e3 * v:.0f}"


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    return {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "ray": ray.__version__,
            "repeats": args.repeats, "overrides": args.overrides,
            "load_average_1min": os.getloadavg()[0]}


def plot(med: dict[str, Any], projection: dict[str, Any], twins: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["async", *(f"N={n}" for n in twins)]
    rows = [med["async"], *(med[str(n)] for n in twins)]
    a.bar(names, [r["transitions_per_s"] for r in rows], color="tab:blue", label="measured")
    pn = [f"N={n}\n(proj.)" for n in projection]
    a.bar(pn, [p["transitions_per_s"] for p in projection.values()], color="none",
          edgecolor="tab:blue", hatch="//", label="projection")
    a.set_yscale("log")
    a.set_ylabel("env transitions/s into the learner")
    a.legend(fontsize=8)
    b.bar(names, [r["updates_per_s"] for r in rows], color="tab:orange")
    b.set_ylabel("learner updates/s")
    fig.suptitle("runtime=ray: twins feeding one learner (2-core machine; hatched: projection)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def steps_to(run_dir: Path, target: float) -> tuple[int | None, list[tuple[int, float]]]:
    curve = [(int(e["env_steps"]), float(e["eval_success_rate"])) for e in read_metrics(run_dir)
             if e.get("eval_success_rate") is not None]
    return next((s for s, v in curve if v >= target), None), curve


def reach_to_90(args: argparse.Namespace) -> None:
    """Async MBPO on reach, the learner a Ray actor on its node, the robot's actor outside
    it, against ``runtime=async``; the same seed and settings, one after the other."""
    import ray

    runs = Path(tempfile.mkdtemp(prefix="scale-reach-", dir=args.runs))
    agent = ["agent=mbpo_reach", f"seed={args.seed}", f"trainer.total_steps={args.reach_steps}",
             f"trainer.eval_every={args.eval_every}", f"trainer.stop_at={args.target}",
             "agent.sac.hidden=[128,128]", "trainer.checkpoint_every=100000000",
             *args.overrides]
    result: dict[str, Any] = {}
    cluster = start_cluster()
    try:
        for mode in ("async", "ray"):
            extra = ray_args(cluster.address, f"reach-{mode}", 0) if mode == "ray" else []
            run_dir = runs / mode
            t0 = time.monotonic()
            proc = train(mode if mode == "async" else "ray", run_dir, *agent, *extra)
            proc.wait()
            stats = json.loads((run_dir / "runtime_stats.json").read_text()) \
                if (run_dir / "runtime_stats.json").exists() else {}
            reached, curve = steps_to(run_dir, args.target)
            events = learner_events(run_dir)
            result[mode] = {"steps_to_target": reached, "curve": curve, "rc": proc.returncode,
                            "wall_s": time.monotonic() - t0,
                            "achieved_utd": events[-1]["achieved_utd"] if events else None,
                            "updates": events[-1]["updates"] if events else None,
                            "log_records": stats.get("log_records"), "run_dir": str(run_dir)}
            print(f"  {mode}: {reached} env steps to {args.target} (rc {proc.returncode}, "
                  f"{result[mode]['wall_s']:.0f} s)", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    a, r = result["async"]["steps_to_target"], result["ray"]["steps_to_target"]
    print(f"\n{'runtime':>8} {'env steps to ' + str(args.target):>20} {'UTD':>6} {'updates':>8}")
    for mode, row in result.items():
        print(f"{mode:>8} {str(row['steps_to_target']):>20} "
              f"{row['achieved_utd'] or float('nan'):>6.2f} {str(row['updates']):>8}")
    ratio = r / a if a and r else None
    print(f"ray / async env steps: {ratio}")
    out = {**_meta(args), "seed": args.seed, "target": args.target, "ray_over_async": ratio,
           "eval_every": args.eval_every, "total_steps": args.reach_steps, "runs": result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale_reach.json").write_text(json.dumps(out, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for mode, row in result.items():
        ax.plot(*zip(*row["curve"], strict=True), marker="o", label=f"runtime={mode}")
    ax.axhline(args.target, color="gray", ls="--", lw=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale_reach.png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--twins", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window", type=float, default=15.0, help="measured seconds per run")
    p.add_argument("--reach-to-90", action="store_true", help="the env-steps-to-90%% check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--reach-steps", type=int, default=10_000)
    p.add_argument("--runs", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("overrides", nargs="*", help="key=value passed to every run")
    args = p.parse_args()
    reach_to_90(args) if args.reach_to_90 else throughput(args)


if __name__ == "__main__":
    main()
