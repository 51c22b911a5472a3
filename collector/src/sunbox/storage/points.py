"""Readings from MQTT payloads to InfluxDB points: validation and the raw-bucket schema.

Pure functions, no I/O. The schema (see ``docs/data-model.md``, "InfluxDB"):

* measurement = the reading's ``kind`` (``battery``, ``charger``, ``health``, ...);
* tags: ``device`` (the ``device_id``, or ``<site>.<device_id>`` for a bridged field
  site, see :mod:`sunbox.topics`) and ``kind``;
* fields: the data-model names. Numbers are written as floats, except the flag fields
  (:data:`FLAG_FIELDS`), which are non-negative integers so that tiers can OR them.
  Only the fields in :data:`TEXT_FIELDS` may be strings and only those in
  :data:`BOOL_FIELDS` booleans; any other field must be a number. InfluxDB fixes a
  field's type per shard by the first value it sees, so one stray string would make it
  refuse every number of that field for the rest of the shard's time range. The sets
  come from the table of quantities (:mod:`sunbox.quantities`). A list
  ``cell_voltages`` becomes the fields ``cell_voltage_01``, ``cell_voltage_02``, ... (the
  list name without its plural ``s``, numbered from 01); ``null`` values and ``null``
  list items are not written;
* time: the reading's own ``time_ms`` (UTC milliseconds).

The alarm engine's events (:func:`parse_alarm_event`) go to their own bucket, kept as
long as the longest tier, as :class:`AlarmPoint`.

Every way a payload can be wrong raises :class:`PayloadError` with a reason for the
dead-letter topic; nothing partial is ever returned.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from sunbox import quantities, topics
from sunbox.config import DEVICE_ID_PATTERN

#: Bitmask fields: integers, aggregated with bitwise OR in the tiers.
FLAG_FIELDS: frozenset[str] = quantities.names(type="flags")
#: Numeric fields that are states, counters or constants: the tiers keep the window's
#: last value instead of mean/min/max. Booleans and strings are always "last".
LAST_FIELDS: frozenset[str] = quantities.names(type="number", role="last")
#: Fields whose values are text.
TEXT_FIELDS: frozenset[str] = quantities.names(type="text")
#: Fields whose values are booleans.
BOOL_FIELDS: frozenset[str] = quantities.names(type="bool")

#: Fields the tiers keep as the window's last value.
LAST_VALUE_FIELDS: frozenset[str] = LAST_FIELDS | TEXT_FIELDS | BOOL_FIELDS
#: Fields the tiers do not turn into mean/min/max.
NOT_MEASURED: frozenset[str] = LAST_VALUE_FIELDS | FLAG_FIELDS


def is_measured(name: str) -> bool:
    """True for a measured quantity: the tiers hold its mean, ``_min`` and ``_max``."""
    return name not in NOT_MEASURED


#: Readings older than this (2015-01-01) are refused: a Pi without a real-time clock
#: stamps 1970 before NTP has synchronised.
MIN_TIME_MS = 1_420_070_400_000
#: How far into the future a reading may be stamped (clock skew between hosts).
MAX_FUTURE_MS = 24 * 3600 * 1000
MAX_STRING = 1024
MAX_FIELDS = 256

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ENVELOPE = ("device_id", "kind", "time_ms")


class PayloadError(ValueError):
    """A message that cannot become a point; ``str()`` is the reason."""


@dataclass(frozen=True, slots=True)
class RawPoint:
    """One point for the raw bucket. ``fields`` values are float, int (flags), bool or str."""

    measurement: str
    device: str
    time_ms: int
    fields: dict[str, float | int | bool | str]

    def to_record(self) -> dict[str, Any]:
        """The dictionary form accepted by ``influxdb_client`` write APIs (ms precision)."""
        return {
            "measurement": self.measurement,
            "tags": {"device": self.device, "kind": self.measurement},
            "fields": self.fields,
            "time": self.time_ms,
        }


#: The events bucket's measurement: one point per raised, acknowledged or cleared alarm.
ALARM_MEASUREMENT = "alarm"
ALARM_EVENTS = frozenset({"raised", "acked", "cleared"})
SEVERITIES = frozenset({"warning", "alarm"})
_RULE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True, slots=True)
class AlarmPoint:
    """One alarm event for the events bucket (``docs/data-model.md``, "InfluxDB"):
    measurement ``alarm``; tags ``rule``, ``device``, ``severity``, ``event`` (raised,
    acked or cleared); fields ``text`` and, when known, ``value`` (the quantity when
    raised); time: the event's own."""

    rule: str
    device: str
    severity: str
    event: str
    time_ms: int
    text: str
    value: float | None = None

    def to_record(self) -> dict[str, Any]:
        """The dictionary form accepted by ``influxdb_client`` write APIs (ms precision)."""
        fields: dict[str, float | str] = {"text": self.text}
        if self.value is not None:
            fields["value"] = self.value
        tags = {"rule": self.rule, "device": self.device, "severity": self.severity, "event": self.event}
        return {"measurement": ALARM_MEASUREMENT, "tags": tags, "fields": fields, "time": self.time_ms}


