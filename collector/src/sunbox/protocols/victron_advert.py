"""Victron Instant Readout adverts to data-model values, decoded by the victron-ble library.

Pure code, no I/O. Input: the manufacturer data after Victron's company id 0x02E1
(``0x10``, a byte, product id u16 LE, record type, nonce u16 LE, key check byte,
AES-128-CTR ciphertext). The decryption and the bit-level record parsers are
victron-ble's (``keshavdv/victron-ble`` 0.9.3, ``victron_ble/devices/*.py``). This module
only maps each record type's values to data-model names and units, and turns the
library's exceptions into ours. Facts: Victron "Extra manufacturer data" 2022-12-14 and
``docs/protocols.md`` section 3.

Record type -> kind: solar charger and AC charger -> ``charger``; battery monitor,
Smart Battery Sense, SmartLithium and Lynx Smart BMS -> ``battery``; inverter, VE.Bus
and Multi RS -> ``inverter``; DC/DC and Orion XS -> ``dcdc``; DC energy meter ->
``dc_meter``; Smart BatteryProtect -> ``protect``.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

from victron_ble.devices import detect_device_type
from victron_ble.devices.base import MODEL_ID_MAPPING
from victron_ble.exceptions import AdvertisementKeyMismatchError

from .errors import FrameError

COMPANY_ID = 0x02E1
PRODUCT_ADVERTISEMENT = 0x10


class AdvertKeyError(FrameError):
    """The advert's key check byte does not match the configured key (wrong or changed key)."""


_KINDS = {
    "SolarCharger": "charger",
    "AcCharger": "charger",
    "BatteryMonitor": "battery",
    "BatterySense": "battery",
    "SmartLithium": "battery",
    "LynxSmartBMS": "battery",
    "Inverter": "inverter",
    "VEBus": "inverter",
    "MultiRS": "inverter",
    "DcDcConverter": "dcdc",
    "OrionXS": "dcdc",
    "DcEnergyMeter": "dc_meter",
    "SmartBatteryProtect": "protect",
}

#: victron-ble getter -> data-model name (battery kinds rename battery_* below)
_GETTERS = {
    "get_charge_state": "charge_state",
    "get_device_state": "device_state",
    "get_charger_error": "error_code",
    "get_error": "error_code",
    "get_battery_voltage": "battery_voltage",
    "get_battery_charging_current": "battery_current",
    "get_battery_current": "battery_current",
    "get_yield_today": "yield_today",
    "get_solar_power": "pv_power",
    "get_external_device_load": "load_current",
    "get_remaining_mins": "time_to_go",
    "get_voltage": "voltage",
    "get_current": "current",
    "get_soc": "soc",
    "get_consumed_ah": "consumed_ah",
    "get_alarm": "alarm_bits",
    "get_temperature": "battery_temperature",
    "get_battery_temperature": "battery_temperature",
    "get_starter_voltage": "starter_voltage",
    "get_midpoint_voltage": "midpoint_voltage",
    "get_ac_apparent_power": "ac_out_apparent_power",
    "get_ac_voltage": "ac_out_voltage",
    "get_ac_current": "ac_out_current",
    "get_ac_in_state": "ac_in_state",
    "get_ac_in_power": "ac_in_power",
    "get_ac_out_power": "ac_out_power",
    "get_input_voltage": "input_voltage",
    "get_output_voltage": "output_voltage",
    "get_output_voltage1": "battery_voltage",
    "get_output_current1": "battery_current",
    "get_off_reason": "off_reason_bits",
    "get_cell_voltages": "cell_voltages",
    "get_error_flags": "error_bits",
    "get_bms_flags": "bms_bits",
}
#: enums whose value is a state with a name (the rest become integer codes or bitmasks)
_STATE_NAMES = {"charge_state", "device_state", "ac_in_state"}


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        raw = value.value
        return raw if isinstance(raw, int | str) else str(raw)
    if isinstance(value, list):
        return [float(v) if v is not None else None for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not name.endswith("_bits"):
        return float(value)
    return value


def parse_header(data: bytes) -> tuple[int, int, int]:
    """``(product_id, record_type, nonce)`` of an advert.

    Raises:
        FrameError: too short, or not a Victron product advertisement (first byte 0x10).
    """
    if len(data) < 9:
        raise FrameError(f"Victron advert too short: {len(data)} bytes")
    if data[0] != PRODUCT_ADVERTISEMENT:
        raise FrameError(f"not a Victron product advertisement (record 0x{data[0]:02x})")
    product_id, record_type, nonce = struct.unpack_from("<HBH", data, 2)
    return product_id, record_type, nonce


def decode(data: bytes, key: bytes) -> tuple[str, dict[str, Any]]:
    """Decrypt and decode one advert.

    Args:
        data: manufacturer data after the company id 0x02E1.
        key: the device's 16-byte Instant Readout key (VictronConnect: Product info).

    Returns:
        ``(kind, values)``, values in data-model names: volts, amps, watts, Wh,
        ``time_to_go`` in s (None = infinite or unknown), ``consumed_ah`` ≥ 0 = Ah drawn,
        ``charge_state``/``device_state`` as text with ``*_code`` the raw number,
        ``model`` from the product id. A quantity the record marks "not available" is None.

    Raises:
        AdvertKeyError: the key check byte does not match ``key``.
        FrameError: malformed advert or unknown record type.
    """
    if len(key) != 16:
        raise FrameError("a Victron advert key is 16 bytes (32 hex digits)")
    product_id, record_type, _nonce = parse_header(data)
    parser_class = detect_device_type(data)
    if parser_class is None:
        raise FrameError(f"unknown Victron record type 0x{record_type:02x}")
    try:
        parsed = parser_class(key.hex()).parse(data)
    except AdvertisementKeyMismatchError:
        raise AdvertKeyError(
            f"advert key check byte 0x{data[7]:02x} does not match the configured key (0x{key[0]:02x}...)"
        ) from None
    except (ValueError, IndexError, KeyError, struct.error, TypeError) as exc:
        raise FrameError(f"malformed Victron record 0x{record_type:02x}: {exc}") from None
    kind = _KINDS.get(parser_class.__name__, parser_class.__name__.lower())
    values: dict[str, Any] = {}
    for getter, name in _GETTERS.items():
        method = getattr(parsed, getter, None)
        if method is None:
            continue
        try:
            raw = method()
        except (KeyError, ValueError, TypeError):
            continue
        if name in _STATE_NAMES and isinstance(raw, enum.Enum):
            values[name] = raw.name.lower()
            values[name + "_code"] = raw.value
        elif name in _STATE_NAMES and raw is None:
            values[name] = None
        else:
            values[name] = _plain(name, raw)
    if "consumed_ah" in values and values["consumed_ah"] is not None:
        values["consumed_ah"] = -values["consumed_ah"]  # victron-ble reports Ah drawn as negative
    if values.get("time_to_go") is not None:
        values["time_to_go"] = values["time_to_go"] * 60.0
    if kind == "battery":
        for old, new in (("battery_voltage", "voltage"), ("battery_current", "current")):
            if old in values:
                values.setdefault(new, values.pop(old))
        if values.get("voltage") is not None and values.get("current") is not None:
            values["power"] = round(values["voltage"] * values["current"], 3)
    if kind == "charger" and values.get("battery_voltage") is not None and values.get("battery_current") is not None:
        values["charge_power"] = round(values["battery_voltage"] * values["battery_current"], 3)
    values["model"] = MODEL_ID_MAPPING.get(product_id, f"0x{product_id:04X}")
    values["product_id"] = f"0x{product_id:04X}"
    return kind, values
