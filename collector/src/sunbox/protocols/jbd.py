"""JBD (Xiaoxiang / Overkill Solar / Vatrer) BMS protocol: pure encoders and decoders.

No I/O here: functions take and return bytes and plain values.

Sources (see ``docs/protocols.md`` section 1 of the shared research notes, and
``collector/tests/fixtures/devices.json`` for the captured frames):

* Frame layout and register 0x03/0x04/0x05 fields: FurTrader/OverkillSolarBMS
  ``Comm_Protocol_Documentation/JBD_REGISTER_MAP.md``; syssi/esphome-jbd-bms
  ``components/jbd_bms_ble/jbd_bms_ble.cpp``; patman15/aiobmsble ``aiobmsble/bms/jbd_bms.py``.
* Checksum: ``(0x10000 - sum(bytes[2:4+len])) & 0xFFFF``, big-endian (verified on every
  captured frame; FurTrader's "0x1000" is a typo).
* ``FF AA`` password handshake: Xiaoxiang app ``BleUtils.smali`` (constants), syssi
  ``docs/ffaa-auth-flow/*`` captures and merged PR #148 (obfuscation
  ``((mac[i] ^ pwd[i]) + rnd) & 0xFF``).

Units on the way out follow the Sunbox data model (``docs/data-model.md``): volts,
amperes (+ = charging, the BMS's own sign), ampere-hours, degrees Celsius.

Values that cannot be true are never published as values (``docs/data-model.md``,
"Absent values"): a temperature outside :data:`TEMPERATURE_RANGE` (a raw 0, i.e.
-273.1 degC, is an NTC that is not fitted or broken) and a cell voltage above
:data:`CELL_VOLTAGE_RANGE` decode to ``None`` in their list, so the list keeps one
position per sensor or cell slot. A cell that reads 0 mV is not absent: the BMS reports
only the cells it is configured for, so a 0 there is a broken sense lead or a dead cell.
It is published as 0.0 V, counts in the lowest cell and the spread, and raises the
``cell-fault`` alarm (issue 32; fl4p/batmon-ha's JBD decoder keeps the zero too).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from . import framing as _framing
from .errors import ChecksumError, DeviceErrorReply, FrameError, TruncatedFrameError

START = 0xDD
END = 0x77
READ = 0xA5
WRITE = 0x5A

REG_BASIC_INFO = 0x03
REG_CELL_VOLTAGES = 0x04
REG_MODEL = 0x05

#: Plausible NTC temperatures, degC. LiFePO4 packs neither work nor survive outside it;
#: a raw 0 (-273.1 degC) is an absent or broken NTC.
TEMPERATURE_RANGE = (-60.0, 150.0)
#: Cell voltages a cell can show, V: any lithium chemistry stays under 5 V, and 0 V (down
#: to a broken sense lead) is a fault worth showing, not an absent cell.
CELL_VOLTAGE_RANGE = (0.0, 5.0)
#: Bit 7 of the byte after the NTC block: current and capacities count in 100 mA / 100 mAh.
HIGH_CAPACITY_FLAG = 0x80

#: Minimum length of a response frame: DD reg status len chk_hi chk_lo 77.
MIN_FRAME = 7
#: Largest ``len`` byte seen in practice is 0x22 (0x03 with V11 fields); 32 cells give 64.
MAX_DATA_LEN = 0xFF

FFAA_START = b"\xff\xaa"
FFAA_APP_KEY = 0x15
FFAA_SET_PASSWORD = 0x16
FFAA_GET_RANDOM = 0x17
FFAA_USER_PASSWORD = 0x18
FFAA_ROOT_PASSWORD = 0x1D
#: Constant app key sent with 0x15 (Xiaoxiang app ``sendAppKey``; syssi).
APP_KEY = b"000000"
#: Constant root password sent with 0x1D (syssi ``docs/ffaa-auth-flow/root-password.txt``).
ROOT_PASSWORD = b"JBDbtpwd!@#2023"

#: 0x15 reply codes (app RESPONSE_SUCCESS / FAILED / NO_PSW).
APP_KEY_ACCEPTED = 0x00
APP_KEY_REJECTED = 0x01
APP_KEY_NO_PASSWORD = 0x02

PROTECTION_NAMES = (
    "cell_overvoltage",
    "cell_undervoltage",
    "pack_overvoltage",
    "pack_undervoltage",
    "charge_overtemperature",
    "charge_undertemperature",
    "discharge_overtemperature",
    "discharge_undertemperature",
    "charge_overcurrent",
    "discharge_overcurrent",
    "short_circuit",
    "afe_error",
    "mosfet_software_lock",
)
"""Protection bit names, bit 0 first (FurTrader ``JBD_REGISTER_MAP.md``)."""


def checksum(body: bytes) -> int:
    """Return the JBD checksum of ``body`` (status/reg, len and data bytes).

    ``(0x10000 - sum(body)) & 0xFFFF``; transmitted big-endian.
    """
    return (0x10000 - sum(body)) & 0xFFFF


def read_request(register: int) -> bytes:
    """Build the read request for ``register``: ``DD A5 reg 00 chk_hi chk_lo 77``.

    >>> read_request(0x03).hex()
    'dda50300fffd77'
    """
    if not 0 <= register <= 0xFF:
        raise ValueError(f"register out of range: {register}")
    body = bytes((register, 0))
    return bytes((START, READ)) + body + checksum(body).to_bytes(2, "big") + bytes((END,))


def encode_response(register: int, data: bytes, status: int = 0) -> bytes:
    """Build a response frame ``DD reg status len data chk 77`` (used by the simulator)."""
    if len(data) > MAX_DATA_LEN:
        raise ValueError("data too long for one JBD frame")
    body = bytes((status, len(data))) + data
    return bytes((START, register)) + body + checksum(body).to_bytes(2, "big") + bytes((END,))


def expected_frame_length(buffer: bytes | bytearray) -> int | None:
    """Length of the response frame at the start of ``buffer``, or None if unknown yet.

    The buffer must start with 0xDD; the length byte is at offset 3.
    """
    if len(buffer) < 4:
        return None
    return buffer[3] + MIN_FRAME


@dataclass(frozen=True, slots=True)
class Response:
    """A checked JBD response frame."""

    register: int
    status: int
    data: bytes


def parse_frame(frame: bytes | bytearray) -> Response:
    """Check one complete response frame and split it.

    Raises:
        TruncatedFrameError: shorter than 7 bytes or than its declared length.
        FrameError: bad start/end byte, or bytes after the declared end. A buffer
            given here must hold exactly one frame, so a trailing byte is refused; on a
            BLE link :class:`FrameAssembler` cuts each frame at its declared length and
            counts any byte after it in ``skipped_bytes`` instead.
        ChecksumError: checksum mismatch.
        DeviceErrorReply: status byte is not 0x00 (0x80 = error, FurTrader).
    """
    frame = bytes(frame)
    if len(frame) < MIN_FRAME:
        raise TruncatedFrameError(f"JBD frame too short: {len(frame)} bytes")
    if frame[0] != START:
        raise FrameError(f"JBD frame must start with 0xDD, got 0x{frame[0]:02x}")
    length = frame[3]
    if len(frame) < length + MIN_FRAME:
        raise TruncatedFrameError(f"JBD frame declares {length} data bytes but has {len(frame) - MIN_FRAME}")
    if len(frame) > length + MIN_FRAME:
        raise FrameError(f"JBD frame has {len(frame) - length - MIN_FRAME} trailing bytes")
    if frame[-1] != END:
        raise FrameError(f"JBD frame must end with 0x77, got 0x{frame[-1]:02x}")
    body = frame[2 : 4 + length]
    got = int.from_bytes(frame[4 + length : 6 + length], "big")
    want = checksum(body)
    if got != want:
        raise ChecksumError(f"JBD checksum 0x{got:04x}, expected 0x{want:04x}")
    status = frame[2]
    if status != 0:
        raise DeviceErrorReply(f"JBD register 0x{frame[1]:02x} error status 0x{status:02x}", status)
    return Response(register=frame[1], status=status, data=frame[4 : 4 + length])


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "big")


def _s16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "big", signed=True)


def _production_date(raw: int) -> str | None:
    try:
        return _dt.date(2000 + (raw >> 9), (raw >> 5) & 0x0F, raw & 0x1F).isoformat()
    except ValueError:
        return None


def _temperature(raw: int) -> float | None:
    """0.1 K -> degC, or None when outside :data:`TEMPERATURE_RANGE` (absent NTC)."""
    celsius = round((raw - 2731) / 10, 1)
    low, high = TEMPERATURE_RANGE
    return celsius if low <= celsius <= high else None


def decode_basic_info(data: bytes) -> dict[str, Any]:
    """Decode the data bytes of register 0x03 into data-model battery fields.

    Returns a dict with ``voltage`` (V), ``current`` (A, + = charging), ``power`` (W,
    + = charging), ``soc`` (%), ``capacity_remaining`` and ``capacity_nominal`` (Ah),
    ``cycles``, ``balance_bits`` (bit 0 = cell 1, cells 17-32 in the high word as in
    FurTrader's map), ``protection_bits``, ``charge_fet_on``, ``discharge_fet_on``,
    ``cell_count``, ``temperatures`` (list, degC, one item per NTC, ``None`` for an
    absent NTC), ``production_date`` (ISO date or None), ``software_version`` (e.g.
    "8.0"), and, when the 9-byte V11 extension is present, ``humidity`` (%, ``None`` if
    not a percentage), ``alarm_bits`` and ``balance_current`` (A).

    The byte after the NTC block (``data[23 + 2n]``) is read two ways by the sources:
    FurTrader's V11 map and aiobmsble ``docs/jbd_bms.md`` (Chins) call it humidity (%),
    seen as 0 on every captured frame; the peer decoder compared in Sunbox issue 17
    reads its bit 7 as a unit flag for packs above the 655.35 Ah that a u16 of 10 mAh can
    hold (smagicld/xiaoxiangBMS issues #74 and #221: older firmware and the app stop at
    655.35 Ah). A humidity never has bit 7 set (it would be >= 128 %), so the two
    readings do not collide: with bit 7 set, current and both capacities count in
    100 mA / 100 mAh (ten times the base unit, the only reading under which the flag
    lets a pack exceed 655.35 Ah; the factor is an inference, no frame of such a pack is
    public) and no humidity is published; with it clear, the base units of 10 mA /
    10 mAh hold.

    Raises:
        TruncatedFrameError: fewer bytes than the fixed part plus the declared NTCs.
    """
    if len(data) < 23:
        raise TruncatedFrameError(f"JBD 0x03 data has {len(data)} bytes, needs at least 23")
    ntc = data[22]
    end = 23 + 2 * ntc
    if len(data) < end:
        raise TruncatedFrameError(f"JBD 0x03 data declares {ntc} NTCs but has {len(data)} bytes")
    ext = data[end:]
    high_capacity = bool(ext) and bool(ext[0] & HIGH_CAPACITY_FLAG)
    scale = 10 if high_capacity else 1  # in units of 10 mA / 10 mAh
    voltage = _u16(data, 0) / 100
    current = _s16(data, 2) * scale / 100
    version = data[18]
    values: dict[str, Any] = {
        "voltage": voltage,
        "current": current,
        "power": round(voltage * current, 2),
        "capacity_remaining": _u16(data, 4) * scale / 100,
        "capacity_nominal": _u16(data, 6) * scale / 100,
        "cycles": _u16(data, 8),
        "production_date": _production_date(_u16(data, 10)),
        "balance_bits": _u16(data, 12) | (_u16(data, 14) << 16),
        "protection_bits": _u16(data, 16),
        "software_version": f"{version >> 4}.{version & 0x0F}",
        "soc": float(data[19]),
        "charge_fet_on": bool(data[20] & 0x01),
        "discharge_fet_on": bool(data[20] & 0x02),
        "cell_count": data[21],
        "temperatures": [_temperature(_u16(data, 23 + 2 * i)) for i in range(ntc)],
    }
    if len(ext) >= 9:  # FurTrader "V11": humidity u8, alarm u16, full u16, remain u16, bal-I u16
        values["humidity"] = None if high_capacity or ext[0] > 100 else float(ext[0])
        values["alarm_bits"] = _u16(ext, 1)
        values["balance_current"] = _u16(ext, 7) / 100
    return values


def decode_cell_voltages(data: bytes) -> list[float | None]:
    """Decode register 0x04 data: big-endian u16 millivolts per cell slot -> volts.

    One item per cell, cell 1 first; a value above :data:`CELL_VOLTAGE_RANGE` is ``None``
    (cannot be true); 0 mV stays 0.0 (a broken sense lead or a dead cell: a fault).

    Raises:
        FrameError: odd number of bytes or no cells.
    """
    if len(data) == 0 or len(data) % 2:
        raise FrameError(f"JBD 0x04 data must be a non-empty even length, got {len(data)}")
    low, high = CELL_VOLTAGE_RANGE
    volts = (_u16(data, i) / 1000 for i in range(0, len(data), 2))
    return [v if low <= v <= high else None for v in volts]


def decode_model(data: bytes) -> str:
    """Decode register 0x05 data: the model string (ASCII).

    Raises:
        FrameError: not printable ASCII.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError("JBD 0x05 model is not ASCII") from exc
    if not text.isprintable():
        raise FrameError("JBD 0x05 model has unprintable characters")
    return text


def decode(frame: bytes | bytearray) -> dict[str, Any]:
    """Decode one complete response frame into data-model names.

    0x03 gives the basic-info fields, 0x04 ``cell_voltages`` (and ``cell_count``),
    0x05 ``model``. Raises :class:`FrameError` subclasses for bad input or an
    unsupported register.
    """
    response = parse_frame(frame)
    if response.register == REG_BASIC_INFO:
        return decode_basic_info(response.data)
    if response.register == REG_CELL_VOLTAGES:
        cells = decode_cell_voltages(response.data)
        return {"cell_voltages": cells, "cell_count": len(cells)}
    if response.register == REG_MODEL:
        return {"model": decode_model(response.data)}
    raise FrameError(f"JBD register 0x{response.register:02x} is not decoded")


class FrameAssembler(_framing.FrameAssembler):
    """Reassembles JBD response frames (start 0xDD, length byte at offset 3)."""

    def __init__(self) -> None:
        super().__init__(bytes((START,)), expected_frame_length)


# --- FF AA authentication frames (handled by the BLE module, not the BMS) ----------


def ffaa_frame(command: int, data: bytes = b"") -> bytes:
    """Build ``FF AA cmd len data chk`` with ``chk = (cmd + len + sum(data)) & 0xFF``."""
    if len(data) > 0xFF:
        raise ValueError("FF AA payload too long")
    chk = (command + len(data) + sum(data)) & 0xFF
    return FFAA_START + bytes((command, len(data))) + data + bytes((chk,))


def parse_ffaa(frame: bytes | bytearray) -> tuple[int, bytes]:
    """Check an ``FF AA`` reply and return ``(command, data)``.

    Raises:
        TruncatedFrameError, FrameError, ChecksumError.
    """
    frame = bytes(frame)
    if len(frame) < 5:
        raise TruncatedFrameError(f"FF AA frame too short: {len(frame)} bytes")
    if frame[:2] != FFAA_START:
        raise FrameError("FF AA frame must start with ff aa")
    length = frame[3]
    if len(frame) != length + 5:
        raise TruncatedFrameError(f"FF AA frame declares {length} data bytes, has {len(frame) - 5}")
    data = frame[4 : 4 + length]
    want = (frame[2] + length + sum(data)) & 0xFF
    if frame[-1] != want:
        raise ChecksumError(f"FF AA checksum 0x{frame[-1]:02x}, expected 0x{want:02x}")
    return frame[2], data


def mac_bytes(address: str) -> bytes:
    """``"a4:c1:37:04:2d:be"`` -> ``b"\\xa4\\xc1\\x37\\x04\\x2d\\xbe"`` (display order).

    Raises:
        ValueError: not a 6-byte colon-separated MAC.
    """
    parts = address.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {address!r}")
    return bytes(int(p, 16) for p in parts)


def obfuscate_password(mac: bytes, password: bytes, random_byte: int) -> bytes:
    """Obfuscate a password for FF AA 0x18 / 0x1D.

    ``enc[i] = ((mac[i] ^ pwd[i]) + rnd) & 0xFF``, MAC bytes beyond index 5 taken as
    0x00 (verified against the captures in the fixtures).
    """
    padded = mac + bytes(max(0, len(password) - len(mac)))
    return bytes(((padded[i] ^ b) + random_byte) & 0xFF for i, b in enumerate(password))


def user_password_frame(mac: bytes, password: bytes, random_byte: int) -> bytes:
    """The 0x18 frame carrying the obfuscated user password."""
    return ffaa_frame(FFAA_USER_PASSWORD, obfuscate_password(mac, password, random_byte))


def root_password_frame(mac: bytes, random_byte: int) -> bytes:
    """The 0x1D frame carrying the obfuscated constant root password."""
    return ffaa_frame(FFAA_ROOT_PASSWORD, obfuscate_password(mac, ROOT_PASSWORD, random_byte))


def deobfuscate_password(mac: bytes, encrypted: bytes, random_byte: int) -> bytes:
    """Inverse of :func:`obfuscate_password` (used by the simulator to check a password)."""
    padded = mac + bytes(max(0, len(encrypted) - len(mac)))
    return bytes((((b - random_byte) & 0xFF) ^ padded[i]) for i, b in enumerate(encrypted))
