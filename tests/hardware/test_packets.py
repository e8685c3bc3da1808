"""Bytes of both protocols against the worked examples of the vendors' manuals.

Dynamixel: ROBOTIS e-Manual, "DYNAMIXEL Protocol 2.0", the example packets of Ping, Read,
Write, Sync Read and Sync Write (an XM430 at ID 1 and 2). Feetech: the STS manual's examples
(ping, read of the present position, write of position/time/speed to ID 1). Every checksum and
CRC below was also computed by hand from the formula in the module docstrings.
"""

from __future__ import annotations

import pytest

from mbpo_arm.hardware.dynamixel import DynamixelCodec, crc16, stuff, unstuff
from mbpo_arm.hardware.dynamixel import packet as dxl_packet
from mbpo_arm.hardware.feetech import FeetechCodec, checksum
from mbpo_arm.hardware.serial_bus import (
    PING,
    READ,
    SYNC_READ,
    SYNC_WRITE,
    WRITE,
    ChecksumError,
    NoReplyError,
    Register,
)

DXL, STS = DynamixelCodec(), FeetechCodec()


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# ROBOTIS e-Manual, "DYNAMIXEL Protocol 2.0", Instruction Details: the Ping, Read and Write
# examples are the manual's bytes (checked against emanual.robotis.com/docs/en/dxl/protocol2).
@pytest.mark.parametrize("servo_id,instruction,params,expected", [
    (1, PING, "", "FF FF FD 00 01 03 00 01 19 4E"),
    # Read Present Position (132, 4 bytes) of ID 1
    (1, READ, "84 00 04 00", "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15"),
    # Write 512 to Goal Position (116) of ID 1
    (1, WRITE, "74 00 00 02 00 00", "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89"),
    # Sync Read Present Position of ID 1 and ID 2
    (0xFE, SYNC_READ, "84 00 04 00 01 02", "FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA"),
    # Sync Write Goal Position 150 to ID 1 and 170 to ID 2
    (0xFE, SYNC_WRITE, "74 00 04 00 01 96 00 00 00 02 AA 00 00 00",
     "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87"),
])
def test_dynamixel_instruction_packets_match_the_e_manual(servo_id: int, instruction: int,
                                                          params: str, expected: str) -> None:
    assert DXL.instruction(servo_id, instruction, h(params)) == h(expected)


def test_dynamixel_status_packet_of_the_e_manual_parses() -> None:
    # Ping reply of an XM430-W210 (model 1030 = 0x0406, firmware 0x26)
    wire = h("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")
    assert dxl_packet(1, h("55 00 06 04 26")) == wire
    status = DXL.read_status(_reader(b"\x00\x13" + wire))  # line noise before the header
    assert (status.servo_id, status.error, status.params) == (1, 0, h("06 04 26"))


def test_crc16_is_the_buypass_crc() -> None:
    # CRC-16/BUYPASS check value: crc("123456789") == 0xFEE8 (poly 0x8005, init 0)
    assert crc16(b"123456789") == 0xFEE8


@pytest.mark.parametrize("flip", range(7, 14))
def test_dynamixel_any_flipped_byte_fails_the_crc(flip: int) -> None:
    wire = bytearray(h("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D"))
    wire[flip] ^= 0x01
    with pytest.raises((ChecksumError, NoReplyError)):
        DXL.read_status(_reader(bytes(wire)))


def test_byte_stuffing_round_trip_and_length() -> None:
    payload = h("55 00 FF FF FD 01")
    wire = dxl_packet(3, payload)
    assert h("FF FF FD FD") in wire[4:]  # stuffed in the body
    assert int.from_bytes(wire[5:7], "little") == len(stuff(payload)) + 2
    assert unstuff(stuff(payload)) == payload
    status = DXL.read_status(_reader(wire))
    assert status.params == h("FF FF FD 01")


# Feetech STS speaks the Protocol 1.0 packet (FF FF id len inst params ~sum): the ping of ID 1
# is the ROBOTIS RX-28 manual's example 3 (section 4-4, "PING"), the rest hand-computed.
@pytest.mark.parametrize("servo_id,instruction,params,expected", [
    (1, PING, "", "FF FF 01 02 01 FB"),
    # Read 2 bytes from Present Position (0x38)
    (1, READ, "38 02", "FF FF 01 04 02 38 02 BE"),
    # Write goal position 2048, time 0, speed 1000 from address 0x2A
    (1, WRITE, "2A 00 08 00 00 E8 03", "FF FF 01 09 03 2A 00 08 00 00 E8 03 D5"),
    # Sync write goal position 2048 to ID 1 and 1024 to ID 2:
    # ~(FE + 0A + 83 + 2A + 02 + 01 + 00 + 08 + 02 + 00 + 04) & FF = ~0x1C6 & FF = 0x39
    (0xFE, SYNC_WRITE, "2A 02 01 00 08 02 00 04", "FF FF FE 0A 83 2A 02 01 00 08 02 00 04 39"),
])
def test_feetech_instruction_packets_match_the_manual(servo_id: int, instruction: int,
                                                      params: str, expected: str) -> None:
    assert STS.instruction(servo_id, instruction, h(params)) == h(expected)


def test_feetech_status_checksum_verified() -> None:
    # ID 1 answers a read of 2 bytes with 0x0800: ~(01 + 04 + 00 + 00 + 08) = 0xF2
    wire = h("FF FF 01 04 00 00 08 F2")
    assert checksum(wire[2:-1]) == 0xF2
    status = STS.read_status(_reader(wire))
    assert (status.servo_id, status.error, status.params) == (1, 0, h("00 08"))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        STS.read_status(_reader(wire[:-1] + b"\xf3"))


def test_register_sign_conventions() -> None:
    sts_speed = Register(58, 2, sign_bit=15)  # Feetech: sign-magnitude, bit 15
    assert sts_speed.encode(-100) == h("64 80") and sts_speed.decode(h("64 80")) == -100
    dxl_velocity = Register(128, 4, sign_bit=31, twos=True)  # Dynamixel: two's complement
    assert dxl_velocity.encode(-2) == h("FE FF FF FF")
    assert dxl_velocity.decode(h("FE FF FF FF")) == -2
    assert Register(132, 4).decode(h("00 08 00 00")) == 2048


def _reader(data: bytes):  # noqa: ANN202
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise NoReplyError("ran out of bytes")
        pos += n
        return data[pos - n:pos]

    return read
