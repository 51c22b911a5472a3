"""The notification outbox: every delivery policy in one place.

Each alarm change is a line put here once per target, in SQLite (synced: a handful of
writes per alarm, none per reading). A target with a line due gets one message holding
all its undelivered lines (a digest: many alarms at once are one notification, not a
flood), each line with the original time of its change. On success the lines are deleted
in the same transaction that follows the send; on failure they wait ``retry_first_s`` (30 s),
doubling up to ``retry_max_s``, and the next message carries them and whatever came since.

Once only: a restart finds in the file exactly what was not delivered. The one window
left is a pulled plug between a target accepting a message and the delete's commit
(milliseconds): that message may come twice. A target removed from the configuration
drops its lines at start (logged).

Targets are keyed by a hash of their URL, never the URL (it holds tokens).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .notify import NotifyError, target_name

LOG = logging.getLogger(__name__)

Send = Callable[[str, str, str], Awaitable[bool]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  target TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  line TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  due_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_target ON outbox (target, due_ms);
"""


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def when(time_ms: int) -> str:
    """A change's time as a notification shows it: local time with its zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(time_ms / 1000))


class Outbox:
    """Durable, per-target queue of notification lines (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        urls: list[str],
        send: Send,
        digest_s: float = 20.0,
        retry_first_s: float = 30.0,
        retry_max_s: float = 1800.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._urls = {_key(url): (i, url) for i, url in enumerate(urls)}
        self._send = send
        self._digest_ms = int(digest_s * 1000)
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        #: messages delivered and failed attempts since start, per target name
        self.delivered: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        gone = self._db.execute(
            f"DELETE FROM outbox WHERE target NOT IN ({','.join('?' * len(self._urls))})", list(self._urls)
        ).rowcount
        if gone:
            LOG.warning("outbox: %d undelivered lines dropped: their target is no longer configured", gone)

    def close(self) -> None:
        self._db.close()

    def put(self, line: str, time_ms: int, now_ms: int) -> None:
        """Queue ``line`` (a change at ``time_ms``) for every target, due after the digest window."""
        with self._db:
            self._db.executemany(
                "INSERT INTO outbox (target, created_ms, line, due_ms) VALUES (?, ?, ?, ?)",
                [(key, time_ms, line, now_ms + self._digest_ms) for key in self._urls],
            )

    def pending(self) -> int:
        """Lines not delivered yet (over every target)."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def next_due_ms(self) -> int | None:
        row = self._db.execute("SELECT MIN(due_ms) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])

    async def deliver(self, now_ms: int) -> int:
        """Send each target with a line due all of its lines, as one message. Returns the
        messages delivered."""
        due = [r[0] for r in self._db.execute("SELECT DISTINCT target FROM outbox WHERE due_ms <= ?", (now_ms,))]
        sent = 0
        for key in due:
            sent += await self._deliver_to(key, now_ms)
        return sent

    async def _deliver_to(self, key: str, now_ms: int) -> int:
        index, url = self._urls[key]
        name = target_name(index, url)
        rows = self._db.execute(
            "SELECT id, line, attempts FROM outbox WHERE target = ? ORDER BY created_ms, id", (key,)
        ).fetchall()
        if not rows:
            return 0
        title = f"Sunbox: {len(rows)} alarm change{'s' if len(rows) > 1 else ''}"
        body = "\n".join(r[1] for r in rows)
        try:
            ok = await self._send(url, title, body)
        except NotifyError as exc:
            LOG.error("outbox: %s: %s", name, exc)
            ok = False
        except Exception as exc:  # noqa: BLE001 - a target's failure is retried, never fatal
            LOG.warning("outbox: %s: %s: %s", name, type(exc).__name__, exc)
            ok = False
        ids = [r[0] for r in rows]
        marks = ",".join("?" * len(ids))
        if ok:
            with self._db:
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
            self.delivered[name] = self.delivered.get(name, 0) + 1
            LOG.info("outbox: %s: delivered %d line(s)", name, len(ids))
            return 1
        attempts = max(r[2] for r in rows) + 1
        delay_s = min(self._retry_max_s, self._retry_first_s * 2 ** (attempts - 1))
        with self._db:
            self._db.execute(
                f"UPDATE outbox SET attempts = ?, due_ms = ? WHERE id IN ({marks})",
                [attempts, now_ms + int(delay_s * 1000), *ids],
            )
        self.failed[name] = self.failed.get(name, 0) + 1
        LOG.warning("outbox: %s: not delivered (attempt %d); next try in %.0f s", name, attempts, delay_s)
        return 0
