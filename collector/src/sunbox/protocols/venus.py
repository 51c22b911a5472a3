"""Venus OS (GX device) MQTT topics to data-model values. Pure, no I/O.

Topics ``N/<portal id>/<service>/<instance>/<D-Bus path>`` carry ``{"value": <json>}``;
an empty payload means the device is gone; ``{"value": null}`` means invalid. D-Bus
units are SI except energy (kWh) and temperature (degC). Sources: ``victronenergy/dbus-flashmq``
README and ``victronenergy/dbus-mqtt`` README (topics, keep-alive, 3.20 changes), the
victronenergy/venus wiki "dbus" page (paths and units), summarised in
``docs/protocols.md`` section 6.

Services read: ``battery``, ``solarcharger``, ``vebus`` and ``system`` (instance 0).
Kinds: battery -> ``battery``, solarcharger -> ``charger``, vebus -> ``inverter``,
system -> ``system``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .errors import FrameError
from .vedirect import DEVICE_STATES

SERVICES = ("battery", "solarcharger", "vebus", "system")
KINDS = {"battery": "battery", "solarcharger": "charger", "vebus": "inverter", "system": "system"}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FrameError(f"expected a number, got {value!r}")
    return float(value)


def _kwh(value: Any) -> float:
    return round(_number(value) * 1000.0, 3)


def _int(value: Any) -> int:
    number = _number(value)
    if not number.is_integer():
        raise FrameError(f"expected an integer, got {value!r}")
    return int(number)


def _flag(value: Any) -> bool:
    return bool(_int(value))


Convert = Callable[[Any], Any]

PATHS: dict[str, dict[str, tuple[str, Convert]]] = {
    "battery": {
        "Dc/0/Voltage": ("voltage", _number),
        "Dc/0/Current": ("current", _number),
        "Dc/0/Power": ("power", _number),
        "Dc/0/Temperature": ("battery_temperature", _number),
        "Dc/0/MidVoltage": ("midpoint_voltage", _number),
        "Dc/1/Voltage": ("starter_voltage", _number),
        "Soc": ("soc", _number),
        "ConsumedAmphours": ("consumed_ah", lambda v: -_number(v)),  # negative when drawn
        "TimeToGo": ("time_to_go", _number),
        "History/ChargeCycles": ("cycles", _number),
    },
    "solarcharger": {
        "Dc/0/Voltage": ("battery_voltage", _number),
        "Dc/0/Current": ("battery_current", _number),
        "Pv/V": ("pv_voltage", _number),
        "Yield/Power": ("pv_power", _number),
        "State": ("charge_state_code", _int),
        "ErrorCode": ("error_code", _int),
        "Load/State": ("load_on", _flag),
        "Load/I": ("load_current", _number),
        "History/Daily/0/Yield": ("yield_today", _kwh),
        "History/Daily/0/MaxPower": ("max_charge_power_today", _number),
        "Yield/User": ("yield_total", _kwh),
    },
    "vebus": {
        "Dc/0/Voltage": ("battery_voltage", _number),
        "Dc/0/Current": ("battery_current", _number),
        "Soc": ("soc", _number),
        "State": ("device_state_code", _int),
        "Mode": ("device_mode", _int),
        "Ac/ActiveIn/P": ("ac_in_power", _number),
        "Ac/ActiveIn/L1/V": ("ac_in_voltage", _number),
        "Ac/Out/P": ("ac_out_power", _number),
        "Ac/Out/L1/V": ("ac_out_voltage", _number),
        "Ac/Out/L1/I": ("ac_out_current", _number),
    },
    "system": {
        "Dc/Battery/Voltage": ("battery_voltage", _number),
        "Dc/Battery/Current": ("battery_current", _number),
        "Dc/Battery/Power": ("battery_power", _number),
        "Dc/Battery/Soc": ("soc", _number),
        "Dc/Pv/Power": ("pv_power", _number),
    },
}


def split_topic(topic: str) -> tuple[str, str, str, str] | None:
    """``(portal id, service, instance, path)`` of an ``N/`` topic, or None for other topics."""
    parts = topic.split("/", 4)
    if len(parts) != 5 or parts[0] != "N":
        return None
    return parts[1], parts[2], parts[3], parts[4]


def decode(topic: str, payload: bytes) -> tuple[str, str, str, Any] | None:
    """Map one message to ``(service, instance, data-model name, value)``.

    Returns None for topics Sunbox does not read. ``value`` is None for ``{"value": null}``;
    an empty payload (device gone) gives the name ``""`` and value None.

    Raises:
        FrameError: a payload that is not ``{"value": ...}`` or a value of the wrong type.
    """
    parts = split_topic(topic)
    if parts is None:
        return None
    _portal, service, instance, path = parts
    table = PATHS.get(service)
    if table is None:
        return None
    if not payload:
        return service, instance, "", None
    entry = table.get(path)
    if entry is None:
        return None
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FrameError(f"{topic}: payload is not JSON") from None
    if not isinstance(data, dict) or "value" not in data:
        raise FrameError(f"{topic}: payload is not {{'value': ...}}")
    name, convert = entry
    value = data["value"]
    return service, instance, name, None if value is None else convert(value)


def finish(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Add the derived names: state texts and charge power."""
    out = dict(values)
    if "charge_state_code" in out and out["charge_state_code"] is not None:
        out["charge_state"] = DEVICE_STATES.get(out["charge_state_code"], f"unknown_{out['charge_state_code']}")
    if "device_state_code" in out and out["device_state_code"] is not None:
        out["device_state"] = DEVICE_STATES.get(out["device_state_code"], f"unknown_{out['device_state_code']}")
    if kind == "charger" and out.get("battery_voltage") is not None and out.get("battery_current") is not None:
        out["charge_power"] = round(out["battery_voltage"] * out["battery_current"], 3)
    return out
