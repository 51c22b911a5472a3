"""The latest reading of every device, kept from MQTT messages. Pure: no I/O, no clock.

Topics (``docs/data-model.md``): ``<prefix>/<id>/state`` and ``/health`` carry reading
JSON, ``<prefix>/<id>/availability`` and ``<prefix>/collector/availability`` carry
``online``/``offline``; a bridged field site's arrive under ``<prefix>/site/<site>/`` and
its devices are ``<site>.<id>`` (:mod:`sunbox.topics`). A state or health payload is
validated with the writer's own rules (:func:`sunbox.storage.points.parse_reading`), so
the display shows exactly what storage would accept. A message that fails is skipped and counted by reason, never shown.

What a page receives for a device (:meth:`LiveState.device`)::

    {"device_id": "bank1", "kind": "battery", "state": {...reading...} | None,
     "health": {...health reading...} | None, "online": True | False | None,
     "received_ms": 1750000000123 | None, "alarms": ["cell overvoltage", ...]}

``received_ms`` is when the display got the last reading (its age, with the browser's
clock offset removed by the page, decides fresh / stale / dead).

The alarm engine's retained topics (``sunbox.alarms``, docs/alarms.md) are kept too:
``<prefix>/_alarms/active`` (the active alarms, a JSON list), ``/history`` (the last
changes) and ``/availability``. A list that is not what the engine writes is skipped and
counted, and the last good one stays.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sunbox import topics
from sunbox.quantities import PROTECTION_BITS
from sunbox.storage.points import PayloadError, parse_reading

#: Words for the JBD protection bits (bit 0 first), as the dashboards spell them.
PROTECTION_WORDS = PROTECTION_BITS


def alarm_words(kind: str, state: dict[str, Any]) -> list[str]:
    """The active protections and alarms of a reading, in words (empty when none)."""
    words: list[str] = []
    bits = state.get("protection_bits")
    if kind in ("battery", "bank") and isinstance(bits, int):
        words += [word for i, word in enumerate(PROTECTION_WORDS) if bits >> i & 1]
    code = state.get("error_code")
    if isinstance(code, int) and code != 0:
        words.append(f"charger error {code}")
    if state.get("alarm_on") is True:
        words.append("alarm")
    return words


@dataclass
class Device:
    """What the display knows of one device."""

    device_id: str
    kind: str | None = None
    state: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    online: bool | None = None
    received_ms: int | None = None


#: an alarm as the display takes it: these keys, of these types (None allowed where listed)
_ALARM_KEYS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "rule": (str,),
    "device": (str,),
    "severity": (str,),
    "text": (str,),
    "raised_ms": (int,),
    "value": (int, float, type(None)),
    "acked_ms": (int, type(None)),
    "cleared_ms": (int, type(None)),
}


def _alarm_list(payload: bytes, key: str | None = None) -> list[dict[str, Any]] | None:
    """The engine's JSON list of alarms (or of events, each with its alarm under ``key``),
    None when it is not one."""
    try:
        items = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(items, list):
        return None
    for item in items:
        alarm = item.get(key) if key and isinstance(item, dict) else item
        if not isinstance(alarm, dict) or alarm.get("severity") not in ("warning", "alarm"):
            return None
        if any(not isinstance(alarm.get(k), types) for k, types in _ALARM_KEYS.items()):
            return None
    return items


@dataclass
class LiveState:
    """Latest state, health and availability per device; skipped messages counted by reason."""

    prefix: str = "sunbox"
    devices: dict[str, Device] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    collector_online: bool | None = None
    messages: int = 0
    #: the alarm engine's active alarms and last changes; None until it has said
    alarms: list[dict[str, Any]] | None = None
    alarm_history: list[dict[str, Any]] = field(default_factory=list)
    alarms_online: bool | None = None

    def apply(self, topic: str, payload: bytes, now_ms: int) -> str | None:
        """Take one MQTT message; return the device id it changed (or ``"collector"``, or
        ``"alarms"``), or None.

        Never raises: a bad message is counted in :attr:`skipped` and None is returned.
        """
        self.messages += 1
        if topic.startswith(f"{self.prefix}/{topics.ALARMS_LEVEL}/"):
            return self._apply_alarms(topic.rsplit("/", 1)[-1], payload)
        try:
            where = topics.parse(topic, self.prefix)
        except topics.TopicError:
            self.skipped["unexpected topic"] += 1
            return None
        leaf = where.leaf
        if leaf == "availability":
            text = payload.decode("utf-8", "replace").strip()
            if text not in ("online", "offline"):
                self.skipped["availability not online/offline"] += 1
                return None
            if where.device_id == "collector":
                if where.site is not None:  # a field site's collector: its devices say for themselves
                    return None
                self.collector_online = text == "online"
                return "collector"
            self._device(where.device).online = text == "online"
            return where.device
        try:
            point, data = parse_reading(topic, payload, now_ms, self.prefix)
        except PayloadError as exc:
            self.skipped[str(exc).split(":")[0][:60]] += 1
            return None
        values = {k: v for k, v in data.items() if k not in ("device_id", "kind")}
        device = self._device(point.device)
        if leaf == "health":
            device.health = values
        else:
            device.kind = point.measurement
            device.state = values
            device.received_ms = now_ms
        return point.device

    def _apply_alarms(self, leaf: str, payload: bytes) -> str | None:
        if leaf == "availability":
            text = payload.decode("utf-8", "replace").strip()
            if text not in ("online", "offline"):
                self.skipped["availability not online/offline"] += 1
                return None
            self.alarms_online = text == "online"
            return "alarms"
        if leaf in ("active", "history"):
            items = _alarm_list(payload, "alarm" if leaf == "history" else None)
            if items is None:
                self.skipped[f"alarm {leaf} malformed"] += 1
                return None
            if leaf == "active":
                self.alarms = items
            else:
                self.alarm_history = items
            return "alarms"
        self.skipped["unexpected topic"] += 1
        return None

    def alarm_view(self) -> dict[str, Any]:
        """The alarms as a page receives them: ``active`` (None until the engine said),
        ``history`` (newest last) and ``online`` (the engine's availability)."""
        return {"active": self.alarms, "history": self.alarm_history, "online": self.alarms_online}

    def _device(self, device_id: str) -> Device:
        return self.devices.setdefault(device_id, Device(device_id))

    def bank_members(self) -> frozenset[str]:
        """The device ids the banks now name as their packs and meters (``packs``,
        ``meter`` of each bank's newest reading; a bridged site's with its prefix)."""
        out: set[str] = set()
        for d in self.devices.values():
            if d.kind != "bank" or not d.state:
                continue
            site = d.device_id.rsplit(".", 1)[0] + "." if "." in d.device_id else ""
            packs = d.state.get("packs")
            names = packs.split(",") if isinstance(packs, str) else []
            if isinstance(d.state.get("meter"), str):
                names.append(d.state["meter"])
            out.update(site + n for n in names if n)
        return frozenset(out)

    def device(self, device_id: str) -> dict[str, Any]:
        """The JSON-ready view of one device (see the module docstring)."""
        d = self.devices[device_id]
        return {
            "device_id": d.device_id,
            "kind": d.kind,
            "state": d.state,
            "health": d.health,
            "online": d.online,
            "received_ms": d.received_ms,
            "alarms": alarm_words(d.kind or "", d.state or {}),
        }

    def snapshot(self) -> dict[str, Any]:
        """Every device, the collector's availability and the skip counters."""
        return {
            "devices": [self.device(i) for i in sorted(self.devices)],
            "collector_online": self.collector_online,
            "alarms": self.alarm_view(),
            "skipped": dict(self.skipped),
            "messages": self.messages,
        }
