"""Shared pieces of the shield tests: the shipped arm's limits file and its real geometry."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbpo_arm.hardware.config import WatchdogSettings
from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.loop import ControlLoop
from mbpo_arm.hardware.shield import Shield
from mbpo_arm.hardware.shield_config import ShieldConfig
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.geometry import MujocoGeometry
from mbpo_arm.sim.twin import TwinRobot

LIMITS = Path(__file__).resolve().parents[2] / "configs" / "limits" / "so101.yaml"


@pytest.fixture(scope="session")
def so101() -> ShieldConfig:
    return ShieldConfig.load(LIMITS)


@pytest.fixture(scope="session")
def geometry(so101: ShieldConfig) -> MujocoGeometry:
    return MujocoGeometry.from_limits(so101)


def shielded_twin(config: ShieldConfig, geometry: MujocoGeometry, control_hz: float = 20.0,
                  place_resets: bool = True, **watchdog) -> ControlLoop:
    """The real twin's control loop, a shield with its own e-stop inside it, on the twin's
    simulated clock (connected)."""
    twin = TwinRobot(TwinConfig(), control_hz=control_hz)
    shield = Shield(config, twin.control_period, geometry, True, WatchdogSettings(**watchdog),
                    EStop())
    loop = ControlLoop(twin, shield, control_hz, place_resets=place_resets)
    loop.connect()
    return loop


def fast_limits(directory: Path, home_speed: float = 5.0) -> str:
    """A copy of the shipped limits file whose reset moves run at ``home_speed`` (rad/s), for
    tests that reset often; returns its path (a ``shield.limits_file=`` value)."""
    text = LIMITS.read_text()
    lines = [f"home_speed: {home_speed}" if line.startswith("home_speed:") else line
             for line in text.splitlines()]
    path = Path(directory) / "so101-fast-resets.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
