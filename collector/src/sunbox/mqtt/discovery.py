"""Home Assistant MQTT discovery payloads for Sunbox devices.

One retained ``<discovery_prefix>/sensor/sunbox_<device>/<field>/config`` (or
``binary_sensor``) per data-model field, pointing at ``sunbox/<device>/state`` with a
``value_template``. Format: Home Assistant "MQTT Discovery" documentation.
"""

from __future__ import annotations

import json
from typing import Any

# field -> (unit, device_class, state_class); None where HA has no class.
SENSORS: dict[str, dict[str, tuple[str | None, str | None, str | None]]] = {
    "battery": {
        "voltage": ("V", "voltage", "measurement"),
        "current": ("A", "current", "measurement"),
        "power": ("W", "power", "measurement"),
        "soc": ("%", "battery", "measurement"),
        "capacity_remaining": ("Ah", None, "measurement"),
        "cycles": (None, None, "total_increasing"),
        "cell_voltage_min": ("V", "voltage", "measurement"),
        "cell_voltage_max": ("V", "voltage", "measurement"),
        "cell_voltage_delta": ("V", "voltage", "measurement"),
        "protection_bits": (None, None, None),
    },
    "charger": {
        "battery_voltage": ("V", "voltage", "measurement"),
        "battery_current": ("A", "current", "measurement"),
        "charge_power": ("W", "power", "measurement"),
        "pv_voltage": ("V", "voltage", "measurement"),
        "load_power": ("W", "power", "measurement"),
        "yield_today": ("Wh", "energy", "total_increasing"),
        "yield_total": ("Wh", "energy", "total_increasing"),
        "controller_temperature": ("°C", "temperature", "measurement"),
        "charge_state": (None, None, None),
        "alarm_bits": (None, None, None),
    },
}
BINARY = {"battery": ("charge_fet_on", "discharge_fet_on"), "charger": ("load_on",)}


def discovery_messages(
    device_id: str, kind: str, model: str | None, prefix: str, discovery_prefix: str
) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` pairs announcing every field of one device."""
    device = {"identifiers": [f"sunbox_{device_id}"], "name": device_id, "manufacturer": "Sunbox"}
    if model:
        device["model"] = model
    availability = [
        {"topic": f"{prefix}/collector/availability"},
        {"topic": f"{prefix}/{device_id}/availability"},
    ]
    out: list[tuple[str, bytes]] = []

    def config(component: str, field: str, extra: dict[str, Any]) -> None:
        payload = {
            "name": field.replace("_", " "),
            "unique_id": f"sunbox_{device_id}_{field}",
            "object_id": f"sunbox_{device_id}_{field}",
            "state_topic": f"{prefix}/{device_id}/state",
            "value_template": f"{{{{ value_json.{field} }}}}",
            "availability": availability,
            "availability_mode": "all",
            "device": device,
            **extra,
        }
        topic = f"{discovery_prefix}/{component}/sunbox_{device_id}/{field}/config"
        out.append((topic, json.dumps(payload, separators=(",", ":")).encode()))

    for field, (unit, device_class, state_class) in SENSORS.get(kind, {}).items():
        extra: dict[str, Any] = {}
        if unit:
            extra["unit_of_measurement"] = unit
        if device_class:
            extra["device_class"] = device_class
        if state_class:
            extra["state_class"] = state_class
        config("sensor", field, extra)
    for field in BINARY.get(kind, ()):
        config(
            "binary_sensor",
            field,
            {"payload_on": True, "payload_off": False, "value_template": f"{{{{ value_json.{field} }}}}"},
        )
    return out
