"""Home Assistant MQTT discovery for the alarms: one device, "Sunbox alarms", whose
entities read the retained list of active alarms (``<prefix>/_alarms/active``):

* ``sensor`` "Active alarms": how many, with the list as its attributes;
* ``binary_sensor`` "Alarm" (device class ``problem``): on while any alarm of severity
  ``alarm`` is active; "Warning": on while any alarm at all is.

Available while the alarms service is (``<prefix>/_alarms/availability``). Each alarm's
own retained JSON (``<prefix>/_alarms/<rule>/<device>``) is there for automations.
Format: Home Assistant "MQTT" integration documentation, "Discovery messages".
"""

from __future__ import annotations

import json
from typing import Any

from sunbox.mqtt.discovery import ORIGIN

DEVICE = {"identifiers": ["sunbox_alarms"], "name": "Sunbox alarms", "manufacturer": "Sunbox"}


def discovery_messages(prefix: str, discovery_prefix: str, branch: str) -> list[tuple[str, bytes]]:
    """``(topic, retained payload)`` for the three entities."""
    state = f"{prefix}/{branch}/active"
    common: dict[str, Any] = {
        "state_topic": state,
        "availability_topic": f"{prefix}/{branch}/availability",
        "device": DEVICE,
        "origin": ORIGIN,
    }
    entities: list[tuple[str, str, dict[str, Any]]] = [
        (
            "sensor",
            "active",
            {
                "name": "Active alarms",
                "value_template": "{{ value_json | length }}",
                "json_attributes_topic": state,
                "json_attributes_template": "{{ {'alarms': value_json} | tojson }}",
                "state_class": "measurement",
            },
        ),
        (
            "binary_sensor",
            "alarm",
            {
                "name": "Alarm",
                "device_class": "problem",
                "value_template": (
                    "{{ 'ON' if value_json | selectattr('severity', 'eq', 'alarm') | list | length > 0 else 'OFF' }}"
                ),
            },
        ),
        (
            "binary_sensor",
            "warning",
            {
                "name": "Warning",
                "device_class": "problem",
                "value_template": "{{ 'ON' if value_json | length > 0 else 'OFF' }}",
            },
        ),
    ]
    out = []
    for component, key, extra in entities:
        payload = {**common, **extra, "unique_id": f"sunbox_alarms_{key}", "object_id": f"sunbox_alarms_{key}"}
        payload["default_entity_id"] = f"{component}.sunbox_alarms_{key}"
        topic = f"{discovery_prefix}/{component}/sunbox_alarms/{key}/config"
        out.append((topic, json.dumps(payload, separators=(",", ":")).encode()))
    return out
