"""LiTime MPPT (BT-LTMPPT..., = HQST M4860N) Modbus-RTU over BLE: pure encoders and decoders.

No I/O here. The charger speaks plain Modbus-RTU inside GATT writes/notifications on
service 0xFFE0, characteristic 0xFFE1; slave id 1, function 03 reads, 06 writes.

Sources (shared research notes ``docs/protocols.md`` section 2; captures in
``collector/tests/fixtures/devices.json``):

* Register map of the status block 0x0101..0x0113 and the device-info block 0x000A:
  usk-johnny-s/RPi5SolarPowerMonitor ``BleDevice_LiTime_MPPT.py``
  (``struct.unpack("!HHHHBBHHHHHHHBBHHLL")``), names from mavenius/litime_mppt_esphome
  ``litime_solar_mppt.h``; checked on the captured frames.
* CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), low byte first.
* Charge-status codes are not published for LiTime; the captures match the SRNE enum
  (cyrils/renogy-bt ``renogybt/RoverClient.py`` ``CHARGING_STATE``) - an inference.
* Load-status byte 0x80 = load on: an inference from captures.
"""

from __future__ import annotations

from typing import Any

from . import framing as _framing
from .errors import ChecksumError, DeviceErrorReply, FrameError, TruncatedFrameError

SLAVE_ID = 0x01
READ_HOLDING = 0x03
WRITE_SINGLE = 0x06

STATUS_START = 0x0101
STATUS_COUNT = 19
DEVICE_INFO_START = 0x000A
DEVICE_INFO_COUNT = 11
LOAD_REGISTER = 0x0120

#: SRNE charging-state enum mapped to data-model ``charge_state`` texts [inference].
CHARGE_STATES = {
    0: "off",
    1: "starting",
    2: "bulk",
    3: "equalize",
    4: "absorption",
    5: "float",
    6: "current_limited",
}

NO_SENSOR = 0xFF


