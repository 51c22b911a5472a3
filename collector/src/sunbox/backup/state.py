"""The last backup run as the display sees it (``state.json``, written by
:func:`sunbox.backup.generations.record`).

:func:`summary` is pure: the file's JSON, the time now and the age limit in, what the
display shows out. :func:`read_summary` is the I/O around it and never raises.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: a backup older than this is an alarm (issue 28: "older than two days")
DEFAULT_MAX_AGE_S = 2 * 86_400


def summary(state: Any, now_ms: int, max_age_s: float) -> dict[str, Any]:
    """``{"configured", "status", "last_success_ms", "age_s", "size_bytes", "error"}``.

    ``status``: ``none`` (no backup has run here: not set up), ``ok`` (the last success
    is younger than ``max_age_s``), ``overdue`` (older, or never succeeded; the last
    error, if any, says why), or ``unknown`` (the state file is not what
    :func:`~sunbox.backup.generations.record` writes).
    """
    if state is None:
        return {"configured": False, "status": "none"}
    if not isinstance(state, dict):
        return {"configured": True, "status": "unknown", "error": "unreadable state file"}
    success = state.get("last_success_ms")
    found = state.get("last_success")
    last: dict[str, Any] = found if isinstance(found, dict) else {}
    age_s = (now_ms - success) / 1000 if isinstance(success, int) else None
    overdue = age_s is None or age_s > max_age_s
    return {
        "configured": True,
        "status": "overdue" if overdue else "ok",
        "last_success_ms": success if isinstance(success, int) else None,
        "age_s": None if age_s is None else round(age_s),
        "size_bytes": last.get("size_bytes"),
        "last_run_ok": state.get("ok"),
        "error": state.get("error"),
    }


def read_summary(path: Path | None, now_ms: int, max_age_s: float = DEFAULT_MAX_AGE_S) -> dict[str, Any]:
    """:func:`summary` of the state file at ``path`` (None or absent: not set up)."""
    if path is None:
        return summary(None, now_ms, max_age_s)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return summary(None, now_ms, max_age_s)
    except OSError as exc:
        return {"configured": True, "status": "unknown", "error": str(exc)[:200]}
    try:
        return summary(json.loads(text), now_ms, max_age_s)
    except ValueError:
        return summary("unreadable", now_ms, max_age_s)
