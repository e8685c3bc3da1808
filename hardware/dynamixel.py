"""Dynamixel Protocol 2.0 packets and the X-series control table (XL330, XL430, XM430...).

Packet layout (ROBOTIS e-Manual, "DYNAMIXEL Protocol 2.0")::

    instruction:  FF FF FD 00  ID  LEN_L LEN_H  INST  PARAM...  CRC_L CRC_H
    status:       FF FF FD 00  ID  LEN_L LEN_H  55    ERR  PARAM...  CRC_L CRC_H
    LEN = len(INST + (ERR) + PARAM) + 2 (the CRC), counted after byte stuffing

CRC-16 with polynomial 0x8005, initial value 0, no reflection (CRC-16/BUYPASS; e-Manual
"CRC calculation"), over everything from the header to the last parameter. Byte stuffing
(e-Manual "Byte Stuffing"): wherever ``FF FF FD`` appears in INST/PARAM it is sent as
``FF FF FD FD`` so that it cannot be taken for a header.

Addresses and lengths are two bytes little-endian; values are little-endian two's complement.
Worked example (e-Manual, "Ping"): ping of ID 1 -> ``FF FF FD 00 01 03 00 01 19 4E``.
"""

from __future__ import annotations

import math

from mbpo_arm.hardware.serial_bus import ChecksumError, Reader, Register, Status, scan_header

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
STATUS = 0x55
TICKS_PER_TURN = 4096  # position resolution: 0.088 degree per tick
VELOCITY_UNIT = 0.229 * 2 * math.pi / 60  # rad/s per unit (0.229 rev/min)
WATCHDOG_UNIT = 0.020  # Bus Watchdog (address 98) counts 20 ms

# X-series control table (e-Manual, XM430-W350 / XL430-W250 "Control Table"). EEPROM area
# (addresses < 64) is writable only with torque off.
CONTROL_TABLE: dict[str, Register] = {
    "model_number": Register(0, 2),
    "id": Register(7, 1),
    "baud_rate": Register(8, 1),
    "operating_mode": Register(11, 1),  # 3: position control
    "homing_offset": Register(20, 4, sign_bit=31, twos=True),
    "velocity_limit": Register(44, 4),
    "max_position_limit": Register(48, 4),
    "min_position_limit": Register(52, 4),
    "torque_enable": Register(64, 1),
    "hardware_error_status": Register(70, 1),
    "bus_watchdog": Register(98, 1, sign_bit=7, twos=True),  # -1 once it has fired
    "profile_velocity": Register(112, 4),
    "goal_position": Register(116, 4, sign_bit=31, twos=True),
    "moving": Register(122, 1),
    "present_velocity": Register(128, 4, sign_bit=31, twos=True),
    "present_position": Register(132, 4, sign_bit=31, twos=True),
}
STATE_BLOCK = (128, 8)  # present velocity then present position: one sync read of 8 bytes
MODEL_NUMBERS = {1060: "XL430-W250", 1020: "XM430-W350", 1200: "XL330-M288",
                 1030: "XM430-W210"}
# Baud Rate register (address 8) values.
BAUD_CODES = {0: 9_600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000,
              6: 4_000_000}
# Status ERR field, bits 0-6 (e-Manual "Status Packet"); bit 7 is the hardware alert.
ERRORS = {1: "result fail", 2: "instruction error", 3: "CRC error", 4: "data range error",
          5: "data length error", 6: "data limit error", 7: "access error"}
ALERT = 0x80


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16 (poly 0x8005, init 0, MSB first) as the e-Manual's ``update_crc``."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(data: bytes) -> bytes:
    """``FF FF FD`` -> ``FF FF FD FD`` in the instruction and parameters."""
    return data.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")


def unstuff(data: bytes) -> bytes:
    """Undo :func:`stuff`."""
    return data.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")


class DynamixelCodec:
    """The Protocol 2.0 packet layout for :class:`hardware.serial_bus.ServoBus`."""

    name = "dynamixel"
    broadcast_id = BROADCAST_ID
    address_size = 2
    control_table = CONTROL_TABLE
    state_block = STATE_BLOCK
    velocity_unit = VELOCITY_UNIT
    ticks_per_turn = TICKS_PER_TURN
    watchdog = WATCHDOG_UNIT
    position_mode = 3  # Operating Mode (11): 3 is position control (one turn)

    def instruction(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        """``FF FF FD 00 ID LEN INST PARAM... CRC`` (stuffed)."""
        return packet(servo_id, bytes([instruction]) + bytes(params))

    def read_status(self, read: Reader) -> Status:
        """Read a status packet, verify its CRC, undo the stuffing."""
        servo_id, payload = read_packet(read)
        if len(payload) < 2 or payload[0] != STATUS:
            raise ChecksumError(f"servo {servo_id} sent instruction {payload[:1].hex()} "
                                "where a status packet (0x55) was expected")
        return Status(servo_id, payload[1], payload[2:])

    def error_text(self, error: int) -> str:
        words = []
        if error & ALERT:
            words.append("a hardware alert (read Hardware Error Status, address 70)")
        if error & 0x7F:
            words.append(ERRORS.get(error & 0x7F, f"error {error & 0x7F}"))
        return " and ".join(words)


def packet(servo_id: int, payload: bytes) -> bytes:
    """A whole packet around ``payload`` (INST + PARAM, or 55 + ERR + PARAM)."""
    body = stuff(payload)
    length = len(body) + 2
    if length > 0xFFFF:
        raise ValueError(f"Dynamixel packet too long: {length} bytes")
    head = HEADER + bytes([servo_id]) + length.to_bytes(2, "little")
    crc = crc16(head + body)
    return head + body + crc.to_bytes(2, "little")


def read_packet(read: Reader) -> tuple[int, bytes]:
    """Read one packet: its id and its unstuffed payload (INST or 55 + ERR, then PARAM)."""
    scan_header(read, HEADER)
    head = read(3)
    servo_id, length = head[0], int.from_bytes(head[1:3], "little")
    if length < 3 or servo_id == 0xFF:
        raise ChecksumError(f"malformed Dynamixel packet (id {servo_id}, length {length})")
    rest = read(length)
    body, crc = rest[:-2], int.from_bytes(rest[-2:], "little")
    computed = crc16(HEADER + head + body)
    if crc != computed:
        raise ChecksumError(f"CRC mismatch in the packet of servo {servo_id} (got {crc:#06x}, "
                            f"computed {computed:#06x})")
    return servo_id, unstuff(body)
