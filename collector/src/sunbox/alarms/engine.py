"""The alarm engine: rules applied to readings, raising, clearing and acknowledging alarms.

Pure: no I/O and no clock of its own. Readings come in with the time they were taken
(``time_ms``), the service calls :meth:`Engine.tick` with the time now, and every change
comes back as an :class:`Event`; the caller stores, publishes and notifies. Its state
(:meth:`Engine.to_dict`) is what a restart needs so that it neither raises an active
alarm again nor forgets one.

An alarm is one rule on one device: its id is ``<rule>/<device>``. Semantics:

* a threshold rule raises once its condition has held on every reading for ``for_s``
  (measured between reading times; one noisy reading never raises when ``for_s`` > 0);
  it clears on the first reading past ``clear_at`` (hysteresis), or whose ``while``
  condition no longer holds;
* a reading without the rule's quantity changes nothing (unknown is not "fine");
* a stale rule raises when a device has sent no reading for ``stale_for_s`` (counted
  from the engine's start for a device not heard since) and clears at its next reading;
* acknowledging marks an active alarm seen; it stays active until its condition clears.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from .rules import DERIVED, Rule

What = Literal["raised", "cleared", "acked"]
#: events kept for the Alarms page's past alarms
HISTORY = 200


@dataclass(frozen=True)
class Alarm:
    """One rule's alarm on one device.

    ``value``: the quantity when raised (for a stale rule: seconds without a reading),
    None when unknown. Times are unix milliseconds.
    """

    rule: str
    device: str
    severity: str
    text: str
    raised_ms: int
    value: float | None = None
    acked_ms: int | None = None
    cleared_ms: int | None = None

    @property
    def id(self) -> str:
        return f"{self.rule}/{self.device}"

    @property
    def active(self) -> bool:
        return self.cleared_ms is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "active": self.active, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alarm:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Event:
    """A change of one alarm: ``what`` happened at ``time_ms``; ``alarm`` as it is after it."""

    what: What
    alarm: Alarm
    time_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "time_ms": self.time_ms, "alarm": self.alarm.to_dict()}


def value_of(values: dict[str, Any], quantity: str) -> float | None:
    """A reading's number for ``quantity``: bools as 1/0, a pack's temperature range from
    its sensors; None when absent or not a number."""
    raw = values.get(quantity)
    if raw is None and quantity in DERIVED:
        source, fold = DERIVED[quantity]
        listed = values.get(source)
        numbers = [x for x in listed if isinstance(x, int | float)] if isinstance(listed, list) else []
        raw = fold(numbers) if numbers else None
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    return float(raw) if isinstance(raw, int | float) else None


class Engine:
    """Applies ``rules`` (see the module docstring). ``start_ms``: when it started."""

    def __init__(self, rules: list[Rule], start_ms: int, expected: dict[str, str | None] | None = None) -> None:
        self.rules = rules
        self.start_ms = start_ms
        self.alarms: dict[str, Alarm] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._pending: dict[str, int] = {}
        #: device -> kind (None until its first reading), for the stale rules
        self._kinds: dict[str, str | None] = dict(expected or {})
        self._last_seen: dict[str, int] = {}

    # --- input -------------------------------------------------------------------

    def observe(self, device: str, kind: str | None, values: dict[str, Any], time_ms: int) -> list[Event]:
        """Take one reading of ``device``; the events it causes."""
        self._kinds[device] = kind
        self._last_seen[device] = max(time_ms, self._last_seen.get(device, 0))
        events: list[Event] = []
        for rule in self.rules:
            if not rule.applies_to(device, kind):
                continue
            alarm_id = f"{rule.id}/{device}"
            if rule.stale_for_s is not None:
                self._clear(alarm_id, None, time_ms, events)
                continue
            self._threshold(rule, alarm_id, device, values, time_ms, events)
        return events

    def tick(self, now_ms: int) -> list[Event]:
        """Raise the stale rules due at ``now_ms``."""
        events: list[Event] = []
        for rule in self.rules:
            if rule.stale_for_s is None:
                continue
            for device, kind in self._kinds.items():
                if not rule.applies_to(device, kind):
                    continue
                seen = self._last_seen.get(device, self.start_ms)
                age_s = (now_ms - seen) / 1000
                if age_s > rule.stale_for_s and f"{rule.id}/{device}" not in self.alarms:
                    self._raise(rule, device, round(age_s), now_ms, events)
        return events

    def acknowledge(self, alarm_id: str, now_ms: int) -> Event | None:
        """Mark an active alarm seen; None when there is no such active alarm or it was already."""
        alarm = self.alarms.get(alarm_id)
        if alarm is None or alarm.acked_ms is not None:
            return None
        alarm = replace(alarm, acked_ms=now_ms)
        self.alarms[alarm_id] = alarm
        return self._event("acked", alarm, now_ms)

    # --- rules -------------------------------------------------------------------

    def _threshold(
        self, rule: Rule, alarm_id: str, device: str, values: dict[str, Any], time_ms: int, events: list[Event]
    ) -> None:
        condition = rule.condition
        assert condition is not None
        value = value_of(values, condition.quantity)
        guard = rule.while_
        guard_value = value_of(values, guard.quantity) if guard else None
        if value is None or (guard is not None and guard_value is None):
            return  # unknown: neither raises nor clears
        guard_holds = guard is None or guard.holds(guard_value)  # type: ignore[arg-type]
        if alarm_id in self.alarms:
            if rule.cleared_by(value) or not guard_holds:
                self._clear(alarm_id, value, time_ms, events)
            return
        if not (condition.holds(value) and guard_holds):
            self._pending.pop(alarm_id, None)
            return
        since = self._pending.setdefault(alarm_id, time_ms)
        if time_ms - since >= rule.for_s * 1000:
            self._pending.pop(alarm_id, None)
            self._raise(rule, device, value, time_ms, events)

    def _raise(self, rule: Rule, device: str, value: float | None, time_ms: int, events: list[Event]) -> None:
        alarm = Alarm(rule.id, device, rule.severity, rule.describe(), time_ms, value)
        self.alarms[alarm.id] = alarm
        events.append(self._event("raised", alarm, time_ms))

    def _clear(self, alarm_id: str, value: float | None, time_ms: int, events: list[Event]) -> None:
        alarm = self.alarms.pop(alarm_id, None)
        if alarm is not None:
            events.append(self._event("cleared", replace(alarm, cleared_ms=time_ms), time_ms))

    def _event(self, what: What, alarm: Alarm, time_ms: int) -> Event:
        event = Event(what, alarm, time_ms)
        self.history.append(event.to_dict())
        return event

    # --- state -------------------------------------------------------------------

    def active(self) -> list[Alarm]:
        """The active alarms, alarms before warnings, newest first."""
        return sorted(self.alarms.values(), key=lambda a: (a.severity != "alarm", -a.raised_ms))

    def to_dict(self) -> dict[str, Any]:
        """What a restart needs (JSON-ready): the active alarms and the past events."""
        return {"version": 1, "active": [a.to_dict() for a in self.alarms.values()], "history": list(self.history)}

    def load(self, data: dict[str, Any]) -> None:
        """Take the state a previous run saved (:meth:`to_dict`). Alarms of rules no longer
        configured are dropped (their clearing is not announced: nothing will clear them).

        Raises:
            ValueError: not a state this version wrote.
        """
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a version 1 alarm state")
        known = {r.id for r in self.rules}
        for item in data.get("active", []):
            alarm = Alarm.from_dict(item)
            if alarm.rule in known:
                self.alarms[alarm.id] = alarm
                self._kinds.setdefault(alarm.device, None)
        self.history.extend(data.get("history", []))
