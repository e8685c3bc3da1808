"""Feetech STS (SMS/STS series, e.g. the STS3215 of SO-100/SO-101 arms) packets and registers.

Packet layout (Feetech "SCS/STS communication protocol", the Dynamixel 1.0 layout)::

    instruction:  FF FF  ID  LEN  INST  PARAM...  CHK      LEN = len(PARAM) + 2
    status:       FF FF  ID  LEN  ERR   PARAM...  CHK      LEN = len(PARAM) + 2
    CHK = ~(ID + LEN + INST|ERR + sum(PARAM)) & 0xFF

Addresses and lengths are one byte; STS multi-byte values are little-endian (the older SCS
series is big-endian, and is not supported here). ``SYNC_READ`` (0x82) takes
``addr, len, id...`` and each servo answers with its own status packet in the order asked;
``SYNC_WRITE`` (0x83) to the broadcast id 0xFE takes ``addr, len, (id, data[len])...``.

Worked example (Feetech STS manual, "WRITE DATA"): ID 1, goal position 2048, time 0, speed
1000 -> ``FF FF 01 09 03 2A 00 08 00 00 E8 03 D5``.
"""

from __future__ import annotations

import math

from mbpo_arm.hardware.serial_bus import ChecksumError, Reader, Register, Status, scan_header

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
TICKS_PER_TURN = 4096  # 12-bit magnetic encoder: 0..4095 over one turn
# Present_Velocity is in encoder steps per second (STS3215 memory table, address 58).
VELOCITY_UNIT = 2 * math.pi / TICKS_PER_TURN  # rad/s per unit

# STS3215 memory table (Feetech "STS3215 memory table", also lerobot motors/feetech/tables.py).
# EEPROM (kept across power cycles once Lock = 0 before the write) below address 40.
CONTROL_TABLE: dict[str, Register] = {
    "model_number": Register(3, 2),
    "id": Register(5, 1),
    "baud_rate": Register(6, 1),
    "min_position_limit": Register(9, 2),
    "max_position_limit": Register(11, 2),
    "homing_offset": Register(31, 2, sign_bit=11),
    "operating_mode": Register(33, 1),  # 0: position servo
    "torque_enable": Register(40, 1),
    "acceleration": Register(41, 1),
    "goal_position": Register(42, 2, sign_bit=15),
    "goal_velocity": Register(46, 2, sign_bit=15),
    "torque_limit": Register(48, 2),
    "lock": Register(55, 1),  # 0: EEPROM writes persist; 1: locked
    "present_position": Register(56, 2, sign_bit=15),
    "present_velocity": Register(58, 2, sign_bit=15),
    "present_load": Register(60, 2, sign_bit=10),
    "present_voltage": Register(62, 1),
    "present_temperature": Register(63, 1),
    "moving": Register(66, 1),
}
STATE_BLOCK = (56, 4)  # present position then present velocity: one sync read of 4 bytes
MODEL_NUMBERS = {777: "STS3215"}
# Baud Rate register (address 6) values.
BAUD_CODES = {0: 1_000_000, 1: 500_000, 2: 250_000, 3: 128_000, 4: 115_200, 5: 76_800,
              6: 57_600, 7: 38_400}
# Status error bits (Feetech SDK scservo_def: ERRBIT_*).
ERROR_BITS = {0x01: "input voltage error", 0x02: "angle sensor error",
              0x04: "overheating", 0x08: "overcurrent", 0x20: "overload"}


def checksum(body: bytes) -> int:
    """``~sum(body) & 0xFF`` over ID, LEN, INST/ERR and the parameters."""
    return ~sum(body) & 0xFF


class FeetechCodec:
    """The STS packet layout for :class:`hardware.serial_bus.ServoBus`."""

    name = "feetech"
    broadcast_id = BROADCAST_ID
    address_size = 1
    control_table = CONTROL_TABLE
    state_block = STATE_BLOCK
    velocity_unit = VELOCITY_UNIT
    ticks_per_turn = TICKS_PER_TURN
    watchdog = None  # the STS series has no bus watchdog
    position_mode = 0  # Operating Mode (33): 0 is the position servo

    def instruction(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        """``FF FF ID LEN INST PARAM... CHK``."""
        if len(params) + 2 > 0xFF:
            raise ValueError(f"Feetech packet too long: {len(params)} parameter bytes")
        body = bytes([servo_id, len(params) + 2, instruction]) + bytes(params)
        return HEADER + body + bytes([checksum(body)])

    def read_status(self, read: Reader) -> Status:
        """Read ``FF FF ID LEN ERR PARAM... CHK`` and verify the checksum."""
        scan_header(read, HEADER)
        head = read(2)
        servo_id, length = head[0], head[1]
        if servo_id == 0xFF or length < 2:
            raise ChecksumError(f"malformed Feetech status packet (id {servo_id}, "
                                f"length {length})")
        rest = read(length)
        body = head + rest[:-1]
        if checksum(body) != rest[-1]:
            raise ChecksumError(f"checksum mismatch in the reply of servo {servo_id} "
                                f"(got {rest[-1]:#04x}, computed {checksum(body):#04x})")
        return Status(servo_id, rest[0], bytes(rest[1:-1]))

    def error_text(self, error: int) -> str:
        words = [w for bit, w in ERROR_BITS.items() if error & bit]
        return " and ".join(words) or f"error byte {error:#04x}"