def crc16_modbus(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS of ``data`` (init 0xFFFF, reflected poly 0xA001)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _with_crc(pdu: bytes) -> bytes:
    return pdu + crc16_modbus(pdu).to_bytes(2, "little")


def read_request(start: int, count: int, slave: int = SLAVE_ID) -> bytes:
    """Function 03 request: ``slave 03 start_hi start_lo count_hi count_lo crc_lo crc_hi``.

    >>> read_request(0x0101, 19).hex()
    '010301010013543b'
    """
    if not (0 <= start <= 0xFFFF and 1 <= count <= 125):
        raise ValueError("register range out of bounds")
    return _with_crc(bytes((slave, READ_HOLDING)) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def write_single_request(register: int, value: int, slave: int = SLAVE_ID) -> bytes:
    """Function 06 request; the device echoes it back on success.

    >>> write_single_request(0x0120, 1).hex()
    '010601200001483c'
    """
    if not (0 <= register <= 0xFFFF and 0 <= value <= 0xFFFF):
        raise ValueError("register or value out of range")
    return _with_crc(bytes((slave, WRITE_SINGLE)) + register.to_bytes(2, "big") + value.to_bytes(2, "big"))


def read_response(registers: bytes, slave: int = SLAVE_ID) -> bytes:
    """Build a function 03 response carrying ``registers`` (used by the simulator)."""
    if len(registers) > 250 or len(registers) % 2:
        raise ValueError("register data must be an even length up to 250 bytes")
    return _with_crc(bytes((slave, READ_HOLDING, len(registers))) + registers)


def exception_response(function: int, code: int, slave: int = SLAVE_ID) -> bytes:
    """Build a Modbus exception response (function | 0x80)."""
    return _with_crc(bytes((slave, function | 0x80, code)))


def expected_frame_length(buffer: bytes | bytearray) -> int | None:
    """Total length of the response at the start of ``buffer``, or None if not known yet.

    Function 03: ``3 + bytecount + 2``; function 06: 8; exception: 5. Unknown
    function codes give the buffer's own length (the caller's parse then fails).
    """
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if function & 0x80:
        return 5
    if function == WRITE_SINGLE:
        return 8
    if function == READ_HOLDING:
        if len(buffer) < 3:
            return None
        return 3 + buffer[2] + 2
    return len(buffer)


def parse_response(frame: bytes | bytearray, function: int, slave: int = SLAVE_ID) -> bytes:
    """Check a complete response and return its payload.

    For function 03 the payload is the register bytes; for 06 the 4 echoed bytes.

    Raises:
        TruncatedFrameError: shorter than its length says.
        ChecksumError: CRC mismatch.
        DeviceErrorReply: a Modbus exception response (``code`` = exception code).
        FrameError: wrong slave id, function, or trailing bytes.
    """
    frame = bytes(frame)
    if len(frame) < 5:
        raise TruncatedFrameError(f"Modbus frame too short: {len(frame)} bytes")
    length = expected_frame_length(frame)
    assert length is not None
    if len(frame) < length:
        raise TruncatedFrameError(f"Modbus frame needs {length} bytes, has {len(frame)}")
    if len(frame) > length:
        raise FrameError(f"Modbus frame has {len(frame) - length} trailing bytes")
    crc = int.from_bytes(frame[-2:], "little")
    want = crc16_modbus(frame[:-2])
    if crc != want:
        raise ChecksumError(f"Modbus CRC 0x{crc:04x}, expected 0x{want:04x}")
    if frame[0] != slave:
        raise FrameError(f"Modbus reply from slave {frame[0]}, expected {slave}")
    if frame[1] == function | 0x80:
        raise DeviceErrorReply(f"Modbus exception code {frame[2]} for function {function}", frame[2])
    if frame[1] != function:
        raise FrameError(f"Modbus reply function {frame[1]}, expected {function}")
    if function == READ_HOLDING:
        return frame[3:-2]
    return frame[2:-2]


def _u16(data: bytes, index: int) -> int:
    return int.from_bytes(data[2 * index : 2 * index + 2], "big")


def _u32(data: bytes, index: int) -> int:
    return int.from_bytes(data[2 * index : 2 * index + 4], "big")


def decode_status(registers: bytes) -> dict[str, Any]:
    """Decode the 19-register status block read from 0x0101 into data-model charger fields.

    Returns ``soc`` (%, the charger's voltage-based estimate), ``battery_voltage`` (V),
    ``battery_current`` (A, into the battery, >= 0), ``charge_power`` (W),
    ``controller_temperature`` and ``battery_temperature`` (degC; the latter None when
    the byte is 0xFF = no sensor), ``load_voltage`` (V), ``load_current`` (A),
    ``load_power`` (W), ``pv_voltage`` (V), ``max_charge_power_today`` (W),
    ``yield_today`` and ``consumed_today`` (Wh), ``load_on``, ``charge_state`` (text) and
    ``charge_state_code``, ``alarm_bits``, ``days_running``, ``yield_total`` and
    ``consumed_total`` (Wh). PV current/power are not in this block.

    Raises:
        TruncatedFrameError: not exactly 38 bytes.
    """
    if len(registers) != 2 * STATUS_COUNT:
        raise TruncatedFrameError(f"LiTime status block must be {2 * STATUS_COUNT} bytes, got {len(registers)}")
    temps = _u16(registers, 4)
    status = _u16(registers, 12)
    code = status & 0xFF
    battery_temp = temps & 0xFF
    return {
        "soc": float(_u16(registers, 0)),
        "battery_voltage": _u16(registers, 1) / 10,
        "battery_current": _u16(registers, 2) / 100,
        "charge_power": float(_u16(registers, 3)),
        "controller_temperature": float(temps >> 8),
        "battery_temperature": None if battery_temp == NO_SENSOR else float(battery_temp),
        "load_voltage": _u16(registers, 5) / 10,
        "load_current": _u16(registers, 6) / 100,
        "load_power": float(_u16(registers, 7)),
        "pv_voltage": _u16(registers, 8) / 10,
        "max_charge_power_today": float(_u16(registers, 9)),
        "yield_today": float(_u16(registers, 10)),
        "consumed_today": float(_u16(registers, 11)),
        "load_on": bool(status & 0x8000),
        "charge_state": CHARGE_STATES.get(code, f"unknown_{code}"),
        "charge_state_code": code,
        "alarm_bits": _u16(registers, 13),
        "days_running": _u16(registers, 14),
        "yield_total": float(_u32(registers, 15)),
        "consumed_total": float(_u32(registers, 17)),
    }


def decode_device_info(registers: bytes) -> dict[str, Any]:
    """Decode the 11-register device-info block read from 0x000A.

    Layout per RPi5SolarPowerMonitor (no public capture exists, so unverified):
    0x000A hi/lo rated charge/discharge current (A), 0x000B hi/lo max/min system
    voltage (V), 0x000C..0x0013 model (16 ASCII bytes), 0x0014 firmware x100.

    Raises:
        TruncatedFrameError: not exactly 22 bytes.
    """
    if len(registers) != 2 * DEVICE_INFO_COUNT:
        raise TruncatedFrameError(
            f"LiTime device-info block must be {2 * DEVICE_INFO_COUNT} bytes, got {len(registers)}"
        )
    model = registers[4:20].split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    return {
        "rated_charge_current": float(registers[0]),
        "rated_discharge_current": float(registers[1]),
        "system_voltage_max": float(registers[2]),
        "system_voltage_min": float(registers[3]),
        "model": model,
        "firmware_version": _u16(registers, 10) / 100,
    }


def decode(frame: bytes | bytearray) -> dict[str, Any]:
    """Decode one complete function-03 response by its size.

    A 38-byte payload is the status block, a 22-byte payload the device-info block.
    Raises :class:`FrameError` subclasses for anything else.
    """
    registers = parse_response(frame, READ_HOLDING)
    if len(registers) == 2 * STATUS_COUNT:
        return decode_status(registers)
    if len(registers) == 2 * DEVICE_INFO_COUNT:
        return decode_device_info(registers)
    raise FrameError(f"LiTime reply of {len(registers)} register bytes is not a known block")


class FrameAssembler(_framing.FrameAssembler):
    """Reassembles Modbus responses (start = slave id) from BLE notification chunks."""

    def __init__(self, slave: int = SLAVE_ID) -> None:
        super().__init__(bytes((slave,)), expected_frame_length)
