"""Serial servo bus over a pseudo-terminal: bus time per control tick, the fastest loop, and
how closely the emulated arm follows the twin, for both protocols.

    python bench/serial_bus.py [--seconds 5] [--hz 100] [--runs 3] [--out bench/results/serial_bus]

For each protocol and run: a :class:`hardware.serial_robot.SerialRobot` on the servo emulator
(``sim/servo_emulator.py``, real bytes on a pty) (1) ticks at ``--hz`` for ``--seconds``
(paced by the control loop's clock, :class:`hardware.loop.Pace`), timing each tick's bus work
(one SYNC_READ of position and velocity, one SYNC_WRITE of goal positions); (2) loops with
no sleep for 2 s (the fastest control rate the bus allows here); (3) plays 1.5 s of the same sine
commands on the bus and on the twin and compares the joint
trajectories. Prints a table of medians over runs, saves ``<out>.json`` and ``<out>.png``.
A pty moves bytes at memory speed: on a real bus add the wire time (a 6-servo tick is about
1 ms at 1 Mbps) and the USB adapter's latency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mbpo_arm.hardware.config import SerialConfig
from mbpo_arm.hardware.loop import Pace
from mbpo_arm.hardware.serial_robot import SerialRobot
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.servo_emulator import ServoEmulator
from mbpo_arm.sim.twin import TwinRobot

ROOT = Path(__file__).resolve().parents[1]


def robot_on(emulator: ServoEmulator, directory: Path) -> SerialRobot:
    calibration = directory / f"{emulator.protocol}.json"
    emulator.calibration().save(calibration)
    return SerialRobot(SerialConfig(port=emulator.port, protocol=emulator.protocol,
                                    calibration=str(calibration), hold_s=0.05))


def tick_times(robot: SerialRobot, hz: float, seconds: float) -> np.ndarray:
    """Bus time (s) of each tick at ``hz``."""
    state, times, pace = robot.read(), [], Pace(1.0 / hz)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        robot.write(state.position)
        state = robot.read()
        times.append(time.perf_counter() - start)
        pace.wait()
    return np.array(times)


def fastest_rate(robot: SerialRobot, seconds: float = 2.0) -> float:
    state, n = robot.read(), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        robot.write(state.position)
        state = robot.read()
        n += 1
    return n / seconds


def twin_error(robot: SerialRobot, hz: float) -> tuple[float, float]:
    """Mean and max |joint position| difference (rad) against the twin, same commands, from
    the pose the arm is in."""
    twin = TwinRobot(TwinConfig(), control_hz=hz)
    start = twin.place(robot.read().position).position
    n, phase = int(1.5 * hz), 2 * np.pi * np.arange(6) / 6
    errors, pace = [], Pace(1.0 / hz)
    for k in range(n):
        command = start + 0.4 * np.sin(phase + 2 * np.pi * k / n) * (np.arange(6) < 5)
        twin.write(robot.write(command))
        pace.wait()
        twin.step()
        errors.append(np.abs(robot.read().position - twin.read().position))
    errors = np.array(errors)
    return float(errors.mean()), float(errors.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--hz", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serial_bus")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    samples: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in ("feetech", "dynamixel"):
            runs = []
            for _ in range(args.runs):
                with ServoEmulator(protocol) as emulator:
                    robot = robot_on(emulator, Path(tmp))
                    robot.connect()
                    times = tick_times(robot, args.hz, args.seconds)
                    rate = fastest_rate(robot)
                    mean_err, max_err = twin_error(robot, args.hz)
                    stats = dict(vars(robot.bus.stats))
                    robot.close()
                    runs.append({"tick_p50_ms": 1e3 * float(np.median(times)),
                                 "tick_p99_ms": 1e3 * float(np.percentile(times, 99)),
                                 "fastest_hz": rate, "twin_mean_rad": mean_err,
                                 "twin_max_rad": max_err, "unsafe": len(emulator.unsafe),
                                 "bus": stats})
                    samples[protocol] = times
            results[protocol] = {"runs": runs, **{k: float(np.median([r[k] for r in runs]))
                                                  for k in runs[0] if k != "bus"}}
    keys = ("tick_p50_ms", "tick_p99_ms", "fastest_hz", "twin_mean_rad", "twin_max_rad",
            "unsafe")
    print(f"medians over {args.runs} runs, ticks at {args.hz:g} Hz for {args.seconds:g} s")
    print(f"{'protocol':10s}" + "".join(f"{k:>15s}" for k in keys))
    for protocol, r in results.items():
        print(f"{protocol:10s}" + "".join(f"{r[k]:15.4g}" for k in keys))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for protocol, times in samples.items():
        ax.hist(1e3 * times, bins=60, alpha=0.6, label=protocol)
    ax.set_xlabel("bus time per tick (ms): sync read + sync write over a pty")
    ax.set_ylabel("ticks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"saved {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
