"""Optional CSV files of every reading, for people without a database.

One directory per device, one file per UTC day: ``<directory>/<device_id>/<YYYY-MM-DD>.csv``.
Columns: ``time_utc`` (ISO 8601), ``time_ms``, ``kind``, then the data-model names in
the order first seen. Lists become numbered columns, as in InfluxDB: ``cell_voltage_01``, ...
When a reading brings a name the open file has no column for, the day continues in
``<YYYY-MM-DD>.2.csv`` (then ``.3``, ...) with the wider header, so no file ever changes
its header. Rows are flushed as they are written. Health records are not written. A
write error (disk full, permissions) is logged and counted; it never stops the collector.
Files older than ``keep_days`` are deleted once a day (0 keeps them forever).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sunbox.model import Reading

LOG = logging.getLogger(__name__)


def flatten(values: dict[str, Any]) -> dict[str, Any]:
    """Lists to numbered names (``cell_voltages`` -> ``cell_voltage_01``...), None to empty."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, list):
            stem = name[:-1] if name.endswith("s") else name
            for index, item in enumerate(value, start=1):
                out[f"{stem}_{index:02d}"] = "" if item is None else item
        else:
            out[name] = "" if value is None else value
    return out


@dataclass
class _Open:
    path: Path
    day: str
    part: int
    columns: list[str]
    handle: IO[str]
    writer: Any = field(default=None)


class CsvSink:
    def __init__(self, directory: Path, keep_days: int = 0) -> None:
        self.directory = directory
        self.keep_days = keep_days
        self.rows = 0
        self.errors = 0
        self._open: dict[str, _Open] = {}
        self._next_prune = 0.0

    def write(self, reading: Reading) -> None:
        if reading.kind == "health":
            return
        try:
            self._write(reading)
        except OSError as exc:
            self.errors += 1
            LOG.error("CSV sink: cannot write %s: %s", reading.device_id, exc)
        if self.keep_days and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + 86400
            self.prune()

    def _write(self, reading: Reading) -> None:
        stamp = datetime.fromtimestamp(reading.time_ms / 1000, UTC)
        day = stamp.strftime("%Y-%m-%d")
        row = {"time_utc": stamp.isoformat(timespec="milliseconds"), "time_ms": reading.time_ms, "kind": reading.kind}
        row.update(flatten(reading.values))
        current = self._open.get(reading.device_id)
        if current is None or current.day != day or not set(row) <= set(current.columns):
            self._rotate(reading.device_id, day, row, current)
            current = self._open[reading.device_id]
        current.writer.writerow(row)
        current.handle.flush()
        self.rows += 1

    def _rotate(self, device_id: str, day: str, row: dict[str, Any], current: _Open | None) -> None:
        columns = list(row)
        if current is not None:
            current.handle.close()
            if current.day == day:  # a wider header: keep the old order, new names at the end
                columns = current.columns + [c for c in row if c not in current.columns]
        folder = self.directory / device_id
        folder.mkdir(parents=True, exist_ok=True)
        part = current.part + 1 if current is not None and current.day == day else 1
        while True:
            path = folder / (f"{day}.csv" if part == 1 else f"{day}.{part}.csv")
            if not path.exists():
                break
            existing = path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
            if set(columns) <= set(existing):  # continuing after a restart
                columns = existing
                break
            part += 1
        new = not path.exists()
        handle = path.open("a", newline="", encoding="utf-8")
        writer = csv.DictWriter(handle, fieldnames=columns, restval="", extrasaction="raise")
        if new:
            writer.writeheader()
        self._open[device_id] = _Open(path, day, part, columns, handle, writer)

    def prune(self) -> None:
        """Delete files older than ``keep_days`` (by the date in their name)."""
        cutoff = (datetime.now(UTC) - timedelta(days=self.keep_days)).strftime("%Y-%m-%d")
        for path in self.directory.glob("*/*.csv"):
            if path.name[:10] < cutoff:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        for current in self._open.values():
            current.handle.close()
        self._open.clear()
