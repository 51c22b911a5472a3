"""VE.Direct text protocol (Victron serial, 19200 8N1): block framing and data-model mapping.

Pure code, no I/O: :class:`BlockParser` takes bytes as they come off the serial port and
returns checksum-valid blocks; :func:`to_values` maps a block to data-model names.

Protocol facts (source: Victron "VE.Direct Protocol" 3.33, as summarised with
cross-checks in ``docs/protocols.md`` section 5; karioja/vedirect ``vedirect/vedirect.py``
for the HEX interleaving):

* a field is ``\\r\\n<label>\\t<value>``; a block ends with ``\\r\\nChecksum\\t<one byte>``;
  the sum of every byte of the block, from its leading ``\\r\\n`` through the checksum
  byte, is 0 modulo 256; the checksum byte may be any value, including ``\\r``, ``\\n``,
  ``:`` or ``\\t``;
* asynchronous HEX frames ``:<hex digits>\\n`` may appear between fields and are not
  part of the text checksum; outside "reading the checksum byte", ``:`` starts one;
* a BMV sends two blocks per second (``V`` ... ``FW``, then ``H1`` ... ``H18``), each with
  its own checksum; :func:`merge_pairs` joins them;
* the first block of a capture is usually cut off: it fails the checksum and is dropped.

Product names for ``PID`` come from victron-ble's product table (``MODEL_ID_MAPPING``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from victron_ble.devices.base import MODEL_ID_MAPPING

from .errors import FrameError

CHECKSUM_LABEL = b"\r\nChecksum\t"
#: no valid block is longer than this (22 fields of at most 9 + 33 characters)
MAX_BLOCK = 1024
MAX_HEX = 1024

Block = dict[str, str]


@dataclass
class ParserStats:
    """What the parser has seen: valid blocks, failed checksums, HEX frames, skipped bytes."""

    blocks: int = 0
    bad_checksums: int = 0
    malformed: int = 0
    hex_frames: int = 0
    skipped_bytes: int = 0


class BlockParser:
    """Incremental VE.Direct text-block parser: :meth:`feed` bytes, get complete valid blocks.

    A block that fails its checksum or is malformed is counted in :attr:`stats` and
    dropped, never returned. Values stay text (labels are case-sensitive).
    """

    def __init__(self) -> None:
        self.stats = ParserStats()
        self._block = bytearray()
        self._hex = bytearray()
        self._state = "text"  # text | hex | checksum

    def feed(self, data: bytes) -> list[Block]:
        out: list[Block] = []
        for byte in data:
            if self._state == "checksum":
                self._block.append(byte)
                self._finish(out)
                self._state = "text"
            elif self._state == "hex":
                if byte == 0x0A:
                    self._state = "text"
                    self.stats.hex_frames += 1
                    self._hex.clear()
                elif len(self._hex) >= MAX_HEX:
                    self.stats.skipped_bytes += len(self._hex)
                    self._hex.clear()
                    self._state = "text"
                else:
                    self._hex.append(byte)
            elif byte == 0x3A:  # ':' starts a HEX frame
                self._state = "hex"
            else:
                self._block.append(byte)
                if self._block.endswith(CHECKSUM_LABEL):
                    self._state = "checksum"
                elif len(self._block) > MAX_BLOCK:
                    self.stats.skipped_bytes += len(self._block)
                    self._block.clear()
        return out

    def _finish(self, out: list[Block]) -> None:
        raw = bytes(self._block)
        self._block.clear()
        start = raw.find(b"\r\n")
        if start < 0:
            self.stats.malformed += 1
            return
        # a partial block before the first "\r\n" belongs to nothing we can check
        self.stats.skipped_bytes += start
        raw = raw[start:]
        if sum(raw) % 256:
            self.stats.bad_checksums += 1
            return
        try:
            block = parse_block(raw)
        except FrameError:
            self.stats.malformed += 1
            return
        self.stats.blocks += 1
        out.append(block)


def parse_block(raw: bytes) -> Block:
    """Fields of one complete block (checksum already verified), without ``Checksum``.

    Raises:
        FrameError: not ASCII, or a line that is not ``label<TAB>value``.
    """
    body = raw[: raw.rfind(CHECKSUM_LABEL)]
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("VE.Direct block is not ASCII") from None
    block: Block = {}
    for line in text.split("\r\n")[1:]:
        label, tab, value = line.partition("\t")
        if not tab or not label or not label.isprintable():
            raise FrameError(f"VE.Direct line without label and tab: {line!r}")
        block[label] = value
    if not block:
        raise FrameError("empty VE.Direct block")
    return block


def hex_frame_ok(frame: str) -> bool:
    """Check a HEX frame ``:<cmd nibble><byte pairs>``: (cmd + sum of bytes) & 0xFF == 0x55."""
    body = frame.strip().lstrip(":")
    if len(body) < 3 or len(body) % 2 == 0:
        return False
    try:
        total = int(body[0], 16) + sum(bytes.fromhex(body[1:]))
    except ValueError:
        return False
    return total & 0xFF == 0x55


def is_history(block: Block) -> bool:
    """A BMV's second block (``H1`` ... ``H18``) carries no ``V``/``PID``."""
    return "H1" in block and "V" not in block and "PID" not in block


