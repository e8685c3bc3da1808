"""The rate the serial bus really sees: `mbpo-arm train --backend serial runtime=async` at
``runtime.control_hz`` against the servo emulator, goal writes counted on the emulator's side.

    python bench/serial_rate.py [--hz 50] [--seconds 30] [--runs 3]
        [--out bench/results/serial_rate]

For each run: starts the servo emulator (``sim/servo_emulator.py``, real bytes on a pty) here,
``mbpo-arm train --backend serial robot=so101 port=<pty> runtime=async
runtime.control_hz=<hz>`` in a child process, waits until goal writes arrive steadily, then
counts them for ``--seconds`` (sampled every 50 ms; the emulator counts a goal per servo, so
the bus's rate is that count over the number of servos). Prints the rate over the window and the
slowest and fastest one-second rates, as medians over the runs, and the ratio to ``--hz``
(the goal: 1 +- 2%); saves ``<out>.json`` and ``<out>.png`` (goal writes per second over the
first run's window).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mbpo_arm.sim.servo_emulator import ServoEmulator

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_S = 3.0  # of steady goal writes before the window opens (after connect and a reset)


def run_once(hz: float, seconds: float, directory: Path) -> dict:
    """One run; returns the window's rate and its one-second rates."""
    with ServoEmulator("feetech") as emulator:
        calibration = directory / "feetech.json"
        emulator.calibration().save(calibration)
        command = [sys.executable, "-m", "mbpo_arm.launch.cli", "train", "--backend", "serial",
                   "robot=so101", f"port={emulator.port}", f"backend.calibration={calibration}",
                   "runtime=async", f"runtime.control_hz={hz}", "logger.wandb=disabled",
                   f"run_dir={directory / 'run'}", "trainer.total_steps=100000",
                   "backend.hold_s=0.05"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            start = time.monotonic()
            while emulator.goal_writes == 0:
                if child.poll() is not None or time.monotonic() - start > 120:
                    raise RuntimeError(f"the run wrote no goal: {child.stderr.read()[-2000:]}")
                time.sleep(0.05)
            time.sleep(WARM_UP_S)
            samples = []  # (time, goal writes so far)
            end = time.monotonic() + seconds
            while (now := time.monotonic()) < end:
                samples.append((now, emulator.goal_writes))
                time.sleep(0.05)
            samples.append((time.monotonic(), emulator.goal_writes))
        finally:
            child.send_signal(2)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
    t, n = np.array(samples).T
    n = n / len(emulator.ids)  # one sync write sets every servo's goal
    edges = np.arange(t[0], t[-1], 1.0)
    per_second = np.diff(np.interp(edges, t, n))
    return {"rate_hz": float((n[-1] - n[0]) / (t[-1] - t[0])),
            "slowest_second_hz": float(per_second.min()),
            "fastest_second_hz": float(per_second.max()), "per_second": per_second.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serial_rate")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_once(args.hz, args.seconds, Path(tmp)))
    keys = ("rate_hz", "slowest_second_hz", "fastest_second_hz")
    summary = {k: float(np.median([r[k] for r in runs])) for k in keys}
    summary["ratio"] = summary["rate_hz"] / args.hz
    print(f"goal writes on the emulated bus, runtime.control_hz={args.hz:g}, median of "
          f"{args.runs} runs of {args.seconds:g} s")
    print("".join(f"{k:>20s}" for k in (*keys, "ratio")))
    print("".join(f"{summary[k]:20.3f}" for k in (*keys, "ratio")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
         "runs": runs}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(runs[0]["per_second"], marker=".", label="goal writes per second")
    ax.axhline(args.hz, color="k", lw=0.8, label=f"runtime.control_hz={args.hz:g}")
    ax.axhspan(0.98 * args.hz, 1.02 * args.hz, color="g", alpha=0.15, label="+-2%")
    ax.set(xlabel="second of the window", ylabel="Hz", title="serial bus: goal writes (run 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"saved {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
