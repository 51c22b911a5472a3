"""The Sunbox data model: readings and health records as published on MQTT.

The names, units and sign conventions are the contract for MQTT, InfluxDB and the
dashboards; ``docs/data-model.md`` is the single place that lists them.

A reading's JSON object is flat: the envelope keys ``device_id``, ``kind`` and
``time_ms`` (UTC milliseconds since the Unix epoch, when the device was read) followed
by the quantities in data-model names.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["battery", "bank", "charger", "inverter", "dcdc", "dc_meter", "protect", "health"]

ENVELOPE_KEYS = ("device_id", "kind", "time_ms")


def now_ms() -> int:
    """Current UTC time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become None (never published as numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded reading of one device.

    ``values`` maps data-model names to floats, ints, bools, strings, lists of floats,
    or None (quantity not available on this device right now).
    """

    device_id: str
    kind: Kind
    time_ms: int
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object published on ``sunbox/<device_id>/state`` (or ``/health``)."""
        out: dict[str, Any] = {"device_id": self.device_id, "kind": self.kind, "time_ms": self.time_ms}
        for key, value in self.values.items():
            out[key] = _clean(value)
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


@dataclass(slots=True)
class Health:
    """Link health of one device, published like a reading on ``sunbox/<id>/health``.

    ``rssi`` in dBm (None until an advert was seen), ``poll_latency_ms`` is the last
    poll's round trip, ``last_reading_ms`` the UTC time of the last good reading.
    """

    device_id: str
    connected: bool = False
    last_reading_ms: int | None = None
    reconnects: int = 0
    consecutive_errors: int = 0
    errors_total: int = 0
    skipped_frames: int = 0
    adapter_recoveries: int = 0
    rssi: int | None = None
    poll_latency_ms: float | None = None
    last_error: str | None = None

    def record_reading(self, time_ms: int) -> None:
        """A good reading was published at ``time_ms``: resets the error run."""
        self.last_reading_ms = time_ms
        self.consecutive_errors = 0

    def record_error(self, message: str) -> None:
        """Count one error (timeout, bad frame, refused key, ...); keeps its text (200 chars)."""
        self.errors_total += 1
        self.consecutive_errors += 1
        self.last_error = message[:200]

    def snapshot(self, time_ms: int | None = None) -> Reading:
        """A :class:`Reading` of kind ``health`` with the current counters."""
        return Reading(
            device_id=self.device_id,
            kind="health",
            time_ms=now_ms() if time_ms is None else time_ms,
            values={
                "connected": self.connected,
                "last_reading_ms": self.last_reading_ms,
                "reconnects": self.reconnects,
                "consecutive_errors": self.consecutive_errors,
                "errors_total": self.errors_total,
                "skipped_frames": self.skipped_frames,
                "adapter_recoveries": self.adapter_recoveries,
                "rssi": self.rssi,
                "poll_latency_ms": self.poll_latency_ms,
                "last_error": self.last_error,
            },
        )
