"""Property-based tests of the shield: adversarial proposals (NaN, inf, huge values, sign
flips every tick) against random valid states; no command leaving the shield breaks a
configured limit, except a joint rule the result names as yielded (it could not hold with the
rules above it), and the rate rules during a stop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.robot import RobotState
from mbpo_arm.hardware.rules import braking_speed
from mbpo_arm.hardware.shield import RULES, Shield, ShieldConfig

J = 6
DT = 0.05
TOL = 1e-9

special = st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9, 1e300, -1e300, 0.0])
ordinary = st.floats(-4.0, 4.0, allow_nan=False)
proposal_value = st.one_of(special, ordinary)


@st.composite
def episodes(draw: st.DrawFn) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Ticks of (kind, proposal [J], state noise or uniform draw [J], flip sign)."""
    n = draw(st.integers(5, 40))
    ticks = []
    for _ in range(n):
        kind = draw(st.sampled_from(["random", "flip", "special", "ordinary"]))
        proposal = np.array(draw(st.lists(proposal_value, min_size=J, max_size=J)))
        state = np.array(draw(st.lists(st.floats(-1, 1), min_size=J, max_size=J)))
        ticks.append((kind, proposal, state, draw(st.sampled_from([-1.0, 1.0]))))
    return ticks


def run_episode(shield: Shield, cfg: ShieldConfig, ticks, following: bool) -> None:
    """Drive ``shield`` and check every output against every configured limit."""
    lo_p, hi_p = cfg.lower + cfg.margin, cfg.upper - cfg.margin
    start = np.clip(cfg.home, lo_p, hi_p)
    shield.restart(RobotState(start, np.zeros(J), 0.0), 0.0)
    prev, prev_vel = start.copy(), np.zeros(J)
    for k, (kind, proposal, noise, sign) in enumerate(ticks):
        now = (k + 1) * DT
        if following:  # the arm near its last command, as a servo tracks
            q = np.clip(prev + 0.05 * noise, cfg.lower, cfg.upper)
        else:  # anywhere within the hardware limits
            q = cfg.lower + (noise + 1) / 2 * (cfg.upper - cfg.lower)
        if kind == "flip":
            proposal = sign * (-1) ** k * np.full(J, 1e6)
        result = shield.filter(proposal, RobotState(q, np.zeros(J), now), now)
        c = result.command
        assert set(result.reasons) <= set(RULES)
        assert np.isfinite(c).all()
        assert np.all(c >= lo_p - TOL) and np.all(c <= hi_p + TOL), "position limit broken"
        yielded = set(result.yielded)
        if "step" not in yielded:
            assert np.all(np.abs(c - q) <= cfg.max_step + TOL), "step limit broken"
        vel = (c - prev) / DT
        if not result.stopped and "velocity" not in yielded:
            assert np.all(np.abs(vel) <= cfg.velocity + 1e-6), "velocity limit broken"
            up = braking_speed(hi_p - prev, cfg.acceleration, DT)
            down = braking_speed(prev - lo_p, cfg.acceleration, DT)
            assert np.all(vel <= up + 1e-6) and np.all(-vel <= down + 1e-6)
        if not result.stopped and not yielded & {"velocity", "acceleration"}:
            acc = (vel - prev_vel) / DT
            assert np.all(np.abs(acc) <= cfg.acceleration + 1e-5), "acceleration broken"
        if shield.geometry is not None and not np.array_equal(c, prev):
            assert cfg.workspace.contains(shield.geometry.ee_position(c)), "left the workspace"
            assert not shield.geometry.collides(c), "moved into a collision"
        if following:
            # a tracking arm never forces a joint rule to yield; only a geometric hold
            # (a hard stop of the command stream) may break the acceleration limit
            assert yielded <= {"acceleration", "jerk"}
            assert not yielded or {"workspace", "collision"} & set(result.reasons)
        prev_vel = np.zeros(J) if result.stopped else vel
        prev = c.copy()


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks=episodes(), following=st.booleans())
def test_no_command_breaks_a_limit_with_geometry(so101, geometry, ticks, following) -> None:
    shield = Shield(so101, DT, geometry, collision=True, estop=EStop())
    run_episode(shield, so101, ticks, following)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(ticks=episodes(), following=st.booleans())