def parse_alarm_event(payload: bytes, now_ms: int) -> AlarmPoint:
    """Validate one alarm event as the engine publishes it (``sunbox.alarms.engine.Event``:
    ``{"what", "time_ms", "alarm": {"rule", "device", "severity", "text", "value", ...}}``).

    Raises:
        PayloadError: with a reason naming what is wrong.
    """
    data = _json(payload)
    alarm = data.get("alarm") if isinstance(data, dict) else None
    if not isinstance(alarm, dict):
        raise PayloadError("not an alarm event (no alarm object)")
    what = data.get("what")
    if what not in ALARM_EVENTS:
        raise PayloadError(f"what must be one of {', '.join(sorted(ALARM_EVENTS))}: {what!r}")
    time_ms = data.get("time_ms")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise PayloadError(f"time_ms missing or not an integer: {time_ms!r}")
    if not MIN_TIME_MS <= time_ms <= now_ms + MAX_FUTURE_MS:
        raise PayloadError(f"time_ms {time_ms} is before 2015 or more than a day in the future")
    rule, device, severity, text = (alarm.get(k) for k in ("rule", "device", "severity", "text"))
    if not isinstance(rule, str) or not _RULE.match(rule):
        raise PayloadError(f"alarm.rule missing or invalid: {rule!r}")
    if not isinstance(device, str) or not topics.QUALIFIED_DEVICE_PATTERN.match(device):
        raise PayloadError(f"alarm.device missing or invalid: {device!r}")
    if severity not in SEVERITIES:
        raise PayloadError(f"alarm.severity must be warning or alarm: {severity!r}")
    if not isinstance(text, str) or len(text) > MAX_STRING:
        raise PayloadError("alarm.text missing or too long")
    value = alarm.get("value")
    if value is not None:
        value = _number("alarm.value", value)
    return AlarmPoint(rule, device, str(severity), str(what), time_ms, text, value)


def _json(payload: bytes) -> Any:
    """The payload's JSON (NaN and Infinity refused).

    Raises:
        PayloadError: not UTF-8, or not JSON.
    """
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise PayloadError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc.msg} at position {exc.pos}") from None


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"not JSON: {name} is not a number in JSON")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{name}: expected a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise PayloadError(f"{name}: not a finite number")
    return result


def _flag(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 1 << 63:
        raise PayloadError(f"{name}: a flag field must be a non-negative integer, got {value!r}")
    return value


def _fields(values: dict[str, Any]) -> dict[str, float | int | bool | str]:
    fields: dict[str, float | int | bool | str] = {}
    for name, value in values.items():
        if not _FIELD.match(name):
            raise PayloadError(f"field name {name!r} is not a data-model name")
        if value is None:
            continue
        if isinstance(value, list):
            if not name.endswith("s") or len(value) > 99:
                raise PayloadError(f"{name}: lists are only allowed for plural names with at most 99 items")
            stem = name[:-1]
            for index, item in enumerate(value, start=1):
                if item is not None:
                    fields[f"{stem}_{index:02d}"] = _number(f"{name}[{index - 1}]", item)
        elif name in FLAG_FIELDS:
            fields[name] = _flag(name, value)
        elif name in BOOL_FIELDS:
            if not isinstance(value, bool):
                raise PayloadError(f"{name}: expected true or false, got {type(value).__name__}")
            fields[name] = value
        elif name in TEXT_FIELDS:
            if not isinstance(value, str):
                raise PayloadError(f"{name}: expected text, got {type(value).__name__}")
            if len(value) > MAX_STRING:
                raise PayloadError(f"{name}: text longer than {MAX_STRING} characters")
            fields[name] = value
        else:
            fields[name] = _number(name, value)
    if len(fields) > MAX_FIELDS:
        raise PayloadError(f"more than {MAX_FIELDS} fields")
    return fields


def parse_message(topic: str, payload: bytes, now_ms: int, prefix: str = "sunbox") -> RawPoint:
    """Validate one MQTT message; the point for the raw bucket (see :func:`parse_reading`)."""
    return parse_reading(topic, payload, now_ms, prefix)[0]


def parse_reading(topic: str, payload: bytes, now_ms: int, prefix: str = "sunbox") -> tuple[RawPoint, dict[str, Any]]:
    """Validate one MQTT message from ``<prefix>/<device_id>/state`` or ``/health``, or
    the same from a field site, ``<prefix>/site/<site>/<device_id>/...`` (:mod:`sunbox.topics`).
    A site's point has the device ``<site>.<device_id>``.

    Args:
        topic: the MQTT topic the message arrived on.
        payload: the UTF-8 JSON reading (see ``docs/data-model.md``).
        now_ms: current UTC time in ms, to refuse readings stamped far in the future.
        prefix: the topic prefix.

    Returns:
        The point for the raw bucket, and the reading as published (lists kept whole).

    Raises:
        PayloadError: with a reason naming what is wrong.
    """
    try:
        where = topics.parse(topic, prefix)
    except topics.TopicError as exc:
        raise PayloadError(str(exc)) from None
    if where.leaf not in ("state", "health"):
        raise PayloadError(f"unexpected topic {topic!r}")
    data = _json(payload)
    if not isinstance(data, dict):
        raise PayloadError("not a JSON object")
    device_id = data.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
        raise PayloadError(f"device_id missing or invalid: {device_id!r}")
    if device_id != where.device_id:
        raise PayloadError(f"device_id {device_id!r} does not match the topic's {where.device_id!r}")
    kind = data.get("kind")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise PayloadError(f"kind missing or invalid: {kind!r}")
    if (kind == "health") != (where.leaf == "health"):
        raise PayloadError(f"kind {kind!r} does not belong on a /{where.leaf} topic")
    time_ms = data.get("time_ms")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise PayloadError(f"time_ms missing or not an integer: {time_ms!r}")
    if time_ms < MIN_TIME_MS:
        raise PayloadError(f"time_ms {time_ms} is before 2015 (clock not set?)")
    if time_ms > now_ms + MAX_FUTURE_MS:
        raise PayloadError(f"time_ms {time_ms} is more than a day in the future")
    fields = _fields({k: v for k, v in data.items() if k not in _ENVELOPE})
    if not fields:
        raise PayloadError("no values")
    return RawPoint(measurement=kind, device=where.device, time_ms=time_ms, fields=fields), data
