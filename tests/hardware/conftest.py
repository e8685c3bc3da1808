"""Shared pieces of the shield tests: the shipped arm's limits file and its real geometry."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.estop import EStop
from hardware.shield import Shield, ShieldedRobot
from hardware.shield_config import ShieldConfig, WatchdogSettings
from sim.geometry import MujocoGeometry
from sim.twin import TwinConfig, TwinRobot

LIMITS = Path(__file__).resolve().parents[2] / "configs" / "limits" / "so101.yaml"


@pytest.fixture(scope="session")
def so101() -> ShieldConfig:
    return ShieldConfig.load(LIMITS)


@pytest.fixture(scope="session")
def geometry(so101: ShieldConfig) -> MujocoGeometry:
    return MujocoGeometry.from_limits(so101)


def shielded_twin(config: ShieldConfig, geometry: MujocoGeometry, **watchdog) -> ShieldedRobot:
    """The real twin behind a shield with its own e-stop, on the twin's simulated clock."""
    twin = TwinRobot(TwinConfig())
    shield = Shield(config, twin.control_period, geometry, True, WatchdogSettings(**watchdog),
                    EStop())
    robot = ShieldedRobot(twin, shield, clock=twin.clock)
    robot.connect()
    return robot
