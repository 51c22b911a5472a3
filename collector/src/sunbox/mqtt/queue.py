"""Bounded on-disk FIFO for MQTT messages the broker has not taken yet (SQLite, WAL).

Bounds: messages older than ``max_age_s`` and the oldest beyond ``max_messages`` are
dropped by :meth:`DiskQueue.prune`; every drop is counted in :attr:`dropped` and logged.
Thread-safe (the MQTT network thread and the drain thread both use it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    created_ms: int = 0


class DiskQueue:
    """FIFO of :class:`Message` rows; ``id`` order is publish order."""

    def __init__(self, path: Path, max_age_s: float, max_messages: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
        )
        self._lock = threading.Lock()
        self.max_age_ms = int(max_age_s * 1000)
        self.max_messages = max_messages
        self.dropped = 0
        self._count = self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def __len__(self) -> int:
        return int(self._count)

    def put_many(self, messages: list[Message]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO queue (topic, payload, qos, retain, created_ms) VALUES (?, ?, ?, ?, ?)",
                [(m.topic, m.payload, m.qos, int(m.retain), m.created_ms) for m in messages],
            )
            self._db.execute("COMMIT")
            self._count += len(messages)

    def put(self, message: Message) -> None:
        self.put_many([message])

    def peek(self, limit: int) -> list[tuple[int, Message]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created_ms FROM queue ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(r[0], Message(r[1], bytes(r[2]), r[3], bool(r[4]), r[5])) for r in rows]

    def delete_through(self, last_id: int) -> None:
        """Remove every row up to and including ``last_id``."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM queue WHERE id <= ?", (last_id,))
            self._count -= cursor.rowcount

    def prune(self, now_ms: int) -> int:
        """Apply the age and count bounds; return how many messages were dropped."""
        with self._lock:
            dropped = self._db.execute("DELETE FROM queue WHERE created_ms < ?", (now_ms - self.max_age_ms,)).rowcount
            excess = self._count - dropped - self.max_messages
            if excess > 0:
                dropped += self._db.execute(
                    "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)", (excess,)
                ).rowcount
            self._count -= dropped
        if dropped:
            self.dropped += dropped
            LOG.warning("offline queue bound reached: dropped %d oldest messages (%d in total)", dropped, self.dropped)
        return dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()
