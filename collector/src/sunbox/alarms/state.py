"""The alarm engine's state on disk: one JSON file, rewritten only when an alarm changes.

The write is atomic (a temporary file, fsync, rename, fsync of the directory), so a pulled
plug leaves the old state or the new one, never half of either. On an SD card this costs
one small synced write per raised, cleared or acknowledged alarm, nothing per reading.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


def save(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state`` as JSON, atomically and synced.

    Raises:
        OSError: the directory is not writable, or the disk is full or read-only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as out:
        json.dump(state, out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none or it cannot be read (logged: the
    engine then starts empty, and alarms still true are raised again)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        LOG.error("alarm state %s unreadable, starting without it: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None
