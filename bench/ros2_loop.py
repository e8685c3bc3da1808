"""The ROS 2 control loop over real DDS: the node against the twin driver in another process.

    python bench/ros2_loop.py [--hz 50 100] [--seconds 10] [--runs 3]
        [--transport cyclonedds rclpy] [--out bench/results/ros2_loop]

For each transport, rate and run: starts ``python -m mbpo_arm.sim.ros2_twin_driver`` in a
fresh DDS domain over that transport, runs :class:`hardware.ros2.Ros2Robot` (the same
transport) here on its control loop (:class:`hardware.loop.ControlLoop`, the shield inside, as
``mbpo-arm train --backend ros2`` builds it) at that rate for ``--seconds`` (a 0.5 Hz sine on
every joint around the home pose), and a third participant timestamps each ``JointState`` as
it lands (a DDS listener, on the middleware's thread). Prints a table of medians over the
runs: tick lateness (p50 / p99 / max, ms), missed deadlines, JointState delivery latency (arrival
minus header stamp, one clock; p50 / p99 / max, ms), commands the driver took per command sent
(below 1 where two land between its ticks: keep-last-1 keeps the newer, by design), joint
states rejected, and the RMS tracking error (rad); saves ``<out>.json`` and ``<out>.png``
(histograms of the first run).

``cyclonedds`` is the plain-DDS path; ``rclpy`` is real ROS 2 (Kilted, Fast DDS 3): where
``import rclpy`` fails here, its runs execute in the cached venv the tests build
(``tests/hardware/ros2_venvs.py``, ``.cache/ros2-venvs``), one subprocess per run.
Run it on an otherwise idle machine: timings on a loaded one measure the load.
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

from mbpo_arm.envs.factory import make_loop
from mbpo_arm.hardware.ros2 import messages as m
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.hardware.ros2.node import Ros2Robot
from mbpo_arm.hardware.ros2.transport import SENSOR_DATA, CycloneTransport, rclpy_available

ROOT = Path(__file__).resolve().parents[1]


def run_once(hz: float, seconds: float, domain: int, transport: str = "cyclonedds") -> dict:
    """One run; returns its figures and the raw lateness and latency samples (ms)."""
    if transport == "rclpy" and not rclpy_available():
        return run_in_ros2_venv(hz, seconds, domain)
    stats_file = Path(tempfile.mkdtemp()) / "driver.json"
    backend = [f"backend.domain_id={domain}", f"runtime.control_hz={hz}",
               f"backend.transport={transport}"]
    driver = subprocess.Popen([sys.executable, "-m", "mbpo_arm.sim.ros2_twin_driver", "--stats",
                               str(stats_file), *backend], cwd=ROOT,
                              stdout=subprocess.DEVNULL)
    latency: list[float] = []
    probe = CycloneTransport(domain)
    probe.listen("/joint_states", m.JointState, SENSOR_DATA, lambda js: latency.append(
        (time.time() - js.header.stamp.sec - js.header.stamp.nanosec * 1e-9) * 1e3))
    loop = make_loop("ros2", Ros2Config(domain_id=domain, transport=transport), control_hz=hz)
    robot = loop.backend
    assert isinstance(robot, Ros2Robot)
    try:
        loop.connect()
        home = robot.home_position
        loop.reset(home)
        loop.pace.lateness.clear()  # measure the steady loop only
        skipped0, ticks0, latency[:] = loop.pace.skipped, loop.ticks, []
        errors = []
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < seconds:
            before = loop.state.position
            errors.append(before - loop.tick(home + 0.2 * np.sin(2 * np.pi * 0.5 * t)).sent)
        stats = robot.stats()
        lateness = np.array(loop.pace.lateness) * 1e3
        stats |= {"ticks": loop.ticks - ticks0, "missed_deadlines": loop.pace.skipped - skipped0}
        loop.close()
    finally:
        probe.close()
        driver.send_signal(2)
        driver.wait(timeout=20)
    drv = json.loads(stats_file.read_text())
    lat = np.array(latency)
    return {"hz": hz, "transport": transport, "ticks": stats["ticks"],
            "missed_deadlines": stats["missed_deadlines"],
            "lateness_ms": {q: float(np.percentile(lateness, p)) for q, p in
                            (("p50", 50), ("p99", 99))} | {"max": float(lateness.max())},
            "latency_ms": {q: float(np.percentile(lat, p)) for q, p in
                           (("p50", 50), ("p99", 99))} | {"max": float(lat.max())},
            "delivered": drv["commands_received"] / stats["commands_sent"],
            "rejected": stats["joint_states_rejected"],
            "tracking_rms": float(np.sqrt(np.mean(np.square(errors)))),
            "_lateness": lateness.tolist(), "_latency": lat.tolist()}


def run_in_ros2_venv(hz: float, seconds: float, domain: int) -> dict:
    """:func:`run_once` over rclpy in the cached ROS 2 Kilted venv (built on first use)."""
    sys.path.insert(0, str(ROOT))
    from tests.hardware.ros2_venvs import ros2_python

    python, why = ros2_python("kilted")
    if python is None:
        raise SystemExit(f"--transport rclpy: {why}")
    out = subprocess.run([str(python), __file__, "--worker", f"{hz},{seconds},{domain}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"the rclpy run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(runs: list[dict], key: str, sub: str | None = None) -> float:
    return float(np.median([r[key][sub] if sub else r[key] for r in runs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hz", type=float, nargs="+", default=[50.0, 100.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transport", nargs="+", default=["cyclonedds", "rclpy"],
                        choices=["cyclonedds", "rclpy"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ros2_loop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # "hz,seconds,domain": one rclpy run
    args = parser.parse_args()
    if args.worker:
        hz, seconds, domain = args.worker.split(",")
        print(json.dumps(run_once(float(hz), float(seconds), int(domain), "rclpy")))
        return
    results = {}
    for j, transport in enumerate(args.transport):
        for k, hz in enumerate(args.hz):
            runs = [run_once(hz, args.seconds, 1 + (os.getpid() + 50 * j + 10 * k + i) % 200,
                             transport) for i in range(args.runs)]
            results[f"{transport} {hz:g}"] = runs
    header = ("transport Hz", "late p50", "late p99", "late max", "missed", "lat p50", "lat p99",
              "lat max", "taken", "rejected", "track rms")
    print(f"medians over {args.runs} runs of {args.seconds:g} s (ms unless noted)")
    print(" | ".join(f"{h:>15}" if i == 0 else f"{h:>9}" for i, h in enumerate(header)))
    summary = {}
    for hz, runs in results.items():
        row = {"late_p50": median(runs, "lateness_ms", "p50"),
               "late_p99": median(runs, "lateness_ms", "p99"),
               "late_max": median(runs, "lateness_ms", "max"),
               "missed": median(runs, "missed_deadlines"),
               "lat_p50": median(runs, "latency_ms", "p50"),
               "lat_p99": median(runs, "latency_ms", "p99"),
               "lat_max": median(runs, "latency_ms", "max"),
               "delivered": median(runs, "delivered"), "rejected": median(runs, "rejected"),
               "track_rms_rad": median(runs, "tracking_rms")}
        summary[hz] = row
        print(" | ".join([f"{hz:>15}"] + [f"{v:>9.3f}" for v in row.values()]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plain = {hz: [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
             for hz, runs in results.items()}
    args.out.with_suffix(".json").write_text(json.dumps(
        {"seconds": args.seconds, "runs": args.runs, "transports": args.transport,
         "summary": summary, "per_run": plain},
        indent=1))
    plot(results, args.out.with_suffix(".png"))
    print(f"saved {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for hz, runs in results.items():
        axes[0].hist(runs[0]["_lateness"], bins=60, histtype="step", label=f"{hz} Hz")
        axes[1].hist(runs[0]["_latency"], bins=60, histtype="step", label=f"{hz} Hz")
    axes[0].set(xlabel="tick lateness (ms)", ylabel="ticks", yscale="log")
    axes[1].set(xlabel="JointState delivery latency (ms)", ylabel="messages", yscale="log")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
