"""The collector's queue on real SQLite files: what reaches the card, what survives what.

Issue 28: readings the writer confirms within ``sync_after_s`` never touch the synced
file; older ones are synced; a crash of the process keeps the fresh file's rows; a queue
of an earlier version is migrated with its rows.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from sunbox.mqtt.queue import DiskQueue, Message

NOW = 1_800_000_000_000
TOPIC = "sunbox/bms1/state"


def held(i: int, created_ms: int = NOW) -> Message:
    return Message(TOPIC, f'{{"i": {i}}}'.encode(), 1, False, created_ms, held=True)


def card_bytes(path: Path) -> int:
    """Bytes of the synced file and its WAL (what a write to the card would grow)."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def synced_rows(path: Path) -> list[tuple[int, bytes]]:
    with sqlite3.connect(path) as db:
        return [(r[0], bytes(r[1])) for r in db.execute("SELECT id, payload FROM queue ORDER BY id")]


def test_readings_stored_within_the_window_never_reach_the_synced_file(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25)
    before = card_bytes(path)
    for i in range(300):  # 30 s of readings, 10 a second
        queue.put(held(i, NOW + i * 100))
    rows = queue.peek(1000)
    assert [r[1].payload for r in rows] == [f'{{"i": {i}}}'.encode() for i in range(300)]
    queue.settle(rows[-1][0], NOW + 30_000)
    assert queue.spill(NOW + 25_000 - 1) == 0, "the oldest is not 25 s old yet"
    assert queue.acknowledge({TOPIC: NOW + 30_000}) == 300
    assert len(queue) == 0
    assert card_bytes(path) == before, "a reading stored in time was written to the card"
    queue.close()
    assert synced_rows(path) == []


def test_readings_not_stored_within_the_window_are_synced_in_order(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25)
    for i in range(10):
        queue.put(held(i, NOW + i * 1000))
    assert queue.spill(NOW + 30_000) == 6  # taken at 0..5 s: 25 s old or more
    assert [p for _, p in synced_rows(path)] == [f'{{"i": {i}}}'.encode() for i in range(6)]
    assert len(queue) == 10 and [r[0] for r in queue.peek(100)] == list(range(1, 11))
    queue.settle(10, NOW + 31_000)  # sent: kept, in both tables, until the writer's report
    assert queue.oldest_unacknowledged_ms() == NOW + 31_000
    assert queue.acknowledge({TOPIC: NOW + 7_000}) == 8
    assert len(queue) == 2 and queue.resend_all() == 2
    assert [m.payload for _, m in queue.peek(10)] == [b'{"i": 8}', b'{"i": 9}']
    queue.close()  # a clean stop syncs what is still fresh
    assert [p for _, p in synced_rows(path)] == [b'{"i": 8}', b'{"i": 9}']


def test_sync_after_zero_syncs_every_reading_as_it_is_put(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    queue = DiskQueue(path, 3600, 10_000, durable=True)
    queue.put(held(1))
    assert synced_rows(path) == [(1, b'{"i": 1}')]
    queue.close()


_CRASH = """
import os, sys
from pathlib import Path
from sunbox.mqtt.queue import DiskQueue, Message
q = DiskQueue(Path(sys.argv[1]), 3600, 10_000, durable=True, sync_after_s=25, fresh_path=Path(sys.argv[2]))
for i in range(5):
    q.put(Message("sunbox/bms1/state", str(i).encode(), 1, False, 1_800_000_000_000 + i, held=True))
os._exit(9)  # no close(): a crash of the collector
"""


def test_a_crash_of_the_collector_keeps_the_fresh_rows(tmp_path: Path) -> None:
    path, fresh = tmp_path / "queue.sqlite3", tmp_path / "run" / "queue-fresh.sqlite3"
    crashed = subprocess.run([sys.executable, "-c", textwrap.dedent(_CRASH), str(path), str(fresh)], check=False)
    assert crashed.returncode == 9
    assert synced_rows(path) == []
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25, fresh_path=fresh)
    assert len(queue) == 5
    queue.put(held(5))
    assert [r[0] for r in queue.peek(10)] == [1, 2, 3, 4, 5, 6]
    queue.close()
    assert [i for i, _ in synced_rows(path)] == [1, 2, 3, 4, 5, 6]


def test_a_row_left_in_both_tables_by_a_crash_mid_spill_counts_once(tmp_path: Path) -> None:
    path, fresh = tmp_path / "queue.sqlite3", tmp_path / "queue-fresh.sqlite3"
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25, fresh_path=fresh)
    queue.put(held(1))
    queue._db.execute("INSERT INTO main.queue SELECT * FROM fresh.queue")  # the spill's first half
    queue._db.close()
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25, fresh_path=fresh)
    assert len(queue) == 1 and len(queue.peek(10)) == 1
    queue.close()


def test_an_unreadable_fresh_file_is_set_aside(tmp_path: Path) -> None:
    path, fresh = tmp_path / "queue.sqlite3", tmp_path / "queue-fresh.sqlite3"
    fresh.write_bytes(b"not a database at all" * 100)
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25, fresh_path=fresh)
    queue.put(held(1))
    assert len(queue.peek(10)) == 1
    queue.close()
    assert (tmp_path / "queue-fresh.sqlite3.corrupt").exists()


def test_a_queue_of_an_earlier_version_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path) as db:  # the table as versions up to issue 16 made it
        db.execute(
            "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
        )
        db.executemany(
            "INSERT INTO queue (topic, payload, qos, retain, created_ms) VALUES (?, ?, 1, 0, ?)",
            [(TOPIC, b"old%d" % i, NOW + i) for i in range(3)],
        )
    queue = DiskQueue(path, 3600, 10_000, durable=True, sync_after_s=25)
    queue.put(held(9))
    assert [m.payload for _, m in queue.peek(10)] == [b"old0", b"old1", b"old2", b'{"i": 9}']
    queue.close()
    with sqlite3.connect(path) as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'queue'").fetchone()[0]
        assert "AUTOINCREMENT" not in sql.upper()
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()[0] in (0, 1)


def test_the_bounds_apply_across_both_tables(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    queue = DiskQueue(path, 60, 100, durable=True, sync_after_s=25)
    for i in range(150):
        queue.put(held(i, NOW + i * 1000))
    queue.spill(NOW + 150_000)  # the oldest 126 to the synced table
    assert queue.prune(NOW + 150_000) == 90  # older than 60 s: taken before 90 s
    assert [m.payload for _, m in queue.peek(1)] == [b'{"i": 90}']
    for i in range(150, 250):
        queue.put(held(i, NOW + 150_000))
    assert queue.prune(NOW + 150_000) == 60 and len(queue) == 100
    assert [m.payload for _, m in queue.peek(1)] == [b'{"i": 150}']
    assert queue.dropped == 150
    queue.close()
