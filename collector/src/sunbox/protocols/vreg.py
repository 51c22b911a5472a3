"""VictronConnect GATT messages (SmartSolar and other Smart products): VREGs carried as CBOR.

Pure code, no I/O. Reverse-engineered, unofficial protocol; facts and sources in
``docs/protocols.md`` section 4.1: timokovanen in Olen/VictronConnect issue #2,
``tRackIT-Systems/pysmartsolar`` ``smartsolar/__init__.py``, ``vvvrrooomm/victron``
``victron_gatt.py``; VREG numbers, types and scales from Victron's own
``victronenergy/gui-v2`` ``velib/inc/velib/ve_regs.h``, kept in
:mod:`sunbox.protocols.vreg_registers`.

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
from dataclasses import dataclass
from typing import Any

import cbor2

from .errors import FrameError
from .vreg_registers import REGISTERS, decode_unknown

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


def value_of(message: Message, names: dict[int, str] | None = None) -> tuple[str, Any] | None:
    """``(data-model name, value)`` of a VALUE message for a known VREG, else None.

    ``names`` maps VREGs to the data-model names of one device family
    (:data:`sunbox.protocols.vreg_registers.FAMILIES`); without it every known register
    (:data:`~sunbox.protocols.vreg_registers.REGISTERS`) gives its default name. A "not
    available" raw value gives None as the value.

    Raises:
        FrameError: a known VREG with a value of the wrong type or length.
    """
    if message.kind != VALUE or message.vreg is None:
        return None
    register = REGISTERS.get(message.vreg)
    if register is None or (names is not None and message.vreg not in names):
        return None
    raw = message.value
    if not isinstance(raw, bytes):
        raise FrameError(f"VREG 0x{message.vreg:04X}: expected a byte string, got {raw!r}")
    name = register.name if names is None else names[message.vreg]
    return name, register.decode(raw)


def describe(message: Message) -> dict[str, Any]:
    """A JSON-ready description of any message (what ``sunbox decode vreg`` prints).

    Always: ``type``, ``interface``, ``vreg`` (``"0xEDBB"``) and ``raw`` (hex of a byte
    string value, else the CBOR value itself). For a VALUE of a known register also
    ``register`` (the ``ve_regs.h`` name), ``name`` (data-model name), ``value`` and
    ``unit``; for a VALUE of an unknown register, ``value`` is the bytes as an unsigned
    little-endian integer (:func:`~sunbox.protocols.vreg_registers.decode_unknown`).

    Raises:
        FrameError: a known VREG with a value of the wrong type or length.
    """
    out: dict[str, Any] = {
        "type": f"0x{message.kind:02x}",
        "interface": message.interface,
        "vreg": None if message.vreg is None else f"0x{message.vreg:04X}",
        "raw": message.value.hex() if isinstance(message.value, bytes) else message.value,
    }
    if message.kind != VALUE or message.vreg is None or not isinstance(message.value, bytes):
        return out
    register = REGISTERS.get(message.vreg)
    if register is None:
        out["value"] = decode_unknown(message.value)
        return out
    out.update(register=register.label, name=register.name, value=register.decode(message.value))
    if register.unit:
        out["unit"] = register.unit
    return out
