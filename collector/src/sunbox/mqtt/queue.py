"""Bounded on-disk FIFO for MQTT messages not yet safe elsewhere (SQLite, WAL).

A row is *unheld* (gone once the broker acknowledged it) or *held* (a reading kept until
the writer reports it stored in InfluxDB, see ``sunbox.mqtt.publisher``). ``sent_ms`` is
0 until the row was published and acknowledged by the broker; held rows then wait for
:meth:`DiskQueue.acknowledge`, or :meth:`DiskQueue.resend_all` makes them go out again.

Durability: with ``durable=True`` every insert is synced to disk before it returns
(``synchronous=FULL``), so a reading the collector has taken survives a pulled plug.

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
    #: kept in the queue until the writer reports it stored (not only the broker)
    held: bool = False


class DiskQueue:
    """FIFO of :class:`Message` rows; ``id`` order is publish order."""

    def __init__(self, path: Path, max_age_s: float, max_messages: int, durable: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: each commit is fsynced, so what was put survives a power cut; NORMAL (in
        # WAL mode) survives a crash of the process only
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(queue)")}
        for column in ("held", "sent_ms"):  # queues made by earlier versions lack them
            if column not in columns:
                self._db.execute(f"ALTER TABLE queue ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
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
                "INSERT INTO queue (topic, payload, qos, retain, created_ms, held) VALUES (?, ?, ?, ?, ?, ?)",
                [(m.topic, m.payload, m.qos, int(m.retain), m.created_ms, int(m.held)) for m in messages],
            )
            self._db.execute("COMMIT")
            self._count += len(messages)

    def put(self, message: Message) -> None:
        self.put_many([message])

    def peek(self, limit: int) -> list[tuple[int, Message]]:
        """The oldest rows not sent yet, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created_ms, held FROM queue WHERE sent_ms = 0"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [(r[0], Message(r[1], bytes(r[2]), r[3], bool(r[4]), r[5], bool(r[6]))) for r in rows]

    def settle(self, last_id: int, now_ms: int) -> None:
        """The broker acknowledged every unsent row up to ``last_id``: unheld rows go,
        held rows are marked sent at ``now_ms`` and wait for the writer."""
        with self._lock:
            self._db.execute("BEGIN")
            gone = self._db.execute("DELETE FROM queue WHERE id <= ? AND sent_ms = 0 AND held = 0", (last_id,))
            self._db.execute("UPDATE queue SET sent_ms = ? WHERE id <= ? AND sent_ms = 0", (now_ms, last_id))
            self._db.execute("COMMIT")
            self._count -= gone.rowcount

    def acknowledge(self, stored: dict[str, int]) -> int:
        """The writer stored every reading of each topic up to its ``time_ms``: drop those
        held rows that were sent. Returns how many rows went."""
        removed = 0
        with self._lock:
            self._db.execute("BEGIN")
            for topic, through_ms in stored.items():
                removed += self._db.execute(
                    "DELETE FROM queue WHERE held = 1 AND sent_ms > 0 AND topic = ? AND created_ms <= ?",
                    (topic, through_ms),
                ).rowcount
            self._db.execute("COMMIT")
            self._count -= removed
        return removed

    def oldest_unacknowledged_ms(self) -> int | None:
        """When the oldest held row still waiting for the writer was sent, or None."""
        with self._lock:
            row = self._db.execute("SELECT MIN(sent_ms) FROM queue WHERE sent_ms > 0").fetchone()
        return None if row[0] is None else int(row[0])

    def resend_all(self) -> int:
        """Mark every sent, unacknowledged row unsent again; returns how many."""
        with self._lock:
            return int(self._db.execute("UPDATE queue SET sent_ms = 0 WHERE sent_ms > 0").rowcount)

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
