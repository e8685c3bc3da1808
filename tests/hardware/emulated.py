"""An emulated arm on a pseudo-terminal for the tests: the servo emulator (real bytes, the
MuJoCo twin behind the registers) and the overrides that point the serial backend at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mbpo_arm.hardware.config import SerialConfig
from mbpo_arm.hardware.serial_robot import SerialRobot
from mbpo_arm.sim.servo_emulator import ServoEmulator


@contextmanager
def emulated_arm(tmp_path: Path, protocol: str = "feetech",
                 **emulator_args: object) -> Iterator[tuple[ServoEmulator, list[str]]]:
    """The running emulator and ``backend.*`` overrides for it (port, its exact calibration)."""
    with ServoEmulator(protocol, **emulator_args) as emulator:
        calibration = tmp_path / f"{protocol}-calibration.json"
        emulator.calibration().save(calibration)
        yield emulator, [f"backend.port={emulator.port}", f"backend.protocol={protocol}",
                         f"backend.calibration={calibration}", "backend.hold_s=0.05"]


def robot_on(emulator: ServoEmulator, tmp_path: Path, **config: object) -> SerialRobot:
    """A :class:`SerialRobot` on ``emulator`` with its exact calibration (not connected)."""
    calibration = tmp_path / f"{emulator.protocol}-robot.json"
    emulator.calibration().save(calibration)
    settings = {"hold_s": 0.05, **config}
    return SerialRobot(SerialConfig(port=emulator.port, protocol=emulator.protocol,
                                    calibration=str(calibration), **settings))
