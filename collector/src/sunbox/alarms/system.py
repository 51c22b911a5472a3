"""The appliance's own health as alarm inputs: the pseudo-device ``sunbox`` (kind ``sunbox``).

Pure: :class:`SystemFacts` holds what the service last learnt, :meth:`SystemFacts.values`
turns it into the quantities below at a given time; the service observes them every
``system.check_s`` like a reading, so the ordinary rules (delay, hysteresis) apply. A
fact not known (not configured, not heard yet) is ``None``: it neither raises nor clears.

| quantity | unit | from |
|---|---|---|
| ``collector_online`` | bool | ``<prefix>/collector/availability`` (the collector's last will) |
| ``broker_connected`` | bool | the service's own broker connection (an alarm about it can only be notified) |
| ``writer_report_age_s`` | s | since the writer's last report (``<prefix>/_store/stored``), while readings come |
| ``storage_up`` | bool | InfluxDB's ``/health`` answering ``pass`` |
| ``disk_writable`` | bool | the card holding the history not remounted read-only (:mod:`sunbox.disk`) |
| ``disk_free_pct`` | % | its free space |
| ``backup_age_h`` | h | since the last good backup (``<prefix>/backup/state``); only once a backup has run |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEVICE = "sunbox"
KIND = "sunbox"

#: name -> (label, unit): the quantities a rule may name for the device ``sunbox``
SYSTEM_QUANTITIES: dict[str, tuple[str, str | None]] = {
    "collector_online": ("Collector running", None),
    "broker_connected": ("Broker connected", None),
    "writer_report_age_s": ("Writer's last report", "s"),
    "storage_up": ("InfluxDB answering", None),
    "disk_writable": ("Card writable", None),
    "disk_free_pct": ("Card free", "%"),
    "backup_age_h": ("Last good backup", "h"),
}
#: readings older than this say nothing about the writer (nothing to store, nothing reported)
READINGS_RECENT_S = 120.0
#: a backup that never succeeded counts as this old
NEVER_H = 1e6


@dataclass
class SystemFacts:
    """What the service last learnt (times in unix ms; None: not known)."""

    collector_online: bool | None = None
    broker_connected: bool | None = None
    storage_up: bool | None = None
    last_store_report_ms: int | None = None
    last_reading_ms: int | None = None
    disk_status: str | None = None
    disk_free_pct: float | None = None
    backup_seen: bool = False
    backup_success_ms: int | None = None
    #: when the service started: the writer gets that long to report first
    started_ms: int = 0

    def backup_state(self, payload: dict[str, Any]) -> None:
        """Take ``<prefix>/backup/state`` (:func:`sunbox.backup.announce.state_payload`).

        Raises:
            ValueError: not that shape.
        """
        last = payload.get("last_success")
        if not isinstance(payload.get("ok"), bool) or not (last is None or isinstance(last, str)):
            raise ValueError("not a backup state")
        self.backup_seen = True
        self.backup_success_ms = None if last is None else int(datetime.fromisoformat(last).timestamp() * 1000)

    def values(self, now_ms: int) -> dict[str, Any]:
        """The quantities at ``now_ms`` (see the module docstring)."""
        recent = self.last_reading_ms is not None and now_ms - self.last_reading_ms < READINGS_RECENT_S * 1000
        since = self.last_store_report_ms if self.last_store_report_ms is not None else self.started_ms
        backup_h = None
        if self.backup_seen:
            backup_h = NEVER_H if self.backup_success_ms is None else (now_ms - self.backup_success_ms) / 3_600_000
        return {
            "collector_online": self.collector_online,
            "broker_connected": self.broker_connected,
            "writer_report_age_s": round((now_ms - since) / 1000, 1) if recent else None,
            "storage_up": self.storage_up,
            "disk_writable": None if self.disk_status in (None, "unknown") else self.disk_status != "read-only",
            "disk_free_pct": self.disk_free_pct,
            "backup_age_h": None if backup_h is None else round(backup_h, 2),
        }
