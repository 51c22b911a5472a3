"""VictronConnect GATT messages (SmartSolar and other Smart products): VREGs carried as CBOR.

Pure code, no I/O. Reverse-engineered, unofficial protocol; facts and sources in
``docs/protocols.md`` section 4.1: timokovanen in Olen/VictronConnect issue #2,
``tRackIT-Systems/pysmartsolar`` ``smartsolar/__init__.py``, ``vvvrrooomm/victron``
``victron_gatt.py``; VREG numbers, types and scales from Victron's own
``victronenergy/gui-v2`` ``velib/inc/velib/ve_regs.h``.

Messages (service 306b0001-b081-4037-83dc-e59fcc3cdfd0; written to 306b0003, answered
and streamed on 306b0003 and 306b0004, split across notifications at any byte):

* ``05 <if> <CBOR array of vreg>``: GET;
* ``06 <if> <CBOR array [vreg, byte string]>``: SET, value little-endian;
* ``08 <if> <CBOR vreg> <CBOR byte string>``: a value (reply or stream);
* ``09 <if> <CBOR vreg> <CBOR uint>``: status, e.g. 1 = unknown or not streamed;
* ``07 <if> ...``: error.

The CBOR items are decoded with the ``cbor2`` library.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from .errors import FrameError

SERVICE = "306b0001-b081-4037-83dc-e59fcc3cdfd0"
CONTROL = "306b0002-b081-4037-83dc-e59fcc3cdfd0"
COMMANDS = "306b0003-b081-4037-83dc-e59fcc3cdfd0"
STREAM = "306b0004-b081-4037-83dc-e59fcc3cdfd0"

GET, SET, ERROR, VALUE, STATUS = 0x05, 0x06, 0x07, 0x08, 0x09
#: VE_REG_CONNECTION_KEEP_ALIVE: the product drops the link when this many ms pass
#: without the register being written again (ve_regs.h)
KEEP_ALIVE = 0x0093
MAX_MESSAGE = 256


@dataclass(frozen=True, slots=True)
class Message:
    """One message: ``kind`` is the first byte, ``vreg`` None for GET, ``value`` raw."""

    kind: int
    interface: int
    vreg: int | None
    value: Any


def encode_get(*vregs: int, interface: int = 0x03) -> bytes:
    """A GET of one or more VREGs, e.g. ``05 03 81 19 ed bb``."""
    return bytes([GET, interface]) + cbor2.dumps(list(vregs))


def encode_set(vreg: int, value: bytes, interface: int = 0x00) -> bytes:
    """A SET: ``06 <if> 82 <vreg> <byte string>`` (value little-endian)."""
    return bytes([SET, interface]) + cbor2.dumps([vreg, value])


def keep_alive(milliseconds: int = 10_000) -> bytes:
    """The keep-alive SET of VREG 0x0093, ``06 00 82 18 93 42 10 27`` for 10 s."""
    return encode_set(KEEP_ALIVE, milliseconds.to_bytes(2, "little"))


def encode_value(vreg: int, value: bytes, interface: int = 0x03) -> bytes:
    """A value message as a device sends it (for the simulator)."""
    return bytes([VALUE, interface]) + cbor2.dumps(vreg) + cbor2.dumps(value)


class VregAssembler:
    """Reassembles messages from notifications of 306b0003 and 306b0004 (one shared buffer).

    :meth:`feed` returns complete messages; a byte that cannot start a message is skipped
    and counted in :attr:`skipped`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while self._buffer:
            try:
                message, used = parse_one(bytes(self._buffer))
            except IncompleteMessage:
                if len(self._buffer) > MAX_MESSAGE:
                    self.skipped += 1
                    del self._buffer[0]
                    continue
                break
            except FrameError:
                self.skipped += 1
                del self._buffer[0]
                continue
            del self._buffer[:used]
            out.append(message)
        return out


class IncompleteMessage(Exception):
    """More bytes are needed to finish the message."""


