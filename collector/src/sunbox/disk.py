"""The state of the filesystem that holds the history: writable, read-only or full (issue 28).

An SD card that starts failing makes ext4 remount itself read-only (``errors=remount-ro``,
Raspberry Pi OS's root mount) and InfluxDB then refuses every write; a full card does the
same with no remount. Neither stops the live screen, so the display has to say it.

The read-only test reads the *superblock's* options, the last field of
``/proc/self/mountinfo`` (``proc(5)``: "super options"), not the mount's own: a service
confined with ``ProtectSystem=strict`` sees ``/`` through a read-only bind mount, so the
mount's options and ``statvfs``'s ``ST_RDONLY`` say read-only even on a healthy card. The
superblock is shared by every mount of the filesystem, so its ``ro`` is the card's.

:func:`parse_mountinfo` and :func:`mount_of` are pure; :func:`read_state` is the I/O around
them (``/proc/self/mountinfo`` and ``os.statvfs`` of the mount point).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

LOG = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")

Status = Literal["ok", "low", "full", "read-only", "unknown"]


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo``: where, what, and whether its superblock is read-only."""

    mount_point: str
    fs_type: str
    source: str
    read_only: bool


def _unescape(field: str) -> str:
    """Mount points escape space, tab, newline and backslash as ``\\ooo`` octal (proc(5))."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/<pid>/mountinfo`` text, in its order (later mounts on top).

    Line format (proc(5)): ``id parent major:minor root mount_point mount_options
    [optional fields...] - fs_type source super_options``. A malformed line is skipped
    and logged; it never raises.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            fs_type, source, super_options = fields[dash + 1 : dash + 4]
        except ValueError:
            if line.strip():
                LOG.warning("mountinfo: skipped a malformed line: %.120r", line)
            continue
        mounts.append(Mount(_unescape(fields[4]), fs_type, _unescape(source), "ro" in super_options.split(",")))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds ``path`` (absolute, normalised): the longest mount point that
    contains it, the last listed among equals (it is on top). None if nothing matches."""
    best: Mount | None = None
    inside = path.rstrip("/") + "/"
    for mount in mounts:
        holds = inside.startswith(mount.mount_point.rstrip("/") + "/")
        if holds and (best is None or len(mount.mount_point) >= len(best.mount_point)):
            best = mount
    return best


@dataclass(frozen=True, slots=True)
class DiskState:
    """The filesystem holding ``path``: ``status`` and its evidence.

    ``status``: ``read-only`` (superblock remounted read-only: nothing is stored), ``full``
    (no byte left for an unprivileged writer), ``low`` (under ``low_free_bytes``), ``ok``, or
    ``unknown`` when it could not be read (``error`` says why). Sizes in bytes, as an
    unprivileged process may use them (``f_bavail``).
    """

    status: Status
    path: str
    mount_point: str | None = None
    fs_type: str | None = None
    source: str | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(read_only: bool, free_bytes: int, low_free_bytes: int) -> Status:
    """The status of a filesystem from its superblock flag and free space."""
    if read_only:
        return "read-only"
    if free_bytes <= 0:
        return "full"
    if free_bytes < low_free_bytes:
        return "low"
    return "ok"


def read_state(path: str, low_free_bytes: int, mountinfo: Path = MOUNTINFO) -> DiskState:
    """The :class:`DiskState` of the filesystem holding ``path`` (need not be readable by
    this process: only its mount point is looked at). Never raises: an ``OSError`` gives
    status ``unknown`` with the error's text."""
    path = os.path.normpath(path)
    try:
        mount = mount_of(path, parse_mountinfo(mountinfo.read_text()))
        if mount is None:
            return DiskState("unknown", path, error=f"no mount holds {path}")
        stats = os.statvfs(mount.mount_point)
    except OSError as exc:
        return DiskState("unknown", path, error=str(exc)[:200])
    free = stats.f_bavail * stats.f_frsize
    return DiskState(
        classify(mount.read_only, free, low_free_bytes),
        path,
        mount.mount_point,
        mount.fs_type,
        mount.source,
        free,
        stats.f_blocks * stats.f_frsize,
    )
