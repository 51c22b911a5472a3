"""Victron Instant Readout records (decrypted) to data-model values. Pure: no I/O.

Source of every layout: Victron, "Extra manufacturer data", 2022-12-14 (a copy:
``docs/victron-extra-manufacturer-data-2022-12-14.pdf`` in the shared notes), except
Orion XS (record 0x0F), which that document predates: its layout is victron-ble's
(``keshavdv/victron-ble`` ``victron_ble/devices/orion_xs.py``, from
Fabian-Schmidt/esphome-victron_ble#54, reverse engineered).

A record's fields are bit fields, least significant bit first, numbered from bit 32 of
the record (bits 0-31 are the record type, the nonce and the key check byte, which stay
in clear); :func:`decode_record` takes the decrypted bytes after them. Rules the
document sets, kept here:

* a field's "not available" (NA) value is published as ``None``;
* records may grow, and a record may be shorter than its table: a field that does not
  fit in the bytes received is absent (``None``), never read from padding;
* unknown codes (device state, charger error, off reason, alarm, AC input, balancer,
  monitor mode) never refuse a record: the number goes out as ``*_code`` (or as a
  ``*_bits`` mask) and the text as ``unknown_<code>``.

Two corrections to the document, each shown by a real capture: Smart BatteryProtect's
table numbers its fields from bit 8, but they start at bit 32 like every other record's
(victron-ble ``tests/test_smart_battery_protect.py``: input and output voltage 13.07 V
only at bit 32); Smart Battery Sense (product ids 0xA3A4, 0xA3A5) sends a battery
monitor record with its temperature on the aux input.

Units out: V, A, W, VA, Wh (the record's 0.01 kWh yield × 10), °C, %, s (the
record's minutes × 60); ``consumed_ah`` is Ah drawn, ≥ 0 (the record holds
"−consumed Ah"). Signs: battery current + = charging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .vedirect import DEVICE_STATES

#: Record type -> (data-model kind, Victron's name).
RECORD_TYPES: dict[int, tuple[str, str]] = {
    0x00: ("test", "Test record"),
    0x01: ("charger", "Solar Charger"),
    0x02: ("battery", "Battery Monitor"),
    0x03: ("inverter", "Inverter"),
    0x04: ("dcdc", "DC/DC converter"),
    0x05: ("battery", "SmartLithium"),
    0x06: ("inverter", "Inverter RS"),
    0x07: ("system", "GX-Device"),
    0x08: ("charger", "AC Charger"),
    0x09: ("protect", "Smart Battery Protect"),
    0x0A: ("battery", "(Lynx Smart) BMS"),
    0x0B: ("inverter", "Multi RS"),
    0x0C: ("inverter", "VE.Bus"),
    0x0D: ("dc_meter", "DC Energy Meter"),
    0x0F: ("dcdc", "Orion XS"),
}

#: VE_REG_AC_IN_ACTIVE (Multi RS, VE.Bus): 0 AC in 1, 1 AC in 2, 2 not connected, 3 NA.
AC_IN_STATES = {0: "ac_in_1", 1: "ac_in_2", 2: "not_connected"}
#: VE_REG_BALANCER_STATUS (SmartLithium); names as victron-ble ``smart_lithium.py``.
BALANCER_STATES = {0: "unknown", 1: "balanced", 2: "balancing", 3: "imbalance"}
#: VE_REG_DC_OUTPUT_STATUS (Smart BatteryProtect); victron-ble ``smart_battery_protect.py``.
OUTPUT_STATES = {0: "shutdown", 1: "on", 4: "off"}
#: VE_REG_ALARM_NOTIFICATION (VE.Bus): 0 none, 1 warning, 2 alarm.
ALARM_LEVELS = {0: "none", 1: "warning", 2: "alarm"}
#: VE_REG_BMV_MONITOR_MODE (DC energy meter); victron-ble ``dc_energy_meter.py`` MeterType.
MONITOR_MODES = {
    -9: "solar_charger",
    -8: "wind_charger",
    -7: "shaft_generator",
    -6: "alternator",
    -5: "fuel_cell",
    -4: "water_generator",
    -3: "dc_dc_charger",
    -2: "ac_charger",
    -1: "generic_source",
    0: "battery_monitor",
    1: "generic_load",
    2: "electric_drive",
    3: "fridge",
    4: "water_pump",
    5: "bilge_pump",
    6: "dc_system",
    7: "inverter",
    8: "water_heater",
}

KELVIN = 273.15


class Bits:
    """Little-endian bit fields of a record, each checked against the bytes received."""

    def __init__(self, payload: bytes) -> None:
        self._value = int.from_bytes(payload, "little")
        self._size = len(payload) * 8

    def raw(self, start: int, width: int) -> int | None:
        """The unsigned field at record bit ``start`` (32 = first decrypted bit), or None
        when the record is too short to hold it."""
        offset = start - 32
        if offset < 0 or offset + width > self._size:
            return None
        return (self._value >> offset) & ((1 << width) - 1)


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value & (1 << (width - 1)) else value


@dataclass(frozen=True, slots=True)
class F:
    """One numeric field: ``value = raw × scale + offset``; ``na`` is the raw NA value."""

    name: str
    start: int
    width: int
    scale: float = 1.0
    na: int | None = None
    signed: bool = False
    offset: float = 0.0
    #: integer fields (codes, masks) are published as ints, the rest as floats
    integer: bool = False

    def read(self, bits: Bits) -> Any:
        raw = bits.raw(self.start, self.width)
        if raw is None or raw == self.na:
            return None
        value = _signed(raw, self.width) if self.signed else raw
        if self.integer:
            return value
        return round(value * self.scale + self.offset, 6)


def _code(
    name: str, start: int, width: int, names: dict[int, str], na: int | None, signed: bool = False
) -> Callable[[Bits], dict[str, Any]]:
    """A coded state: ``<name>`` text (``unknown_<n>`` for a code not in ``names``) and
    ``<name>_code``; both None for NA or a record too short."""

    def read(bits: Bits) -> dict[str, Any]:
        raw = bits.raw(start, width)
        if raw is None or raw == na:
            return {name: None, f"{name}_code": None}
        code = _signed(raw, width) if signed else raw
        return {name: names.get(code, f"unknown_{code}"), f"{name}_code": code}

    return read


def _fields(*fields: F) -> Callable[[Bits], dict[str, Any]]:
    return lambda bits: {f.name: f.read(bits) for f in fields}


def _aux(start: int, starter: bool, midpoint: bool) -> Callable[[Bits], dict[str, Any]]:
    """The battery monitor's and DC meter's aux input (bits start..start+15) and its mode
    (2 bits after it): 0 starter voltage (signed 0.01 V), 1 midpoint voltage (0.01 V), 2
    temperature (0.01 K; 0xFFFF NA), 3 none."""

    def read(bits: Bits) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if starter:
            out["starter_voltage"] = None
        if midpoint:
            out["midpoint_voltage"] = None
        out["battery_temperature"] = None
        mode, raw = bits.raw(start + 16, 2), bits.raw(start, 16)
        if mode is None or raw is None:
            return out
        if mode == 0 and starter:
            out["starter_voltage"] = round(_signed(raw, 16) * 0.01, 6)
        elif mode == 1 and midpoint:
            out["midpoint_voltage"] = round(raw * 0.01, 6)
        elif mode == 2 and raw != 0xFFFF:
            out["battery_temperature"] = round(raw * 0.01 - KELVIN, 2)
        return out

    return read


def _state(start: int, name: str = "device_state") -> Callable[[Bits], dict[str, Any]]:
    return _code(name, start, 8, DEVICE_STATES, 0xFF)


_ERROR = F("error_code", 40, 8, na=0xFF, integer=True)
_YIELD = 10.0  # 0.01 kWh -> Wh


def _celsius(name: str, start: int) -> F:
    """A 7-bit temperature: record value − 40 °C, 0x7F not available."""
    return F(name, start, 7, 1.0, 0x7F, offset=-40.0)


#: Record type -> the readers of its fields, in the document's order.
LAYOUTS: dict[int, tuple[Callable[[Bits], dict[str, Any]], ...]] = {
    0x00: (
        _fields(
            F("uptime", 32, 30, na=0x3FFFFFFF),
            _celsius("temperature", 62),
        ),
    ),
    0x01: (
        _state(32, "charge_state"),
        _fields(
            _ERROR,
            F("battery_voltage", 48, 16, 0.01, 0x7FFF, signed=True),
            F("battery_current", 64, 16, 0.1, 0x7FFF, signed=True),
            F("yield_today", 80, 16, _YIELD, 0xFFFF),
            F("pv_power", 96, 16, 1.0, 0xFFFF),
            F("load_current", 112, 9, 0.1, 0x1FF),
        ),
    ),
    0x02: (
        _fields(
            F("time_to_go", 32, 16, 60.0, 0xFFFF),
            F("voltage", 48, 16, 0.01, 0x7FFF, signed=True),
            F("alarm_bits", 64, 16, integer=True),
        ),
        _aux(80, starter=True, midpoint=True),
        _fields(
            F("current", 98, 22, 0.001, 0x3FFFFF, signed=True),
            F("consumed_ah", 120, 20, 0.1, 0xFFFFF),
            F("soc", 140, 10, 0.1, 0x3FF),
        ),
    ),
    0x03: (
        _state(32),
        _fields(
            F("alarm_bits", 40, 16, integer=True),
            F("battery_voltage", 56, 16, 0.01, 0x7FFF, signed=True),
            F("ac_out_apparent_power", 72, 16, 1.0, 0xFFFF),
            F("ac_out_voltage", 88, 15, 0.01, 0x7FFF),
            F("ac_out_current", 103, 11, 0.1, 0x7FF),
        ),
    ),
    0x04: (
        _state(32),
        _fields(
            _ERROR,
            F("input_voltage", 48, 16, 0.01, 0xFFFF),
            F("output_voltage", 64, 16, 0.01, 0x7FFF, signed=True),
            F("off_reason_bits", 80, 32, integer=True),
        ),
    ),
    0x05: (
        _fields(
            F("bms_bits", 32, 32, integer=True),
            F("error_bits", 64, 16, integer=True),
        ),
        lambda bits: {
            "cell_voltages": [
                None if (raw := bits.raw(80 + 7 * i, 7)) is None or raw == 0x7F else round((260 + raw) / 100, 2)
                for i in range(8)
            ]
        },
        _fields(F("voltage", 136, 12, 0.01, 0xFFF)),
        _code("balancer_state", 148, 4, BALANCER_STATES, 0xF),
        _fields(_celsius("battery_temperature", 152)),
    ),
    0x06: (
        _state(32),
        _fields(
            _ERROR,
            F("battery_voltage", 48, 16, 0.01, 0x7FFF, signed=True),
            F("battery_current", 64, 16, 0.1, 0x7FFF, signed=True),
            F("pv_power", 80, 16, 1.0, 0xFFFF),
            F("yield_today", 96, 16, _YIELD, 0xFFFF),
            F("ac_out_power", 112, 16, 1.0, 0x7FFF, signed=True),
        ),
    ),
    0x07: (
        _fields(
            F("battery_voltage", 32, 16, 0.01, 0xFFFF),
            F("pv_power", 48, 20, 1.0, 0xFFFFF),
            F("soc", 68, 7, 1.0, 0x7F),
            F("battery_power", 75, 21, 1.0, 0x0FFFFF, signed=True),
            F("dc_power", 96, 21, 1.0, 0x0FFFFF, signed=True),
        ),
    ),
    0x08: (
        _state(32, "charge_state"),
        _fields(
            _ERROR,
            F("battery_voltage", 48, 13, 0.01, 0x1FFF),
            F("battery_current", 61, 11, 0.1, 0x7FF),
            F("battery_voltage_2", 72, 13, 0.01, 0x1FFF),
            F("battery_current_2", 85, 11, 0.1, 0x7FF),
            F("battery_voltage_3", 96, 13, 0.01, 0x1FFF),
            F("battery_current_3", 109, 11, 0.1, 0x7FF),
            _celsius("battery_temperature", 120),
            F("ac_in_current", 127, 9, 0.1, 0x1FF),  # VE_REG_AC_ACTIVE_INPUT_L1_CURRENT
        ),
    ),
    0x09: (
        _state(32),
        _code("output_state", 40, 8, OUTPUT_STATES, 0xFF),
        _fields(
            F("error_code", 48, 8, na=0xFF, integer=True),
            F("alarm_bits", 56, 16, integer=True),
            F("warning_bits", 72, 16, integer=True),
            F("input_voltage", 88, 16, 0.01, 0x7FFF, signed=True),
            F("output_voltage", 104, 16, 0.01, 0xFFFF),
            F("off_reason_bits", 120, 32, integer=True),
        ),
    ),
    0x0A: (
        _fields(
            F("error_code", 32, 8, integer=True),  # VE_REG_BMS_ERROR
            F("time_to_go", 40, 16, 60.0, 0xFFFF),
            F("voltage", 56, 16, 0.01, 0x7FFF, signed=True),
            F("current", 72, 16, 0.1, 0x7FFF, signed=True),
            F("io_bits", 88, 16, integer=True),  # VE_REG_BMS_IO
            F("alarm_bits", 104, 18, integer=True),  # VE_REG_BMS_WARNINGS_ALARMS
            F("soc", 122, 10, 0.1, 0x3FF),
            F("consumed_ah", 132, 20, 0.1, 0xFFFFF),
            _celsius("battery_temperature", 152),
        ),
    ),
    0x0B: (
        _state(32),
        _fields(
            _ERROR,
            F("battery_current", 48, 16, 0.1, 0x7FFF, signed=True),
            F("battery_voltage", 64, 14, 0.01, 0x3FFF),
        ),
        _code("ac_in_state", 78, 2, AC_IN_STATES, 0x3),
        _fields(
            F("ac_in_power", 80, 16, 1.0, 0x7FFF, signed=True),
            F("ac_out_power", 96, 16, 1.0, 0x7FFF, signed=True),
            F("pv_power", 112, 16, 1.0, 0xFFFF),
            F("yield_today", 128, 16, _YIELD, 0xFFFF),
        ),
    ),
    0x0C: (
        _state(32),
        _fields(
            F("error_code", 40, 8, na=0xFF, integer=True),  # VE_REG_VEBUS_VEBUS_ERROR
            F("battery_current", 48, 16, 0.1, 0x7FFF, signed=True),
            F("battery_voltage", 64, 14, 0.01, 0x3FFF),
        ),
        _code("ac_in_state", 78, 2, AC_IN_STATES, 0x3),
        _fields(
            F("ac_in_power", 80, 19, 1.0, 0x3FFFF, signed=True),
            F("ac_out_power", 99, 19, 1.0, 0x3FFFF, signed=True),
        ),
        _code("alarm_level", 118, 2, ALARM_LEVELS, 0x3),
        _fields(
            _celsius("battery_temperature", 120),
            F("soc", 127, 7, 1.0, 0x7F),
        ),
    ),
    0x0D: (
        _code("monitor_mode", 32, 16, MONITOR_MODES, None, signed=True),
        _fields(
            F("voltage", 48, 16, 0.01, 0x7FFF, signed=True),
            F("alarm_bits", 64, 16, integer=True),
        ),
        _aux(80, starter=True, midpoint=False),
        _fields(F("current", 98, 22, 0.001, 0x3FFFFF, signed=True)),
    ),
    0x0F: (
        _state(32),
        _fields(
            _ERROR,
            F("output_voltage", 48, 16, 0.01, 0xFFFF),
            F("output_current", 64, 16, 0.1, 0xFFFF),
            F("input_voltage", 80, 16, 0.01, 0xFFFF),
            F("input_current", 96, 16, 0.1, 0xFFFF),
            F("off_reason_bits", 112, 32, integer=True),
        ),
    ),
}


def decode_record(record_type: int, payload: bytes) -> tuple[str, dict[str, Any]]:
    """``(kind, values)`` of one decrypted record.

    Args:
        record_type: the record type byte (0x00-0x0D, 0x0F).
        payload: the decrypted bytes after the record's 32-bit header, only as many as
            were received (no cipher padding).

    Returns:
        The data-model kind (``RECORD_TYPES``) and every field of the record's layout,
        ``None`` where the record says "not available" or is too short to hold it. A
        battery, DC meter or Lynx gets ``power`` = ``voltage × current``; a charger
        ``charge_power`` = Σ battery voltage × current over its outputs.

    Raises:
        KeyError: a record type without a known layout (0x0E, 0x10-0xFF).
    """
    kind, _name = RECORD_TYPES[record_type]
    bits = Bits(payload)
    values: dict[str, Any] = {}
    for reader in LAYOUTS[record_type]:
        values.update(reader(bits))
    if kind in ("battery", "dc_meter") and values.get("voltage") is not None and values.get("current") is not None:
        values["power"] = round(values["voltage"] * values["current"], 3)
    if kind == "charger":
        outputs = [("battery_voltage", "battery_current")] + [
            (f"battery_voltage_{n}", f"battery_current_{n}") for n in (2, 3)
        ]
        powers = [values[v] * values[i] for v, i in outputs if values.get(v) is not None and values.get(i) is not None]
        if powers:
            values["charge_power"] = round(sum(powers), 3)
    return kind, values
