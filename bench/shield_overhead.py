"""Time per tick of the shield: ``Shield.filter`` with and without the collision check.

Proposals are what a policy sends: the last command plus a random step of up to ``--step``
rad per joint (most pass unchanged; some hit a rate limit), from states that track the
command. Each configuration is timed in ``--repeats`` runs of ``--ticks`` ticks; the table
gives the median over runs of the median time per tick, and the 99th percentile.

    .venv/bin/python bench/shield_overhead.py --ticks 20000 --repeats 5

Prints a table; writes bench/results/shield_overhead.json and shield_overhead.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from mbpo_arm.hardware.config import LIMITS_DIR
from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.robot import RobotState
from mbpo_arm.hardware.shield import Shield
from mbpo_arm.hardware.shield_config import ShieldConfig
from mbpo_arm.sim.geometry import MujocoGeometry

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS_MS = {"joint rules only": 0.1, "joint rules + workspace": None,
              "joint rules + workspace + collision": 0.5}


def make(name: str, cfg: ShieldConfig, geometry: MujocoGeometry) -> Shield:
    if name == "joint rules only":
        return Shield(cfg, 0.05, None, collision=False, estop=EStop())
    return Shield(cfg, 0.05, geometry, collision="collision" in name, estop=EStop())


def time_ticks(shield: Shield, cfg: ShieldConfig, ticks: int, step: float,
               rng: np.random.Generator) -> np.ndarray:
    """Seconds per ``filter`` call ``[ticks]``."""
    q = cfg.home.copy()
    shield.restart(RobotState(q, np.zeros(len(q)), 0.0), 0.0)
    out = np.empty(ticks)
    last = q
    noise = rng.uniform(-step, step, (ticks, len(q)))
    for k in range(ticks):
        now = (k + 1) * 0.05
        state = RobotState(last + 0.005 * noise[k], np.zeros(len(q)), now)
        proposal = last + noise[k]
        t0 = time.perf_counter()
        result = shield.filter(proposal, state, now)
        out[k] = time.perf_counter() - t0
        last = result.command
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step", type=float, default=0.1, help="largest proposed step (rad)")
    args = parser.parse_args()
    cfg = ShieldConfig.load(LIMITS_DIR / "so101.yaml")
    geometry = MujocoGeometry.from_limits(cfg)
    rng = np.random.default_rng(0)
    results = {}
    for name in TARGETS_MS:
        runs = [time_ticks(make(name, cfg, geometry), cfg, args.ticks, args.step, rng)
                for _ in range(args.repeats)]
        results[name] = {"median_ms": float(np.median([np.median(r) for r in runs]) * 1e3),
                         "p99_ms": float(np.median([np.percentile(r, 99) for r in runs]) * 1e3),
                         "target_ms": TARGETS_MS[name], "ticks": args.ticks,
                         "repeats": args.repeats}
    print(f"{'configuration':<38} {'median ms':>10} {'p99 ms':>8} {'target ms':>10}")
    for name, r in results.items():
        target = f"{r['target_ms']:.1f}" if r["target_ms"] is not None else "-"
        print(f"{name:<38} {r['median_ms']:>10.4f} {r['p99_ms']:>8.4f} {target:>10}")
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "python":
            platform.python_version(), "step_rad": args.step, "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0]}
    (RESULTS / "shield_overhead.json").write_text(json.dumps({**meta, "results": results},
                                                             indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(results)
    ax.barh(names, [results[n]["median_ms"] for n in names], color="tab:blue", label="median")
    ax.barh(names, [results[n]["p99_ms"] - results[n]["median_ms"] for n in names],
            left=[results[n]["median_ms"] for n in names], color="tab:orange", alpha=0.5,
            label="to p99")
    for i, n in enumerate(names):
        if results[n]["target_ms"] is not None:
            ax.plot([results[n]["target_ms"]] * 2, [i - 0.4, i + 0.4], "k--")
    ax.set_xlabel("ms per tick (dashed: target)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "shield_overhead.png", dpi=100)


if __name__ == "__main__":
    main()
