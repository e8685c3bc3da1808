"""A servo bus on a pseudo-terminal, with the MuJoCo twin as the physics behind the registers.

The emulator opens a pty pair (``os.openpty``) and serves, on a background thread, the
control tables of one servo per joint, speaking the Feetech STS or the Dynamixel Protocol 2.0
packets byte for byte; the host opens :attr:`ServoEmulator.port` with pyserial as it would a
real adapter. Physics runs at ``physics_hz`` in wall-clock time: goal position drives the
twin's position actuator, present position and velocity read the twin's joint; torque off
makes the actuator limp. As the firmware does, goal positions are clamped to the position-limit
registers, Dynamixel EEPROM writes are refused with torque on, and the Dynamixel Bus Watchdog
stops a servo whose host went quiet.

Every goal position that reaches a servo is checked against the joint's mechanical range (the
twin's joint range): :attr:`ServoEmulator.unsafe` lists those beyond it. Faults
(:class:`Faults`) drop replies, corrupt their checksum, silence servos, set error bits, or add
latency; a host at another baud rate than the emulator's gets no answer, as on a real bus. With
``echo=True`` the adapter sends every host byte back before the replies, as half-duplex USB
adapters that loop their transmit line onto the receive line do.

    python -m mbpo_arm.sim.servo_emulator --protocol feetech   # prints the port; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import math
import os
import select
import signal
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import mujoco
import numpy as np

from mbpo_arm.hardware.calibration import Calibration, JointCalibration
from mbpo_arm.hardware.dynamixel import ALERT, STATUS, DynamixelCodec, read_packet
from mbpo_arm.hardware.dynamixel import packet as dxl_packet
from mbpo_arm.hardware.feetech import FeetechCodec
from mbpo_arm.hardware.feetech import checksum as sts_checksum
from mbpo_arm.hardware.serial_bus import PING, READ, SYNC_READ, SYNC_WRITE, WRITE, ChecksumError
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import TwinRobot, check_joints, name_ids

CODECS = {"feetech": FeetechCodec, "dynamixel": DynamixelCodec}
MODEL_NUMBER = {"feetech": 777, "dynamixel": 1060}  # STS3215, XL430-W250
BAUD_CODE = {"feetech": 0, "dynamixel": 3}  # 1 Mbps in each vendor's Baud Rate register
ACCESS_ERROR, RANGE_ERROR = 7, 4  # Dynamixel status error numbers
# Mounting of the emulated servos: the tick each reads at the joint's zero, and which way it
# counts, so that a calibration has something to find.
ZERO_OFFSETS = (0, 37, -52, 91, -13, 20)
DIRECTIONS = (1, -1, 1, 1, -1, 1)
_SPEEDS = {v: k for k, v in vars(termios).items() if k.startswith("B") and k[1:].isdigit()}


@dataclass
class Faults:
    """Faults to inject; the test thread may change them while the emulator runs.

    Attributes:
        drop_replies: the next N status packets are not sent (a lost reply).
        corrupt_replies: the next N status packets go out with a wrong checksum/CRC.
        drop_ping_replies: the next N replies to a PING are not sent.
        corrupt_ping_replies: the next N replies to a PING go out with a wrong checksum/CRC.
        silent_ids: servos that dropped off the bus (no reply, writes ignored).
        status_errors: servo id -> error bits set in every status packet it sends (e.g.
            ``0x01``, a Feetech input voltage error).
        latency: seconds added before every reply.
    """

    drop_replies: int = 0
    corrupt_replies: int = 0
    drop_ping_replies: int = 0
    corrupt_ping_replies: int = 0
    silent_ids: set[int] = field(default_factory=set)
    status_errors: dict[int, int] = field(default_factory=dict)
    latency: float = 0.0


class _Incomplete(Exception):
    """The buffer ends inside a packet; wait for more bytes."""


class _BufferReader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def __call__(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _Incomplete
        self.pos += n
        return self.buf[self.pos - n:self.pos]


class ServoEmulator:
    """Servos ``ids`` (one per twin joint) on a pty; use as a context manager.

    Args:
        protocol: ``feetech`` or ``dynamixel``.
        ids: servo ids, one per joint of ``twin_config.joint_names``.
        twin_config: the twin behind the registers (its ``control_hz`` is ignored).
        baudrate: the rate the servos are set to; a host at another rate gets no reply.
        physics_hz: physics ticks per wall-clock second.
        echo: the adapter sends every byte the host writes back to it, ahead of the replies
            (at any baud rate: the loop-back is in the adapter, not in the servos); the
            attribute of the same name may be changed while the emulator runs.
    """

    def __init__(self, protocol: str = "feetech", ids: Sequence[int] = (1, 2, 3, 4, 5, 6),
                 twin_config: TwinConfig | None = None, baudrate: int = 1_000_000,
                 physics_hz: float = 250.0, echo: bool = False) -> None:
        if protocol not in CODECS:
            raise ValueError(f"protocol {protocol!r}: choose one of {sorted(CODECS)}")
        base = twin_config if twin_config is not None else TwinConfig()
        self.twin = TwinRobot(TwinConfig(base.model_path, base.joint_names, base.actuator_names,
                                         base.ee_site), control_hz=physics_hz)
        self.protocol, self.codec = protocol, CODECS[protocol]()
        self.ids = [int(i) for i in ids]
        if len(self.ids) != len(self.twin.joint_names):
            raise ValueError(f"{len(self.ids)} ids for {len(self.twin.joint_names)} joints")
        self.baudrate = int(baudrate)
        self.faults = Faults()
        self.echo = bool(echo)
        self.unsafe: list[tuple[int, int]] = []  # (servo id, goal ticks) beyond the range
        self.goal_writes = 0
        self.received: deque[bytes] = deque(maxlen=64)  # the last instruction packets, raw
        n = len(self.ids)
        self.rad_per_tick = 2 * math.pi / self.codec.ticks_per_turn
        self.zero = np.array([2048 + ZERO_OFFSETS[k % 6] for k in range(n)])
        self.direction = np.array([DIRECTIONS[k % 6] for k in range(n)])
        lo = self.zero + self.direction * self.twin.limits.lower / self.rad_per_tick
        hi = self.zero + self.direction * self.twin.limits.upper / self.rad_per_tick
        self.safe_low = np.ceil(np.minimum(lo, hi)).astype(int)
        self.safe_high = np.floor(np.maximum(lo, hi)).astype(int)
        self._act = name_ids(self.twin.model, mujoco.mjtObj.mjOBJ_ACTUATOR,
                             self.twin.config.actuator_names, "actuator_names")
        joints = check_joints(self.twin.model, self.twin.joint_names)
        self._qadr = self.twin.model.jnt_qposadr[joints]
        self._vadr = self.twin.model.jnt_dofadr[joints]
        self._gain = self.twin.model.actuator_gainprm[self._act, 0].copy()
        self._bias = self.twin.model.actuator_biasprm[self._act, 1:3].copy()
        self._regs = [bytearray(256) for _ in self.ids]
        self._ctrl = self.twin.home_position.copy()
        self._held: np.ndarray | None = None  # joint positions a person holds the limp arm at
        self._watchdog_fired = np.zeros(n, dtype=bool)
        self._last_packet = time.monotonic()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._init_registers()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)

    # ------------------------------------------------------------------------- control
    def __enter__(self) -> ServoEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Serve the bus on a daemon thread."""
        self._thread = threading.Thread(target=self._serve, name="servo-emulator", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the pty."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def calibration(self) -> Calibration:
        """The exact calibration of this emulated arm (its mounting and mechanical range)."""
        joints = {name: JointCalibration(self.ids[k], int(self.zero[k]), int(self.direction[k]),
                                         int(self.safe_low[k]), int(self.safe_high[k]))
                  for k, name in enumerate(self.twin.joint_names)}
        return Calibration(self.protocol, joints, self.codec.ticks_per_turn)

    def hold(self, position: np.ndarray | None) -> None:
        """A person holds the limp joints at ``[J]`` ``position`` (rad); None lets go. Joints
        with torque on follow their servo, not the hand."""
        with self._lock:
            self._held = None if position is None else np.asarray(position, dtype=float)

    def joint_positions(self) -> np.ndarray:
        """``[J]`` the twin's joint positions now (rad)."""
        with self._lock:
            return self.twin.read().position

    def torque(self) -> np.ndarray:
        """``[J]`` torque enable register of each servo."""
        address = self.codec.control_table["torque_enable"].address
        return np.array([r[address] for r in self._regs])

    # -------------------------------------------------------------------- the registers
    def _reg(self, k: int, name: str) -> int:
        reg = self.codec.control_table[name]
        return reg.decode(bytes(self._regs[k][reg.address:reg.address + reg.size]))

    def _set(self, k: int, name: str, value: int) -> None:
        reg = self.codec.control_table[name]
        self._regs[k][reg.address:reg.address + reg.size] = reg.encode(value)

    def _init_registers(self) -> None:
        for k, servo in enumerate(self.ids):
            self._set(k, "model_number", MODEL_NUMBER[self.protocol])
            self._set(k, "id", servo)
            self._set(k, "baud_rate", BAUD_CODE[self.protocol])
            self._set(k, "operating_mode", 0)  # Dynamixel: current control until set to 3
            self._set(k, "min_position_limit", 0)
            self._set(k, "max_position_limit", self.codec.ticks_per_turn - 1)
            self._set(k, "goal_position", int(self._to_ticks(k, self._ctrl[k])))
        self._sync_registers()

    def _to_ticks(self, k: int, q: float) -> int:
        return int(round(self.zero[k] + self.direction[k] * q / self.rad_per_tick))

    def _sync_registers(self) -> None:
        """Present position and velocity from the twin."""
        state = self.twin.read()
        for k in range(len(self.ids)):
            self._set(k, "present_position", self._to_ticks(k, state.position[k]))
            speed = self.direction[k] * state.velocity[k] / self.codec.velocity_unit
            self._set(k, "present_velocity", int(round(speed)))

    def _apply_torque(self) -> None:
        on = self.torque().astype(bool)
        model = self.twin.model
        model.actuator_gainprm[self._act, 0] = np.where(on, self._gain, 0.0)
        model.actuator_biasprm[self._act, 1:3] = np.where(on[:, None], self._bias, 0.0)

    def _write(self, k: int, address: int, data: bytes) -> int:
        """Write ``data`` into servo ``k``'s table as its firmware would; the error number."""
        table = self.codec.control_table
        torque_on = self._regs[k][table["torque_enable"].address]
        if self.protocol == "dynamixel" and address < 64 and torque_on:
            return ACCESS_ERROR  # EEPROM area is locked while torque is on
        goal = table["goal_position"]
        if address == goal.address:
            ticks = goal.decode(data)
            self.goal_writes += 1
            if not self.safe_low[k] <= ticks <= self.safe_high[k]:
                self.unsafe.append((self.ids[k], ticks))
            if self._watchdog_fired[k]:
                return RANGE_ERROR  # e-Manual, Bus Watchdog: goals refused until it is cleared
            if self._reg(k, "operating_mode") != self.codec.position_mode:
                return RANGE_ERROR if self.protocol == "dynamixel" else 0  # not in position mode
        self._regs[k][address:address + len(data)] = data
        if address == goal.address:
            ticks = min(max(ticks, self._reg(k, "min_position_limit")),
                        self._reg(k, "max_position_limit"))
            self._ctrl[k] = self.direction[k] * (ticks - self.zero[k]) * self.rad_per_tick
            self.twin.write(self._ctrl)
        if address == table["torque_enable"].address:
            self._apply_torque()
        if "bus_watchdog" in table and address == table["bus_watchdog"].address \
                and data[0] == 0:
            self._watchdog_fired[k] = False
        return 0

    # ------------------------------------------------------------------------- serving
    def _serve(self) -> None:
        period = self.twin.control_period
        next_tick = time.monotonic()
        buf, outbox = b"", []  # outbox: (due time, bytes)
        while not self._stop.is_set():
            now = time.monotonic()
            if now - next_tick > 0.1:  # far behind (a loaded machine): skip, do not burst
                next_tick = now
            while next_tick <= now:
                self._physics_tick()
                next_tick += period
            while outbox and outbox[0][0] <= now:
                self._send(outbox.pop(0)[1])
            wake = min([next_tick] + [due for due, _ in outbox[:1]])
            try:
                ready, _, _ = select.select([self._master], [], [], max(0.0, wake - now))
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    return
                if self.echo:
                    with contextlib.suppress(OSError):
                        os.write(self._master, data)
                if self._host_baud() != self.baudrate:
                    continue  # at another baud rate the servos see only noise
                buf += data
                buf, replies = self._handle(buf)
                due = time.monotonic() + self.faults.latency
                outbox.extend((due, r) for r in replies)

    def _host_baud(self) -> int | None:
        try:
            name = _SPEEDS.get(termios.tcgetattr(self._slave)[4])
        except termios.error:
            return None
        return int(name[1:]) if name else None

    def _physics_tick(self) -> None:
        with self._lock:
            if self._held is not None:
                limp = ~self.torque().astype(bool)
                self.twin.data.qpos[self._qadr[limp]] = self._held[limp]
                self.twin.data.qvel[self._vadr[limp]] = 0.0
            self.twin.step()
            self._check_watchdog()
            self._sync_registers()

    def _check_watchdog(self) -> None:
        if "bus_watchdog" not in self.codec.control_table:
            return
        quiet = time.monotonic() - self._last_packet
        for k in range(len(self.ids)):
            units = self._reg(k, "bus_watchdog")
            if units > 0 and self.torque()[k] and quiet > units * self.codec.watchdog:
                self._watchdog_fired[k] = True  # stop where it is, refuse goals until cleared
                self._set(k, "bus_watchdog", -1)
                self._ctrl[k] = self.twin.read().position[k]
                self.twin.write(self._ctrl)

    def _send(self, packet: bytes) -> None:
        if self.faults.drop_replies > 0:
            self.faults.drop_replies -= 1
            return
        if self.faults.corrupt_replies > 0:
            self.faults.corrupt_replies -= 1
            packet = packet[:-1] + bytes([packet[-1] ^ 0x5A])
        with contextlib.suppress(OSError):
            os.write(self._master, packet)

    def _handle(self, buf: bytes) -> tuple[bytes, list[bytes]]:
        """Parse whole instruction packets off ``buf``; the rest and the replies."""
        replies: list[bytes] = []
        while buf:
            reader = _BufferReader(buf)
            try:
                servo_id, instruction, params = self._parse(reader)
            except _Incomplete:
                return buf, replies
            except ChecksumError:
                buf = buf[1:]  # a corrupt packet is ignored; look for the next header
                continue
            self.received.append(buf[:reader.pos])
            buf = buf[reader.pos:]
            self._last_packet = time.monotonic()
            with self._lock:
                replies.extend(self._execute(servo_id, instruction, params))
        return buf, replies

    def _parse(self, read: _BufferReader) -> tuple[int, int, bytes]:
        if self.protocol == "dynamixel":
            servo_id, payload = read_packet(read)
            return servo_id, payload[0], payload[1:]
        status = self.codec.read_status(read)  # the same layout, INST where ERR is
        return status.servo_id, status.error, status.params

    def _status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        injected = self.faults.status_errors.get(servo_id, 0)
        if self.protocol == "dynamixel":
            return dxl_packet(servo_id, bytes([STATUS, error & ~ALERT | injected]) + params)
        error |= injected
        body = bytes([servo_id, len(params) + 2, error]) + params
        return b"\xff\xff" + body + bytes([sts_checksum(body)])

    def _execute(self, servo_id: int, instruction: int, params: bytes) -> list[bytes]:
        width = self.codec.address_size
        live = {s: k for k, s in enumerate(self.ids) if s not in self.faults.silent_ids}

        def word(at: int) -> int:
            return int.from_bytes(params[at:at + width], "little")

        if instruction == SYNC_WRITE:
            address, size = word(0), word(width)
            at = 2 * width
            while at + 1 + size <= len(params):
                if params[at] in live:
                    self._write(live[params[at]], address, params[at + 1:at + 1 + size])
                at += 1 + size
            return []
        if instruction == SYNC_READ:
            address, size = word(0), word(width)
            return [self._status(s, 0, bytes(self._regs[live[s]][address:address + size]))
                    for s in params[2 * width:] if s in live]
        if servo_id not in live:
            return []
        k = live[servo_id]
        if instruction == PING:
            extra = self._regs[k][0:2] + b"\x2e" if self.protocol == "dynamixel" else b""
            return self._ping_faults(self._status(servo_id, 0, bytes(extra)))
        if instruction == READ:
            address, size = word(0), word(width)
            return [self._status(servo_id, 0, bytes(self._regs[k][address:address + size]))]
        if instruction == WRITE:
            return [self._status(servo_id, self._write(k, word(0), params[width:]))]
        return [self._status(servo_id, 2 if self.protocol == "dynamixel" else 0)]

    def _ping_faults(self, reply: bytes) -> list[bytes]:
        """``reply`` to a PING as :attr:`faults` leave it: dropped, corrupted, or as is."""
        faults = self.faults
        if faults.drop_ping_replies > 0:
            faults.drop_ping_replies -= 1
            return []
        if faults.corrupt_ping_replies > 0:
            faults.corrupt_ping_replies -= 1
            return [reply[:-1] + bytes([reply[-1] ^ 0x5A])]
        return [reply]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(CODECS), default="feetech")
    parser.add_argument("--baudrate", type=int, default=1_000_000)
    parser.add_argument("--calibration", help="write this arm's exact calibration here")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack on stderr
    # Ctrl-C and SIGTERM stop it even when started with SIGINT ignored (a background job of
    # a script inherits that, and Python then installs no KeyboardInterrupt handler)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    with ServoEmulator(args.protocol, baudrate=args.baudrate) as emulator:
        if args.calibration:
            emulator.calibration().save(args.calibration)
        print(f"{args.protocol} servo bus on {emulator.port} at {args.baudrate} baud; "
              "Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        print(f"served {emulator.goal_writes} goal writes; {len(emulator.unsafe)} beyond the "
              f"limit registers; the bus watchdog fired on {sum(emulator._watchdog_fired)} "
              "servos", flush=True)


if __name__ == "__main__":
    main()
