"""Shared pieces of the shield tests: the shipped arm's limits file and its real geometry."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbpo_arm.hardware.config import WatchdogSettings
from mbpo_arm.hardware.estop import EStop
from mbpo_arm.hardware.shield import Shield, ShieldedRobot
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


def shielded_twin(config: ShieldConfig, geometry: MujocoGeometry, **watchdog) -> ShieldedRobot:
    """The real twin behind a shield with its own e-stop, on the twin's simulated clock."""
    twin = TwinRobot(TwinConfig())
    shield = Shield(config, twin.control_period, geometry, True, WatchdogSettings(**watchdog),
                    EStop())
    robot = ShieldedRobot(twin, shield, clock=twin.clock)
    robot.connect()
    return robot
