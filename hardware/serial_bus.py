"""A half-duplex servo bus over pyserial: port handling, timeouts, retries, clear errors.

Both vendors' buses (Feetech STS, Dynamixel Protocol 2.0) share the same shape: the host sends
an instruction packet, the addressed servo answers with a status packet, and a broadcast
``SYNC_WRITE`` gets no answer. The byte layouts (headers, lengths, checksum or CRC) live in a
:class:`Codec` per vendor (``hardware.feetech``, ``hardware.dynamixel``); this module owns the
wire: it flushes stale bytes, sends, collects the replies before a deadline, verifies them, and
retries a transaction whose reply was missing or corrupted (the PING at connect included).

Some half-duplex USB adapters loop their transmit line back onto the receive line, so every
packet the host sends comes back ahead of the reply. The bus recognises such an adapter when
the first bytes read back are exactly the packet just sent (:attr:`ServoBus.echo`), and from
then on reads and checks that echo before each reply. A Feetech PING read back is, byte for
byte, the status of a servo reporting an input voltage error (``FF FF 01 02 01 FB``), so while
the echo is unknown a packet that could pass for its own reply is preceded by a one-byte READ,
whose echo no reply can look like.

We write the protocols on pyserial rather than use the vendor SDKs (``scservo_sdk``,
``dynamixel_sdk``): both SDKs swallow a bad checksum or a timeout into a result code, have no
retry, and neither is a typed, testable package on PyPI for both vendors; the packet formats
are short and fully documented, and owning them lets the tests check every byte.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import serial

from mbpo_arm.hardware.errors import RobotError

PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83  # same on both buses
STANDARD_BAUDRATES = (1_000_000, 57_600, 115_200, 500_000, 2_000_000, 9_600)


class BusError(RobotError):
    """A serial-bus failure; the message is one line naming the port, servo and remedy."""


class PortError(BusError):
    """The port is missing or cannot be opened."""


class NoReplyError(BusError):
    """A servo did not answer before the timeout (every retry included)."""


class ChecksumError(BusError):
    """A reply failed its checksum or CRC, or was malformed."""


class ServoError(BusError):
    """A servo answered with its error bits set."""


@dataclass(frozen=True)
class Status:
    """A verified status packet: the answering servo, its error byte, its parameters."""

    servo_id: int
    error: int
    params: bytes


class Codec(Protocol):
    """One vendor's packet layout (see ``hardware.feetech``, ``hardware.dynamixel``)."""

    name: str
    broadcast_id: int
    address_size: int  # bytes of an address or a length in READ / SYNC_* parameters

    def instruction(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        """The instruction packet, checksum or CRC included."""

    def read_status(self, read: Reader) -> Status:
        """Read and verify one status packet; raise ChecksumError or NoReplyError."""

    def error_text(self, error: int) -> str:
        """The servo's error byte in words."""


Reader = Callable[[int], bytes]  # returns exactly n bytes, or raises NoReplyError


@dataclass(frozen=True)
class Register:
    """One control-table entry: ``size`` bytes little-endian at ``address``.

    ``sign_bit``: None for unsigned; ``size * 8 - 1`` with ``twos=True`` for two's
    complement (Dynamixel); otherwise the bit that carries the sign of a sign-magnitude value
    (Feetech STS: bit 15 of a speed, bit 11 of the homing offset).
    """

    address: int
    size: int
    sign_bit: int | None = None
    twos: bool = False

    def encode(self, value: int) -> bytes:
        value = int(value)
        if self.sign_bit is not None and value < 0:
            value = value + (1 << (8 * self.size)) if self.twos \
                else (-value) | (1 << self.sign_bit)
        return value.to_bytes(self.size, "little")

    def decode(self, data: bytes) -> int:
        value = int.from_bytes(data[: self.size], "little")
        if self.sign_bit is None:
            return value
        if self.twos:
            return value - (1 << (8 * self.size)) if value >> (8 * self.size - 1) else value
        magnitude = value & ((1 << self.sign_bit) - 1)
        return -magnitude if value >> self.sign_bit & 1 else magnitude


def scan_header(read: Reader, header: bytes) -> None:
    """Consume bytes until ``header`` has been read (skipping line noise before it)."""
    window = b""
    while window != header:
        window = (window + read(1))[-len(header):]


@dataclass
class BusStats:
    """Counts since the port was opened."""

    transactions: int = 0
    retries: int = 0
    timeouts: int = 0
    corrupt: int = 0


@dataclass
class ServoBus:
    """A servo bus on ``port``.

    Args:
        codec: the vendor's packet layout.
        port: the serial device, e.g. ``/dev/ttyACM0``.
        baudrate: bits per second the servos are set to.
        timeout: seconds to wait for each reply (each servo's, in a sync read).
        retries: extra tries of a transaction whose reply was missing or corrupted.
        names: servo id -> joint name, used in error messages.

    Attributes:
        stats: the :class:`BusStats` since the port was opened.
        echo: whether the adapter echoes the host's bytes ahead of each reply; None until a
            reply or an echo has told (each :meth:`open` starts over).
    """

    codec: Codec
    port: str
    baudrate: int
    timeout: float = 0.02
    retries: int = 2
    names: Mapping[int, str] = field(default_factory=dict)
    stats: BusStats = field(default_factory=BusStats)
    echo: bool | None = field(default=None, init=False)
    _serial: serial.Serial | None = field(default=None, repr=False)
    _unread: bytes = field(default=b"", init=False, repr=False)  # read past an echo
    _heard: int = field(default=0, init=False, repr=False)  # bytes read from the port

    # ------------------------------------------------------------------------ the port
    def open(self) -> None:
        """Open the port (idempotent). Raises :class:`PortError` naming the fix."""
        if self._serial is not None:
            return
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=self.timeout,
                                         write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as err:
            if not os.path.exists(self.port):
                raise PortError(f"serial port {self.port!r} does not exist; plug in the bus "
                                "adapter and pass its device as port=<device> (look under "
                                "/dev/ttyACM* or /dev/ttyUSB*)") from None
            raise PortError(f"cannot open serial port {self.port!r} ({err}); on Linux add "
                            "your user to the dialout group, and close other programs "
                            "using it") from None
        self.stats = BusStats()
        self.echo = None

    def close(self) -> None:
        """Close the port (idempotent)."""
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def set_baudrate(self, baudrate: int) -> None:
        """Switch the host side of the bus to ``baudrate``."""
        self.baudrate = int(baudrate)
        if self._serial is not None:
            self._serial.baudrate = self.baudrate

    # -------------------------------------------------------------------- transactions
    def ping(self, servo_id: int, tries: int | None = None) -> bool:
        """Whether ``servo_id`` answers a PING, tried as any transaction is (``1 + retries``
        times unless ``tries`` says). A servo that answers with its error bits set raises
        :class:`ServoError`."""
        try:
            self._transact(self.codec.instruction(servo_id, PING, b""), [servo_id], tries=tries)
        except (NoReplyError, ChecksumError):
            return False
        return True

    def read(self, servo_id: int, address: int, size: int) -> bytes:
        """``size`` bytes of ``servo_id``'s control table from ``address``."""
        params = self._addr(address) + self._addr(size)
        (status,) = self._transact(self.codec.instruction(servo_id, READ, params), [servo_id],
                                   size=size)
        return status.params

    def write(self, servo_id: int, address: int, data: bytes) -> None:
        """Write ``data`` at ``address`` of ``servo_id`` and wait for its acknowledgement."""
        packet = self.codec.instruction(servo_id, WRITE, self._addr(address) + bytes(data))
        self._transact(packet, [servo_id])

    def sync_read(self, address: int, size: int, ids: Iterable[int]) -> dict[int, bytes]:
        """``size`` bytes from ``address`` of each servo in ``ids``, in one SYNC_READ."""
        ids = list(ids)
        params = self._addr(address) + self._addr(size) + bytes(ids)
        packet = self.codec.instruction(self.codec.broadcast_id, SYNC_READ, params)
        return {s.servo_id: s.params for s in self._transact(packet, ids, size=size)}

    def sync_write(self, address: int, data: Mapping[int, bytes]) -> None:
        """Write ``data[id]`` (all the same length) at ``address`` of each servo; no reply."""
        sizes = {len(d) for d in data.values()}
        if len(sizes) != 1:
            raise ValueError(f"sync_write needs equal-length data per servo, got {sizes}")
        params = self._addr(address) + self._addr(sizes.pop())
        params += b"".join(bytes([i]) + bytes(d) for i, d in data.items())
        self._transact(self.codec.instruction(self.codec.broadcast_id, SYNC_WRITE, params), [])

    def find_baudrate(self, ids: Iterable[int],
                      candidates: Iterable[int] = STANDARD_BAUDRATES) -> int | None:
        """The first of ``candidates`` at which any of ``ids`` answers a ping, or None; the
        port is left at the configured baud rate. One try per servo and rate: this is a scan
        for the rate once none answers at the configured one, not the check of each servo."""
        configured, ids = self.baudrate, list(ids)
        try:
            for baud in candidates:
                self.set_baudrate(baud)
                if any(self.ping(i, tries=1) for i in ids):
                    return baud
            return None
        finally:
            self.set_baudrate(configured)

    # ------------------------------------------------------------------------ internals
    def _addr(self, value: int) -> bytes:
        return int(value).to_bytes(self.codec.address_size, "little")

    def _who(self, servo_id: int) -> str:
        name = self.names.get(servo_id)
        return f"servo {servo_id}" + (f" ({name})" if name else "")

    def _transact(self, packet: bytes, ids: list[int], size: int | None = None,
                  tries: int | None = None) -> list[Status]:
        """Send ``packet`` and collect one verified status from each of ``ids`` in order.

        A reply that is missing, corrupted, from the wrong servo or of the wrong size fails
        the try; the whole transaction is sent again up to ``retries`` times. While
        :attr:`echo` is unknown, a packet that could pass for its own reply is preceded by
        :meth:`_probe_echo`.
        """
        if self._serial is None:
            raise BusError(f"serial port {self.port!r} is not open; call connect() first")
        tries = tries if tries is not None else 1 + self.retries
        self.stats.transactions += 1
        last: BusError | None = None
        for attempt in range(tries):
            if attempt:
                self.stats.retries += 1
            if self.echo is None and self._looks_like_a_reply(packet, ids, size):
                self._probe_echo(ids[0])
            try:
                return self._try_once(packet, ids, size)
            except NoReplyError as err:
                self.stats.timeouts += 1
                last = err
            except ChecksumError as err:
                self.stats.corrupt += 1
                last = err
        assert last is not None
        raise type(last)(f"{last} on {self.port} at {self.baudrate} baud, after {tries} "
                         f"tr{'y' if tries == 1 else 'ies'}") from None

    def _try_once(self, packet: bytes, ids: list[int], size: int | None) -> list[Status]:
        """One try: send, then collect a reply from each of ``ids`` (any order; each within
        ``timeout`` of the previous one). A reply from a servo not asked is skipped.

        Neither protocol numbers its packets: a reply later than ``timeout`` that lands in
        the next try's window passes for that try's reply (one period stale). The input is
        flushed before each try, which bounds this to a single late reply; behind an echoing
        adapter, what comes before the echo is dropped, late replies included.
        """
        ser = self._serial
        assert ser is not None
        ser.reset_input_buffer()  # drop late replies to an earlier try
        self._unread = b""
        ser.write(packet)
        ser.flush()
        if self.echo:
            self._skip_echo(packet)
        pending, replies = list(ids), {}
        while pending:
            status = self._next_status(packet, pending[0])
            if status is None or status.servo_id not in pending:
                continue
            if status.error:
                raise ServoError(f"{self._who(status.servo_id)} reports "
                                 f"{self.codec.error_text(status.error)} on {self.port}")
            if size is not None and len(status.params) != size:
                raise ChecksumError(f"{self._who(status.servo_id)} sent "
                                    f"{len(status.params)} data bytes, expected {size}")
            pending.remove(status.servo_id)
            replies[status.servo_id] = status
        return [replies[i] for i in ids]

    def _next_status(self, packet: bytes, servo_id: int) -> Status | None:
        """The next status packet, read within ``timeout`` (``servo_id`` is the one awaited);
        None where the bytes were the adapter's echo of ``packet``."""
        deadline = time.monotonic() + self.timeout
        silent = f"{self._who(servo_id)} did not reply within {self.timeout * 1e3:.0f} ms"
        seen = bytearray()

        def read(n: int) -> bytes:
            data = self._read_exact(n, deadline, silent)
            seen.extend(data)
            return data

        try:
            status = self.codec.read_status(read)
        except (NoReplyError, ChecksumError):
            if not self._is_echo(bytes(seen), packet):
                raise
            return None
        if self._is_echo(bytes(seen), packet):
            return None
        if self.echo is None:
            self.echo = False
        return status

    def _is_echo(self, seen: bytes, packet: bytes) -> bool:
        """Whether ``seen``, read first while :attr:`echo` is unknown, starts with ``packet``:
        then the adapter echoes, and the bytes read past the echo are kept for the reply."""
        if self.echo is not None or not seen.startswith(packet):
            return False
        self.echo, self._unread = True, seen[len(packet):] + self._unread
        return True

    def _skip_echo(self, packet: bytes) -> None:
        """Read up to the end of the adapter's echo of ``packet`` within ``timeout``. Bytes
        ahead of it are a late reply to an earlier try, and are dropped with it."""
        deadline = time.monotonic() + self.timeout
        silent = (f"the adapter echoes what it sends, but its echo did not come back within "
                  f"{self.timeout * 1e3:.0f} ms")
        window = self._read_exact(len(packet), deadline, silent)
        while window != packet:
            window = window[1:] + self._read_exact(1, deadline, silent)

    def _looks_like_a_reply(self, packet: bytes, ids: list[int], size: int | None) -> bool:
        """Whether ``packet``, read back, would pass for a reply of one of ``ids``."""
        rest = packet

        def read(n: int) -> bytes:
            nonlocal rest
            if len(rest) < n:
                raise NoReplyError("end of packet")
            data, rest = rest[:n], rest[n:]
            return data

        try:
            status = self.codec.read_status(read)
        except BusError:
            return False
        return status.servo_id in ids and (size is None or len(status.params) == size)

    def _probe_echo(self, servo_id: int) -> None:
        """Settle :attr:`echo` with one try of a one-byte READ of ``servo_id`` (its echo has
        two parameters, its reply one): its echo, a reply, or no byte at all (an echoing
        adapter returns every packet, answered or not) tells."""
        heard = self._heard
        probe = self.codec.instruction(servo_id, READ, self._addr(0) + self._addr(1))
        with contextlib.suppress(BusError):
            self._try_once(probe, [servo_id], size=1)
        if self.echo is None and self._heard == heard:
            self.echo = False

    def _read_exact(self, n: int, deadline: float, silent: str) -> bytes:
        """``n`` bytes, the unread ones first; :class:`NoReplyError` ``silent`` at
        ``deadline``."""
        ser = self._serial
        assert ser is not None
        out, self._unread = self._unread[:n], self._unread[n:]
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoReplyError(silent)
            ser.timeout = left
            data = ser.read(n - len(out))
            self._heard += len(data)
            out += data
        return out
