"""Bounded FIFO for MQTT messages not yet safe elsewhere (SQLite, WAL).

A row is *unheld* (gone once the broker acknowledged it) or *held* (a reading kept until
the writer reports it stored in InfluxDB, see ``sunbox.mqtt.publisher``). ``sent_ms`` is
0 until the row was published and acknowledged by the broker; held rows then wait for
:meth:`DiskQueue.acknowledge`, or :meth:`DiskQueue.resend_all` makes them go out again.

Two tables, one order (``id``, given by the queue, shared by both):

* the **synced** table in ``path`` (on the SD card). With ``durable=True`` every commit
  to it is synced (``synchronous=FULL``), so what it holds survives a pulled plug.
* with ``sync_after_s > 0``, a **fresh** table first: ``fresh_path`` (the appliance puts
  it on tmpfs under ``/run``, which survives a crash or restart of the process but not a
  power cut) or, when that is None, memory. New rows go there and are never synced; the
  writer usually reports them stored within seconds, and they go without ever touching
  the card. :meth:`DiskQueue.spill` moves every row older than ``sync_after_s`` (by its
  ``created_ms``, the reading's time) into the synced table, and :meth:`close` moves
  them all. So a pulled plug loses at most the readings of the last ``sync_after_s``
  seconds plus one spill period (the publisher spills every second) that were not stored
  yet, and ``sync_after_s = 0`` puts every row straight into the synced table, as a
  queue with nothing fresh (docs/storage.md, issue 28).

A queue made by an earlier version (``AUTOINCREMENT``, without ``held``/``sent_ms``) is
migrated on open, keeping its rows. No ``AUTOINCREMENT``: ids come from the queue's own
counter, so no insert rewrites ``sqlite_sequence``.

Bounds: messages older than ``max_age_s`` and the oldest beyond ``max_messages`` are
dropped by :meth:`DiskQueue.prune`; every drop is counted in :attr:`dropped` and logged.
Thread-safe (the MQTT network thread and the drain thread both use it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

_COLUMNS = "id, topic, payload, qos, retain, created_ms, held, sent_ms"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " held INTEGER NOT NULL DEFAULT 0, sent_ms INTEGER NOT NULL DEFAULT 0)"
)


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
    """FIFO of :class:`Message` rows; ``id`` order is publish order.

    ``sync_after_s`` (seconds, 0 to 3600): how long a row may stay in the fresh table
    before :meth:`spill` syncs it; 0 (the default) syncs rows as they are put (when
    ``durable``). Raises ``sqlite3.Error`` when ``path`` cannot be opened; a fresh file
    that cannot be read is set aside (renamed ``*.corrupt``) and logged.
    """

    def __init__(
        self,
        path: Path,
        max_age_s: float,
        max_messages: int,
        durable: bool = False,
        *,
        sync_after_s: float = 0.0,
        fresh_path: Path | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: each commit is fsynced, so what was put survives a power cut; NORMAL (in
        # WAL mode) survives a crash of the process only
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._migrate()
        self.sync_after_ms = int(sync_after_s * 1000)
        self._tables = ["main.queue"]
        if self.sync_after_ms > 0:
            self._attach_fresh(fresh_path)
            self._tables.append("fresh.queue")
        self._lock = threading.Lock()
        self.max_age_ms = int(max_age_s * 1000)
        self.max_messages = max_messages
        self.dropped = 0
        #: rows moved from the fresh table to the synced one (each was synced once)
        self.spilled = 0
        self._count = sum(self._scalar(f"SELECT COUNT(*) FROM {t}") for t in self._tables)
        self._next_id = 1 + max(self._scalar(f"SELECT COALESCE(MAX(id), 0) FROM {t}") for t in self._tables)

    def _scalar(self, sql: str, params: tuple[object, ...] = ()) -> int:
        return int(self._db.execute(sql, params).fetchone()[0])

    def _migrate(self) -> None:
        """Bring a queue of an earlier version to today's table, rows kept, in one transaction."""
        row = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'queue'").fetchone()
        if row is None:
            self._db.execute(_SCHEMA.format(table="main.queue"))
            return
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(queue)")}
        if "AUTOINCREMENT" not in row[0].upper() and {"held", "sent_ms"} <= columns:
            return
        held = "held" if "held" in columns else "0"
        sent = "sent_ms" if "sent_ms" in columns else "0"
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(_SCHEMA.format(table="main.queue_new"))
        self._db.execute(
            f"INSERT INTO queue_new ({_COLUMNS}) SELECT id, topic, payload, qos, retain, created_ms, {held}, {sent}"
            " FROM queue"
        )
        self._db.execute("DROP TABLE queue")
        self._db.execute("ALTER TABLE queue_new RENAME TO queue")
        self._db.execute("COMMIT")
        LOG.info("disk queue migrated to this version's table (rows kept)")

    def _attach_fresh(self, fresh_path: Path | None) -> None:
        if fresh_path is None:
            self._open_fresh(":memory:")
        else:
            fresh_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open_fresh(str(fresh_path))
            except sqlite3.DatabaseError as exc:
                LOG.error("the fresh queue %s cannot be read (%s): set aside, starting without it", fresh_path, exc)
                if self._attached():
                    self._db.execute("DETACH DATABASE fresh")
                fresh_path.replace(fresh_path.with_name(fresh_path.name + ".corrupt"))
                self._open_fresh(str(fresh_path))
        # a crash between a spill's two transactions left these in both tables
        self._db.execute("DELETE FROM fresh.queue WHERE id IN (SELECT id FROM main.queue)")

    def _open_fresh(self, target: str) -> None:
        """Attach ``target`` as ``fresh`` with its table; sqlite3.DatabaseError if unreadable."""
        self._db.execute("ATTACH DATABASE ? AS fresh", (target,))
        self._db.execute("PRAGMA fresh.journal_mode=WAL")  # memory stays memory
        # never synced: what is here is either stored within seconds or spilled
        self._db.execute("PRAGMA fresh.synchronous=OFF")
        self._db.execute(_SCHEMA.format(table="fresh.queue"))

    def _attached(self) -> bool:
        return any(row[1] == "fresh" for row in self._db.execute("PRAGMA database_list"))

    def __len__(self) -> int:
        return int(self._count)

    def put_many(self, messages: list[Message]) -> None:
        table = self._tables[-1]
        with self._lock:
            first = self._next_id
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT INTO {table} (id, topic, payload, qos, retain, created_ms, held) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (first + i, m.topic, m.payload, m.qos, int(m.retain), m.created_ms, int(m.held))
                    for i, m in enumerate(messages)
                ],
            )
            self._db.execute("COMMIT")
            self._next_id += len(messages)
            self._count += len(messages)

    def put(self, message: Message) -> None:
        self.put_many([message])

    def _union(self, where: str, columns: str = _COLUMNS) -> str:
        return " UNION ALL ".join(f"SELECT {columns} FROM {t} WHERE {where}" for t in self._tables)

    def peek(self, limit: int) -> list[tuple[int, Message]]:
        """The oldest rows not sent yet, in order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, topic, payload, qos, retain, created_ms, held FROM ({self._union('sent_ms = 0')})"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [(r[0], Message(r[1], bytes(r[2]), r[3], bool(r[4]), r[5], bool(r[6]))) for r in rows]

    def _in_each_table(self, work: Callable[[str], int]) -> int:
        """``work(table)`` for every table, in one transaction per database (a transaction
        across an attached WAL database is not atomic anyway); the sum of what it returns."""
        changed = 0
        for table in self._tables:
            self._db.execute("BEGIN")
            try:
                changed += work(table)
            finally:
                self._db.execute("COMMIT")
        return changed

    def _each_table(self, sql: str, params: tuple[object, ...]) -> int:
        """Rows changed by ``sql`` (with ``{table}``) in every table."""
        return self._in_each_table(lambda table: int(self._db.execute(sql.format(table=table), params).rowcount))

    def settle(self, last_id: int, now_ms: int) -> None:
        """The broker acknowledged every unsent row up to ``last_id``: unheld rows go,
        held rows are marked sent at ``now_ms`` and wait for the writer."""

        def work(table: str) -> int:
            gone = self._db.execute(f"DELETE FROM {table} WHERE id <= ? AND sent_ms = 0 AND held = 0", (last_id,))
            self._db.execute(f"UPDATE {table} SET sent_ms = ? WHERE id <= ? AND sent_ms = 0", (now_ms, last_id))
            return int(gone.rowcount)

        with self._lock:
            self._count -= self._in_each_table(work)

    def acknowledge(self, stored: dict[str, int]) -> int:
        """The writer stored every reading of each topic up to its ``time_ms``: drop those
        held rows that were sent. Returns how many rows went."""

        def work(table: str) -> int:
            sql = f"DELETE FROM {table} WHERE held = 1 AND sent_ms > 0 AND topic = ? AND created_ms <= ?"
            return sum(int(self._db.execute(sql, item).rowcount) for item in stored.items())

        with self._lock:
            removed = self._in_each_table(work)
            self._count -= removed
        return removed

    def oldest_unacknowledged_ms(self) -> int | None:
        """When the oldest held row still waiting for the writer was sent, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT MIN(sent_ms) FROM ({self._union('sent_ms > 0', 'sent_ms')})").fetchone()
        return None if row[0] is None else int(row[0])

    def resend_all(self) -> int:
        """Mark every sent, unacknowledged row unsent again; returns how many."""
        with self._lock:
            return self._each_table("UPDATE {table} SET sent_ms = 0 WHERE sent_ms > 0", ())

    def spill(self, now_ms: int | None = None) -> int:
        """Sync every fresh row whose ``created_ms`` is at least ``sync_after_s`` old (all of
        them when ``now_ms`` is None) into the synced table; returns how many moved.

        One synced transaction for the lot; a crash between it and the fresh table's delete
        leaves a row in both, and the copy that stays fresh is skipped when it spills."""
        if len(self._tables) == 1:
            return 0
        through = None if now_ms is None else now_ms - self.sync_after_ms
        where, params = ("created_ms <= ?", (through,)) if through is not None else ("1", ())
        with self._lock:
            if not self._db.execute(f"SELECT 1 FROM fresh.queue WHERE {where} LIMIT 1", params).fetchone():
                return 0
            self._db.execute("BEGIN")
            moved = self._db.execute(
                f"INSERT OR IGNORE INTO main.queue ({_COLUMNS}) SELECT {_COLUMNS} FROM fresh.queue WHERE {where}",
                params,
            ).rowcount
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            gone = self._db.execute(f"DELETE FROM fresh.queue WHERE {where}", params).rowcount
            self._db.execute("COMMIT")
            self._count -= gone - moved  # a row that was in both counted twice
            self.spilled += moved
        return moved

    def prune(self, now_ms: int) -> int:
        """Apply the age and count bounds; return how many messages were dropped."""
        with self._lock:
            dropped = self._each_table("DELETE FROM {table} WHERE created_ms < ?", (now_ms - self.max_age_ms,))
            excess = self._count - dropped - self.max_messages
            if excess > 0:
                row = self._db.execute(
                    f"SELECT id FROM ({self._union('1', 'id')}) ORDER BY id LIMIT 1 OFFSET ?", (excess - 1,)
                ).fetchone()
                if row is not None:
                    dropped += self._each_table("DELETE FROM {table} WHERE id <= ?", (row[0],))
            self._count -= dropped
        if dropped:
            self.dropped += dropped
            LOG.warning("offline queue bound reached: dropped %d oldest messages (%d in total)", dropped, self.dropped)
        return dropped

    def close(self) -> None:
        """Sync every fresh row (a clean stop leaves nothing only in memory or /run), then close."""
        started = time.monotonic()
        moved = self.spill(None)
        if moved:
            LOG.info("synced %d fresh queue rows at close in %.2f s", moved, time.monotonic() - started)
        with self._lock:
            self._db.close()
