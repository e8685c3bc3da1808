"""Fuzz the shield in the twin: a random policy with adversarial bursts for many control steps.

The policy proposes joint positions: a random walk around the last command, random targets
anywhere in (and beyond) the joint ranges, and bursts of 5-40 ticks of NaN, inf, huge values,
sign flips every tick, dives into the table, a stalled policy (no proposal comes: the control
loop holds the last command) or a latched e-stop (reset at the burst's end). Every proposal
goes through the shield (``configs/limits/so101.yaml``, collision check on) on the control
loop (:class:`hardware.loop.ControlLoop`) into the twin, which steps its physics.
Measured after each step: joint positions beyond the shield's limits (hardware limits minus
the margin) and beyond the hardware limits, joint speeds, contacts between the arm and the
table (moving link against static geometry) and between links.

    .venv/bin/python bench/shield_fuzz.py --steps 100000 --seed 0

Prints a table; writes bench/results/shield_fuzz.json and shield_fuzz.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mujoco
import numpy as np

from mbpo_arm.hardware.config import LIMITS_DIR
from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.loop import ControlLoop
from mbpo_arm.hardware.shield import RULES, Shield
from mbpo_arm.hardware.shield_config import ShieldConfig
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.geometry import MujocoGeometry
from mbpo_arm.sim.twin import TwinRobot

RESULTS = Path(__file__).resolve().parent / "results"
BURSTS = ("nan", "inf", "huge", "flip", "dive", "far", "stall", "estop")
TOLERANCE = 0.03  # rad: measured overshoot allowed beyond the shield's limits (servo dynamics)


def proposal(rng: np.random.Generator, last: np.ndarray, burst: str | None, k: int,
             cfg: ShieldConfig) -> np.ndarray:
    """One proposal ``[J]`` of the random policy (``burst``: the adversarial kind, if any)."""
    j = len(last)
    if burst == "nan":
        p = last.copy()
        p[rng.integers(j)] = np.nan
        return p
    if burst == "inf":
        return np.where(rng.random(j) < 0.5, np.inf, -np.inf)
    if burst == "huge":
        return rng.choice([-1e9, 1e9], j)
    if burst == "flip":
        return (-1) ** k * np.full(j, 3.0)
    if burst == "dive":  # shoulder forward, elbow and wrist down: into the table
        return np.array([rng.uniform(-1.5, 1.5), 1.7, 1.6, 1.6, 0.0, 0.0])
    if burst == "far" or rng.random() < 0.02:
        span = cfg.upper - cfg.lower
        return rng.uniform(cfg.lower - 0.2 * span, cfg.upper + 0.2 * span)
    return last + rng.uniform(-0.3, 0.3, j)


def run(steps: int, seed: int, episode: int) -> dict:
    cfg = ShieldConfig.load(LIMITS_DIR / "so101.yaml")
    twin = TwinRobot(TwinConfig())
    geometry = MujocoGeometry.from_limits(cfg)
    shield = Shield(cfg, twin.control_period, geometry, True, estop=EStop())
    loop = ControlLoop(twin, shield, 1 / twin.control_period, place_resets=True)
    loop.connect()
    rng = np.random.default_rng(seed)
    lo, hi = cfg.lower + cfg.margin, cfg.upper - cfg.margin
    model, data = twin.model, twin.data
    static = model.body_weldid[model.geom_bodyid] == 0
    worst_soft = worst_hard = max_speed = 0.0
    beyond_soft = beyond_hard = table_steps = self_steps = yielded = 0
    last, burst, burst_left = twin.home_position, None, 0
    bursts = dict.fromkeys(BURSTS, 0)
    t0 = time.perf_counter()
    for k in range(steps):
        if k % episode == 0:
            last = loop.reset(twin.home_position).position
        if burst_left == 0 and rng.random() < 0.02:
            burst, burst_left = str(rng.choice(BURSTS)), int(rng.integers(5, 41))
            bursts[burst] += 1
        if burst == "estop" and not shield.estop.latched:
            shield.estop.trigger("fuzz")
        if burst == "stall":
            tick = loop.hold()
        else:
            tick = loop.tick(proposal(rng, last, burst, k, cfg))
            last = tick.sent
            yielded += bool(tick.yielded)
        burst_left = max(burst_left - 1, 0)
        if not burst_left and shield.estop.latched:
            shield.estop.reset()
        burst = burst if burst_left else None
        q = tick.state
        over_soft = max(float(np.max(lo - q.position)), float(np.max(q.position - hi)), 0.0)
        over_hard = max(float(np.max(cfg.lower - q.position)),
                        float(np.max(q.position - cfg.upper)), 0.0)
        worst_soft, worst_hard = max(worst_soft, over_soft), max(worst_hard, over_hard)
        beyond_soft += over_soft > TOLERANCE
        beyond_hard += over_hard > TOLERANCE
        max_speed = max(max_speed, float(np.max(np.abs(q.velocity))))
        table_steps += twin.contacts_with_table() > 0
        geoms = data.contact.geom[:data.ncon]
        self_steps += bool(np.any(~static[geoms[:, 0]] & ~static[geoms[:, 1]])) \
            if data.ncon else False
    seconds = time.perf_counter() - t0
    return {"steps": steps, "seed": seed, "control_hz": 1 / twin.control_period,
            "episode_steps": episode, "tolerance_rad": TOLERANCE,
            "max_beyond_shield_limits_rad": worst_soft, "max_beyond_hardware_limits_rad":
            worst_hard, "steps_beyond_shield_limits": beyond_soft,
            "steps_beyond_hardware_limits": beyond_hard, "max_joint_speed": max_speed,
            "velocity_limit": float(cfg.velocity.max()), "steps_with_table_contact": table_steps,
            "steps_with_self_contact": self_steps, "ticks_with_a_yielded_rule": yielded,
            "interventions": dict(shield.counts), "bursts": bursts, "seconds": seconds,
            "mujoco": mujoco.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episode", type=int, default=500, help="steps between resets")
    args = parser.parse_args()
    r = run(args.steps, args.seed, args.episode)
    rows = [("control steps", r["steps"]), ("bursts", r["bursts"]),
            ("max beyond shield limits (rad)", f"{r['max_beyond_shield_limits_rad']:.4f}"),
            (f"steps beyond shield limits > {TOLERANCE} rad", r["steps_beyond_shield_limits"]),
            ("max beyond hardware limits (rad)", f"{r['max_beyond_hardware_limits_rad']:.4f}"),
            ("max joint speed (rad/s)", f"{r['max_joint_speed']:.2f} (limit "
                                        f"{r['velocity_limit']})"),
            ("steps with arm-table contact", r["steps_with_table_contact"]),
            ("steps with link-link contact", r["steps_with_self_contact"]),
            ("ticks with a yielded rule", r["ticks_with_a_yielded_rule"]),
            *((f"interventions: {k}", v) for k, v in r["interventions"].items()),
            ("wall time (s)", f"{r['seconds']:.1f}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shield_fuzz.json").write_text(json.dumps(r, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(RULES, [r["interventions"][k] for k in RULES], color="tab:blue")
    ax.set_ylabel("interventions")
    ax.set_title(f"shield interventions in {r['steps']} fuzzed twin steps; "
                 f"table contacts {r['steps_with_table_contact']}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(RESULTS / "shield_fuzz.png", dpi=100)


if __name__ == "__main__":
    main()