def merge_pairs(blocks: Iterable[Block]) -> Iterator[Block]:
    """Join each BMV history block to the main block before it; other blocks pass through.

    A history block without a main block before it is dropped (it cannot be attributed).
    """
    pending: Block | None = None
    for block in blocks:
        if is_history(block):
            if pending is not None:
                yield pending | block
                pending = None
            continue
        if pending is not None:
            yield pending
        pending = block
    if pending is not None:
        yield pending


# --- mapping to the data model ---------------------------------------------------

#: VE.Direct charger/inverter state (CS), as in the protocol document
DEVICE_STATES = {
    0: "off",
    1: "low_power",
    2: "fault",
    3: "bulk",
    4: "absorption",
    5: "float",
    6: "storage",
    7: "equalize",
    9: "inverting",
    11: "power_supply",
    245: "starting",
    246: "repeated_absorption",
    247: "recondition",
    248: "battery_safe",
    # not in the VE.Direct document; a Smart BatteryProtect's Instant Readout state when
    # its output is on (victron-ble ``devices/base.py`` OperationMode.ACTIVE, and the
    # captured advert in its ``tests/test_smart_battery_protect.py``)
    249: "active",
    252: "external_control",
}


def _int(value: str) -> int:
    return int(value, 0) if value.lower().startswith("0x") else int(value)


def _scaled(factor: float) -> Callable[[str], float]:
    return lambda value: round(_int(value) * factor, 6)


def _on(value: str) -> bool:
    if value.upper() not in ("ON", "OFF"):
        raise ValueError(f"expected ON or OFF, got {value!r}")
    return value.upper() == "ON"


def _ttg(value: str) -> float | None:
    minutes = _int(value)
    return None if minutes < 0 else minutes * 60.0


def _consumed(value: str) -> float:
    """mAh, negative when drawn (CE, H1-H3, H6) -> Ah drawn, positive."""
    return round(-_int(value) / 1000, 6)


def _text(value: str) -> str:
    return value.strip()


_MILLI = _scaled(0.001)
_CENTI_KWH = _scaled(10.0)  # 0.01 kWh -> Wh

#: label -> (data-model name, converter); the unit is in the converter
COMMON: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PID": ("product_id", _text),
    "FW": ("firmware", _text),
    "SER#": ("serial", _text),
    "ERR": ("error_code", _int),
    "AR": ("alarm_bits", _int),
    "WARN": ("warning_bits", _int),
    "OR": ("off_reason_bits", _int),
    "MODE": ("device_mode", _int),
}

BATTERY_MONITOR: dict[str, tuple[str, Callable[[str], Any]]] = {
    "V": ("voltage", _MILLI),
    "VS": ("starter_voltage", _MILLI),
    "VM": ("midpoint_voltage", _MILLI),
    "DM": ("midpoint_deviation", _scaled(0.1)),
    "I": ("current", _MILLI),
    "P": ("power", float),
    "CE": ("consumed_ah", _consumed),
    "SOC": ("soc", _scaled(0.1)),
    "TTG": ("time_to_go", _ttg),
    "T": ("battery_temperature", float),
    "Alarm": ("alarm_on", _on),
    "Relay": ("relay_on", _on),
    "BMV": ("model", _text),
    "H1": ("deepest_discharge_ah", _consumed),
    "H2": ("last_discharge_ah", _consumed),
    "H3": ("average_discharge_ah", _consumed),
    "H4": ("cycles", float),
    "H5": ("full_discharges", float),
    "H6": ("cumulative_ah_drawn", _consumed),
    "H7": ("min_voltage", _MILLI),
    "H8": ("max_voltage", _MILLI),
    "H9": ("seconds_since_full_charge", float),
    "H10": ("automatic_syncs", float),
    "H11": ("low_voltage_alarms", float),
    "H12": ("high_voltage_alarms", float),
    "H15": ("min_starter_voltage", _MILLI),
    "H16": ("max_starter_voltage", _MILLI),
    "H17": ("discharged_energy", _CENTI_KWH),
    "H18": ("charged_energy", _CENTI_KWH),
}

