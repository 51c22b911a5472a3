"""Home Assistant MQTT discovery payloads for Sunbox devices, from the table of quantities.

A device is announced with exactly the quantities it sends: :func:`entity_keys` lists
the ones a state or health message gives a value for (a list quantity one entity per
position, ``cell_voltage_01`` ...), and the publisher announces each key the first time
the device sends it. One retained ``<discovery_prefix>/<component>/sunbox_<device>/<key>/config``
per entity (``sensor`` or ``binary_sensor``), pointing at ``<prefix>/<device>/state`` (or
``/health`` for the link's diagnostic entities) with a ``value_template`` that renders
``None`` (Home Assistant: unknown) rather than a template warning when a key is missing.
:func:`removal_messages` gives the empty retained configs that remove entities.

Entity ids: ``unique_id`` is ``sunbox_<device>_<key>`` (unchanged since the first
release: Home Assistant's registry keys entities on it, so owners keep theirs);
``default_entity_id`` (Home Assistant 2025.10 and later) and ``object_id`` (before it)
both ask for ``<component>.sunbox_<device>_<key>``. Format: Home Assistant "MQTT" integration
documentation, "Discovery messages" (fields ``default_entity_id``, ``origin``,
``availability_mode``, ``enabled_by_default``, ``entity_category``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sunbox import __version__
from sunbox.quantities import QUANTITIES, Quantity

ORIGIN = {"name": "Sunbox", "sw_version": __version__}

_LIST_KEY = re.compile(r"^(?P<stem>[a-z0-9_]+)_(?P<index>\d\d)$")


def entity_keys(values: Mapping[str, Any]) -> set[str]:
    """The entity keys a reading's values (or a health record's) give a value for:
    each announced quantity that is not ``None``, a list one key per non-``None``
    position (``cell_voltages`` [3.3, None, 3.2] -> ``cell_voltage_01``, ``cell_voltage_03``).
    Names not in the table of quantities are left out."""
    keys: set[str] = set()
    for name, value in values.items():
        quantity = QUANTITIES.get(name)
        if quantity is None or quantity.component is None or value is None:
            continue
        if quantity.type == "numbers":
            if isinstance(value, list):
                stem = name[:-1]
                keys.update(f"{stem}_{i:02d}" for i, item in enumerate(value[:99], 1) if item is not None)
        else:
            keys.add(name)
    return keys


def quantity_of(key: str) -> tuple[Quantity, int | None] | None:
    """The quantity behind an entity key and, for a list position, its index from 0."""
    quantity = QUANTITIES.get(key)
    if quantity is not None:
        return quantity, None
    match = _LIST_KEY.match(key)
    if match:
        quantity = QUANTITIES.get(match["stem"] + "s")
        if quantity is not None and quantity.type == "numbers":
            return quantity, int(match["index"]) - 1
    return None


def _template(quantity: Quantity, index: int | None) -> str:
    name = quantity.name
    if index is not None:
        return f"{{{{ (value_json.{name} | default([]))[{index}] | default(none) }}}}"
    if quantity.device_class == "timestamp":  # ms since the epoch -> ISO 8601 in UTC
        return (
            f"{{{{ ((value_json.{name} / 1000) | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false))"
            f" if value_json.{name} is number else none }}}}"
        )
    return f"{{{{ value_json.{name} | default(none) }}}}"


def slug(device_id: str) -> str:
    """A device id as Home Assistant's entity ids spell it (``[a-z0-9_]``)."""
    return re.sub(r"[^a-z0-9_]", "_", device_id.lower())


def config_topic(discovery_prefix: str, device_id: str, key: str) -> str | None:
    """Where the entity ``key`` of a device is announced; None for an unknown key."""
    found = quantity_of(key)
    if found is None or found[0].component is None:
        return None
    return f"{discovery_prefix}/{found[0].component}/sunbox_{device_id}/{key}/config"


def discovery_messages(
    device_id: str,
    model: str | None,
    keys: set[str],
    prefix: str,
    discovery_prefix: str,
) -> list[tuple[str, bytes]]:
    """``(topic, retained payload)`` announcing the entities ``keys`` of one device (keys
    from :func:`entity_keys`; health quantities read ``<prefix>/<device>/health`` and are
    available while the collector is, the others ``/state`` while the device's link is up)."""
    device: dict[str, Any] = {"identifiers": [f"sunbox_{device_id}"], "name": device_id, "manufacturer": "Sunbox"}
    if model:
        device["model"] = model
    collector = {"topic": f"{prefix}/collector/availability"}
    out: list[tuple[str, bytes]] = []
    for key in sorted(keys):
        found = quantity_of(key)
        if found is None or found[0].component is None:
            continue
        quantity, index = found
        health = "health" in quantity.kinds
        component = quantity.component
        label = quantity.label if index is None else f"{quantity.label} {index + 1}"
        entity = f"sunbox_{slug(device_id)}_{key}"
        payload: dict[str, Any] = {
            "name": label,
            "unique_id": f"sunbox_{device_id}_{key}",
            "default_entity_id": f"{component}.{entity}",
            "object_id": entity,
            "state_topic": f"{prefix}/{device_id}/{'health' if health else 'state'}",
            "value_template": _template(quantity, index),
            "availability": [collector] if health else [collector, {"topic": f"{prefix}/{device_id}/availability"}],
            "availability_mode": "all",
            "device": device,
            "origin": ORIGIN,
        }
        if component == "binary_sensor":
            payload["payload_on"] = "True"
            payload["payload_off"] = "False"
        elif quantity.unit and quantity.device_class != "timestamp":
            payload["unit_of_measurement"] = quantity.unit
        if quantity.device_class:
            payload["device_class"] = quantity.device_class
        if quantity.state_class and component == "sensor":
            payload["state_class"] = quantity.state_class
        if quantity.entity_category:
            payload["entity_category"] = quantity.entity_category
        if not quantity.enabled_by_default:
            payload["enabled_by_default"] = False
        topic = f"{discovery_prefix}/{component}/sunbox_{device_id}/{key}/config"
        out.append((topic, json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()))
    return out


def removal_messages(topics: list[str]) -> list[tuple[str, bytes]]:
    """The empty retained payloads that remove these entities from Home Assistant."""
    return [(topic, b"") for topic in topics]