def parse_one(data: bytes) -> tuple[Message, int]:
    """Parse the message at the start of ``data``: ``(message, bytes used)``.

    Raises:
        FrameError: not a message.
        IncompleteMessage: more bytes are needed.
    """
    if len(data) < 2:
        raise IncompleteMessage
    kind, interface = data[0], data[1]
    if kind not in (GET, SET, ERROR, VALUE, STATUS):
        raise FrameError(f"not a VictronConnect message type: 0x{kind:02x}")
    decoder = cbor2.CBORDecoder(io.BytesIO(data[2:]))
    try:
        first = decoder.decode()
        if kind in (GET, SET):
            used = decoder.fp.tell()
            if kind == SET and isinstance(first, list) and len(first) == 2 and isinstance(first[0], int):
                return Message(kind, interface, first[0], first[1]), 2 + used
            if kind == GET and isinstance(first, list):
                return Message(kind, interface, None, first), 2 + used
            raise FrameError("malformed GET/SET")
        if not isinstance(first, int) or not 0 <= first <= 0xFFFF:
            raise FrameError(f"expected a VREG number, got {first!r}")
        value = decoder.decode()
        return Message(kind, interface, first, value), 2 + decoder.fp.tell()
    except cbor2.CBORDecodeEOF:
        raise IncompleteMessage from None
    except cbor2.CBORDecodeError as exc:
        raise FrameError(f"bad CBOR: {exc}") from None


def parse_message(data: bytes) -> Message:
    """Parse exactly one complete message.

    Raises:
        FrameError: malformed, truncated, or trailing bytes.
    """
    try:
        message, used = parse_one(data)
    except IncompleteMessage:
        raise FrameError("truncated VictronConnect message") from None
    if used != len(data):
        raise FrameError(f"{len(data) - used} bytes after the message")
    return message


def _unsigned(scale: float) -> Callable[[bytes], float]:
    return lambda raw: round(int.from_bytes(raw, "little") * scale, 6)


def _signed(scale: float) -> Callable[[bytes], float]:
    return lambda raw: round(int.from_bytes(raw, "little", signed=True) * scale, 6)


def _kelvin(raw: bytes) -> float:
    return round(int.from_bytes(raw, "little") * 0.01 - 273.15, 2)


#: VREG -> (data-model name, byte length or None for any, NA value, converter);
#: types and scales from ve_regs.h
VREGS: dict[int, tuple[str, int | None, int | None, Callable[[bytes], Any]]] = {
    0xED8D: ("battery_voltage", 2, 0x7FFF, _signed(0.01)),
    0xED8F: ("battery_current", 2, 0x7FFF, _signed(0.1)),
    0xED8E: ("charge_power", 2, 0x7FFF, _signed(1.0)),
    0xEDBB: ("pv_voltage", 2, 0xFFFF, _unsigned(0.01)),
    0xEDBC: ("pv_power", 4, 0xFFFFFFFF, _unsigned(0.01)),
    0xEDBD: ("pv_current", 2, 0xFFFF, _unsigned(0.1)),
    0xEDAD: ("load_current", 2, 0xFFFF, _unsigned(0.1)),
    0xEDD3: ("yield_today", 2, 0xFFFF, _unsigned(10.0)),  # 0.01 kWh -> Wh
    0xEDDA: ("error_code", 1, None, lambda raw: raw[0]),
    0xEDDB: ("controller_temperature", 2, 0x7FFF, _signed(0.01)),
    0xEDEC: ("battery_temperature", 2, 0xFFFF, _kelvin),
    0x0201: ("charge_state_code", 1, 0xFF, lambda raw: raw[0]),
    0x0120: ("uptime", 4, None, _unsigned(1.0)),
}


def value_of(message: Message) -> tuple[str, Any] | None:
    """``(data-model name, value)`` of a VALUE message for a known VREG, else None.

    A "not available" raw value gives None as the value.

    Raises:
        FrameError: a known VREG with a value of the wrong type or length.
    """
    if message.kind != VALUE or message.vreg is None or message.vreg not in VREGS:
        return None
    name, length, not_available, convert = VREGS[message.vreg]
    raw = message.value
    if not isinstance(raw, bytes) or (length is not None and len(raw) != length):
        raise FrameError(f"VREG 0x{message.vreg:04X}: expected {length} bytes, got {raw!r}")
    if not_available is not None and int.from_bytes(raw, "little") == not_available:
        return name, None
    return name, convert(raw)