CHARGER: dict[str, tuple[str, Callable[[str], Any]]] = {
    "V": ("battery_voltage", _MILLI),
    "I": ("battery_current", _MILLI),
    "VPV": ("pv_voltage", _MILLI),
    "PPV": ("pv_power", float),
    "CS": ("charge_state_code", _int),
    "MPPT": ("mppt_mode", _int),
    "LOAD": ("load_on", _on),
    "IL": ("load_current", _MILLI),
    "T": ("battery_temperature", float),
    "H19": ("yield_total", _CENTI_KWH),
    "H20": ("yield_today", _CENTI_KWH),
    "H21": ("max_charge_power_today", float),
    "H22": ("yield_yesterday", _CENTI_KWH),
    "H23": ("max_charge_power_yesterday", float),
    "HSDS": ("day_sequence", _int),
}

INVERTER: dict[str, tuple[str, Callable[[str], Any]]] = {
    "V": ("battery_voltage", _MILLI),
    "CS": ("device_state_code", _int),
    "AC_OUT_V": ("ac_out_voltage", _scaled(0.01)),
    "AC_OUT_I": ("ac_out_current", _scaled(0.1)),
    "AC_OUT_S": ("ac_out_apparent_power", float),
}


#: Product-name words -> kind, tried in this order on the name victron-ble's product
#: table gives a ``PID`` (the table is Victron's product id list): a block that lacks
#: every label that identifies a kind is still identified by the product that sent it.
PRODUCT_WORDS: tuple[tuple[str, str], ...] = (
    ("MPPT", "charger"),
    ("SmartSolar", "charger"),
    ("BlueSolar", "charger"),
    ("BMV", "battery"),
    ("SmartShunt", "battery"),
    ("Inverter", "inverter"),
)


def kind_of_product(pid: str) -> str | None:
    """``battery``, ``charger`` or ``inverter`` for a ``PID`` value (``0xA042``), from the
    product's name in victron-ble's table; None for an unknown or other product."""
    try:
        name = MODEL_ID_MAPPING.get(int(pid, 16))
    except ValueError:
        return None
    if name is None:
        return None
    return next((kind for word, kind in PRODUCT_WORDS if word in name), None)


def kind_of(block: Block) -> str:
    """``battery`` (BMV/SmartShunt), ``charger`` (MPPT) or ``inverter`` (Phoenix).

    By the labels only that kind sends; failing that, by the product its ``PID`` names
    (:func:`kind_of_product`).

    Raises:
        FrameError: a block with neither such labels nor a known product id.
    """
    if any(label in block for label in ("SOC", "CE", "TTG", "BMV", "H1")):
        return "battery"
    if any(label in block for label in ("VPV", "PPV", "H20", "MPPT")):
        return "charger"
    if "AC_OUT_V" in block:
        return "inverter"
    kind = kind_of_product(block.get("PID", ""))
    if kind is not None:
        return kind
    raise FrameError(
        f"VE.Direct block of an unknown device kind (PID {block.get('PID', 'absent')}, labels {sorted(block)[:8]})"
    )


def to_values(block: Block) -> tuple[str, dict[str, Any]]:
    """Map a (merged) block to ``(kind, values)`` in data-model names and SI units.

    Labels this module does not know are left out. ``charge_power`` (MPPT) is
    ``battery_voltage × battery_current``; ``charge_state`` is the text of ``CS``.

    Raises:
        FrameError: unknown device kind, or a value that does not parse.
    """
    kind = kind_of(block)
    table = COMMON | {"battery": BATTERY_MONITOR, "charger": CHARGER, "inverter": INVERTER}[kind]
    values: dict[str, Any] = {}
    for label, text in block.items():
        entry = table.get(label)
        if entry is None:
            continue
        name, convert = entry
        try:
            values[name] = convert(text)
        except ValueError:
            raise FrameError(f"VE.Direct {label}: bad value {text!r}") from None
    if kind == "charger":
        if "charge_state_code" in values:
            code = values["charge_state_code"]
            values["charge_state"] = DEVICE_STATES.get(code, f"unknown_{code}")
        if "battery_voltage" in values and "battery_current" in values:
            values["charge_power"] = round(values["battery_voltage"] * values["battery_current"], 3)
    if kind == "inverter" and "device_state_code" in values:
        code = values["device_state_code"]
        values["device_state"] = DEVICE_STATES.get(code, f"unknown_{code}")
    pid = values.get("product_id")
    if pid is not None and "model" not in values:
        try:
            values["model"] = MODEL_ID_MAPPING.get(int(pid, 16), pid)
        except ValueError:
            values["model"] = pid
    if kind == "battery" and "power" not in values and "voltage" in values and "current" in values:
        values["power"] = round(values["voltage"] * values["current"], 3)
    return kind, values
