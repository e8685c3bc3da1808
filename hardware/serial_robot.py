"""An arm of serial-bus servos (Feetech STS or Dynamixel X) as a :class:`hardware.robot.Backend`.

Each control tick costs two bus transactions: one ``SYNC_READ`` of present position and
velocity (one contiguous block per servo), one ``SYNC_WRITE`` of goal positions. Commands are
clipped to the calibrated range less ``limit_margin``; the servos' own position-limit
registers hold the calibrated range itself, so a command the host gets wrong still cannot
drive a servo past it. On Dynamixel buses the Bus Watchdog stops the servos when the host
goes quiet for ``watchdog`` seconds (a crashed or stalled loop).

Units: radians, radians per second, seconds; arrays ``[J]`` in ``joint_names`` order.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import IO

import numpy as np

from mbpo_arm.hardware.calibration import Calibration, walk_through
from mbpo_arm.hardware.config import SerialConfig
from mbpo_arm.hardware.dynamixel import DynamixelCodec
from mbpo_arm.hardware.feetech import FeetechCodec
from mbpo_arm.hardware.robot import JointLimits, RobotState, check_command
from mbpo_arm.hardware.serial_bus import STANDARD_BAUDRATES, BusError, NoReplyError, ServoBus

CODECS = {"feetech": FeetechCodec, "dynamixel": DynamixelCodec}


class SerialRobot:
    """The arm on a serial servo bus; see the module docstring.

    The calibration file is read (and checked against the joints) in the constructor, so a
    missing or wrong file fails at start-up; the port is opened by :meth:`connect`.

    Attributes:
        settings: the :class:`SerialConfig`; ``calibration``: its :class:`Calibration`.
        bus: the :class:`hardware.serial_bus.ServoBus` (its ``stats`` count retries).
        joint_names, limits: the :class:`hardware.robot.Backend` contract.
    """

    def __init__(self, config: SerialConfig | None = None) -> None:
        self.settings = cfg = config if config is not None else SerialConfig()
        self.joint_names = cfg.joint_names
        self.calibration = Calibration.load(cfg.calibration)
        if self.calibration.protocol != cfg.protocol:
            raise ValueError(f"calibration {cfg.calibration!r} is for a {self.calibration.protocol}"
                             f" bus, backend.protocol is {cfg.protocol}; calibrate this arm")
        lower, upper = self.calibration.range_radians(self.joint_names)  # all joints there
        cal_ids = [self.calibration.joints[n].id for n in cfg.joint_names]
        if cal_ids != list(cfg.ids):
            raise ValueError(f"calibration {cfg.calibration!r} has servo ids {cal_ids}, "
                             f"backend.ids is {list(cfg.ids)}; calibrate this arm again")
        lower, upper = lower + cfg.limit_margin, upper - cfg.limit_margin
        n = len(self.joint_names)
        self.limits = JointLimits(lower, upper, np.full(n, cfg.velocity_limit),
                                  np.full(n, cfg.effort_limit))
        self.codec = CODECS[cfg.protocol]()
        self.table = self.codec.control_table
        self.bus = ServoBus(self.codec, cfg.port, cfg.baudrate, cfg.timeout, cfg.retries,
                            names=dict(zip(cfg.ids, cfg.joint_names, strict=True)))
        self._ids = list(cfg.ids)
        self._last_io = 0.0
        self.connected = False

    @property
    def home_position(self) -> np.ndarray:
        """``[J]`` rest pose: ``backend.home``, else the middle of each range."""
        home = self.settings.home
        mid = (self.limits.lower + self.limits.upper) / 2
        return self.limits.clip(np.array(home if home is not None else mid, dtype=np.float64))

    # ---------------------------------------------------------------- Backend interface
    def connect(self) -> None:
        """Open the port, check every servo answers, write the limit registers, hold the
        present pose with torque on (and arm the Dynamixel watchdog). Idempotent."""
        if self.connected:
            return
        self.bus.open()
        try:
            check_servos(self.bus, self._ids)
            self._sync_write("torque_enable", [0] * len(self._ids))  # EEPROM needs torque off
            self._write_limits()
            present = self._read_ticks()[0]
            self._sync_write("goal_position", present)
            self._sync_write("torque_enable", [1] * len(self._ids))
            self._arm_watchdog()
        except BaseException:
            self.bus.close()
            raise
        self.connected = True

    def close(self) -> None:
        """Hold the present pose for ``hold_s``, release torque, close the port. Idempotent;
        a bus error on the way is a warning (the port is closed regardless)."""
        if not self.bus.is_open:
            self.connected = False
            return
        try:
            self._sync_write("goal_position", self._read_ticks()[0])
            time.sleep(self.settings.hold_s)
            self._sync_write("torque_enable", [0] * len(self._ids))
        except BusError as err:
            warnings.warn(f"disconnect: {err}", stacklevel=2)
        finally:
            self.bus.close()
            self.connected = False

    def read(self) -> RobotState:
        """Present positions and velocities ``[J]`` in one sync read, stamped with
        ``time.monotonic()``."""
        ticks, speed = self._read_ticks()
        cal = self.calibration
        position = cal.to_radians(ticks, self.joint_names)
        direction = np.array([cal.joints[n].direction for n in self.joint_names])
        velocity = direction * speed * self.codec.velocity_unit
        return RobotState(position=position, velocity=velocity, stamp=time.monotonic())

    def write(self, position: np.ndarray) -> np.ndarray:
        """Goal positions ``[J]`` clipped to the limits and rounded to whole ticks, in one
        sync write; returns the ``[J]`` command actually sent (rad). Non-finite values are
        refused (ValueError)."""
        command = check_command(position, self.joint_names)
        ticks = self.calibration.to_ticks(self.limits.clip(command), self.joint_names)
        if self.codec.watchdog and time.monotonic() - self._last_io > 0.8 * self.settings.watchdog:
            self._arm_watchdog()  # the loop paused: the watchdog may have stopped the servos
        self._sync_write("goal_position", ticks)
        return self.calibration.to_radians(ticks, self.joint_names)

    # ------------------------------------------------------------------------ internals
    def _write_limits(self) -> None:
        """Position mode and the calibrated range into each servo's EEPROM (Operating Mode,
        position-limit registers), written only where they differ (EEPROM wears out)."""
        lo_reg, hi_reg = self.table["min_position_limit"], self.table["max_position_limit"]
        mode = self.table["operating_mode"]
        for name, servo in zip(self.joint_names, self._ids, strict=True):
            joint = self.calibration.joints[name]
            for reg, value in ((mode, self.codec.position_mode), (lo_reg, joint.min),
                               (hi_reg, joint.max)):
                if reg.decode(self.bus.read(servo, reg.address, reg.size)) == value:
                    continue
                if "lock" in self.table:  # Feetech: unlock the EEPROM, write, lock again
                    self.bus.write(servo, self.table["lock"].address, b"\x00")
                self.bus.write(servo, reg.address, reg.encode(value))
                if "lock" in self.table:
                    self.bus.write(servo, self.table["lock"].address, b"\x01")

    def _arm_watchdog(self) -> None:
        """Dynamixel: clear a fired Bus Watchdog (write 0), then set it (e-Manual, Bus
        Watchdog 98: goal writes are refused until it is cleared)."""
        if not self.codec.watchdog or not self.settings.watchdog:
            return
        units = round(self.settings.watchdog / self.codec.watchdog)
        self._sync_write("bus_watchdog", [0] * len(self._ids))
        self._sync_write("goal_position", self._read_ticks()[0])  # hold where it stopped
        self._sync_write("bus_watchdog", [units] * len(self._ids))

    def _read_ticks(self) -> tuple[np.ndarray, np.ndarray]:
        """``([J] present position ticks, [J] present velocity units)``."""
        address, size = self.codec.state_block
        data = self.bus.sync_read(address, size, self._ids)
        self._last_io = time.monotonic()
        pos_reg, vel_reg = self.table["present_position"], self.table["present_velocity"]
        ticks = [pos_reg.decode(data[i][pos_reg.address - address:]) for i in self._ids]
        speed = [vel_reg.decode(data[i][vel_reg.address - address:]) for i in self._ids]
        return np.array(ticks, dtype=np.int64), np.array(speed, dtype=np.float64)

    def _sync_write(self, register: str, values: np.ndarray | list[int]) -> None:
        reg = self.table[register]
        self.bus.sync_write(reg.address, {i: reg.encode(int(v))
                                          for i, v in zip(self._ids, values, strict=True)})
        self._last_io = time.monotonic()


def check_servos(bus: ServoBus, ids: list[int]) -> None:
    """Ping every servo, each with the bus's retries; raise naming the silent ones, or the
    baud rate the bus answers at."""
    silent = [i for i in ids if not bus.ping(i)]
    if not silent:
        return
    if len(silent) == len(ids):
        found = bus.find_baudrate(ids, [b for b in STANDARD_BAUDRATES if b != bus.baudrate])
        if found is not None:
            raise BusError(f"servos on {bus.port} answer at {found} baud, not {bus.baudrate}: "
                           f"set backend.baudrate={found}")
        adapter = (f"; the adapter on {bus.port} echoes what it sends, so it and the port work"
                   if bus.echo else "")
        raise NoReplyError(f"no servo answers on {bus.port} at {bus.baudrate} baud (ids "
                           f"{ids}){adapter}; check the power supply, the cable and "
                           "backend.protocol")
    who = ", ".join(f"{i} ({bus.names.get(i, '?')})" for i in silent)
    raise NoReplyError(f"servo {who} on {bus.port} does not answer ({1 + bus.retries} pings); "
                       "check its cable and id (backend.ids)")


def calibrate_arm(config: SerialConfig, stdin: IO[str], stdout: IO[str]) -> Calibration:
    """``mbpo-arm calibrate``: release torque, walk a person through the calibration
    (:func:`hardware.calibration.walk_through`), write ``config.calibration`` atomically."""
    codec = CODECS[config.protocol]()
    bus = ServoBus(codec, config.port, config.baudrate, config.timeout, config.retries,
                   names=dict(zip(config.ids, config.joint_names, strict=True)))
    ids = list(config.ids)
    reg = codec.control_table["present_position"]
    torque = codec.control_table["torque_enable"]
    bus.open()
    try:
        check_servos(bus, ids)
        bus.sync_write(torque.address, {i: b"\x00" for i in ids})

        def read_ticks() -> np.ndarray:
            data = bus.sync_read(reg.address, reg.size, ids)
            return np.array([reg.decode(data[i]) for i in ids], dtype=np.int64)

        calibration = walk_through(read_ticks, config.joint_names, ids, config.protocol,
                                   stdin, stdout, config.zero_pose)
    finally:
        bus.close()
    calibration.save(config.calibration)
    print(f"calibration written to {Path(config.calibration).expanduser()}", file=stdout,
          flush=True)
    return calibration