def test_no_command_breaks_a_joint_limit_with_jerk(so101, ticks, following) -> None:
    cfg = dataclasses.replace(so101, jerk=np.full(J, 5000.0), workspace=None, model=None)
    shield = Shield(cfg, DT, None, estop=EStop())
    run_episode(shield, cfg, ticks, following)


def test_nonfinite_proposal_holds_the_last_command(so101, geometry) -> None:
    shield = Shield(so101, DT, geometry, estop=EStop())
    home = so101.home
    shield.restart(RobotState(home, np.zeros(J), 0.0), 0.0)
    state = RobotState(home, np.zeros(J), DT)
    for bad in (np.nan, np.inf, -np.inf):
        proposal = home.copy()
        proposal[2] = bad
        result = shield.filter(proposal, state, DT)
        np.testing.assert_array_equal(result.command, home)
        assert result.reasons == ("nonfinite",)
    assert shield.counts["nonfinite"] == 3


def test_a_command_into_the_table_stops_short_of_it(so101, geometry) -> None:
    shield = Shield(so101, DT, geometry, estop=EStop())
    q = so101.home.copy()
    shield.restart(RobotState(q, np.zeros(J), 0.0), 0.0)
    down = q.copy()
    down[1] += 1.7  # shoulder forward and down: the gripper would go through the table
    for k in range(1, 40):
        result = shield.filter(down, RobotState(q, np.zeros(J), k * DT), k * DT)
        q = result.command  # a perfect servo
        assert not geometry.collides(q)
        assert geometry.ee_position(q)[2] >= so101.workspace.min_height
    assert {"workspace", "collision"} & set(result.reasons)
    assert q[1] < down[1] - 0.1  # it stopped on the way


def test_interval_rules_count_each_intervention(so101) -> None:
    cfg = dataclasses.replace(so101, workspace=None, model=None)
    dt = 0.02  # at 50 Hz a step from rest is bound by the acceleration (a dt^2 < v dt)
    shield = Shield(cfg, dt, None, estop=EStop())
    q = cfg.home
    shield.restart(RobotState(q, np.zeros(J), 0.0), 0.0)
    far = q + 3.0
    result = shield.filter(far, RobotState(q, np.zeros(J), dt), dt)
    assert result.reasons == ("position", "step", "velocity", "acceleration")
    np.testing.assert_allclose(np.abs(result.command - q), cfg.acceleration * dt * dt)
    assert shield.counts["position"] == 1 and shield.counts["acceleration"] == 1


def test_a_stream_restarted_inside_the_clearance_can_leave_it(so101, geometry) -> None:
    # A reset restarts the command stream at the measured pose; one inside the clearance
    # (here 4 cm of shoulder past its boundary) held the arm for good at 100 Hz: from rest
    # one tick reaches acceleration * dt^2 = 0.01 rad, and every command that near was unsafe.
    dt, zero = 0.01, np.zeros(J)
    shield = Shield(so101, dt, geometry, estop=EStop())
    inside = so101.home.copy()
    inside[1] += 0.30
    assert geometry.collides(inside)
    shield.restart(RobotState(inside, zero, 0.0), 0.0)
    deeper = inside.copy()
    deeper[1] += 0.2
    result = shield.filter(deeper, RobotState(inside, zero, dt), dt)
    np.testing.assert_array_equal(result.command, inside)  # never deeper in
    assert "collision" in result.reasons
    q, depth, first = inside, geometry.penetration(inside), None
    for k in range(2, 80):  # towards home
        result = shield.filter(so101.home, RobotState(q, zero, k * dt), k * dt)
        q = result.command
        first = q.copy() if first is None else first
        assert geometry.penetration(q) <= depth + 1e-9  # no deeper, ever
        depth = geometry.penetration(q)
    assert geometry.collides(first)  # the first step out was still inside: a safe-only
    assert not geometry.collides(q)  # rule refused it; the arm is out now
    assert q[1] < inside[1] - 0.1
