"""Backup generations in a target directory: make one, verify it, keep the newest N,
restore one, and record the last run for the display (issue 28).

A generation is a directory ``sunbox-<host>-<UTC time>/`` (mode 0700: it holds the
appliance's tokens, passwords and Bluetooth bonds) with:

* ``influxdb/``: InfluxDB's own full backup (:mod:`sunbox.backup.influx_api`);
* ``files.tar.gz``: the configuration and state directories of ``include``, paths
  relative to ``/``, owners kept by name;
* ``sunbox-backup.json``: the manifest, written last: format, time, host, Sunbox's
  version, the buckets backed up, and every other file's size and SHA-256.

It is built under ``.<name>.partial`` and renamed only once complete and synced, so a
generation that has a manifest is complete. :func:`verify` is the restore check that
needs no server: every file's checksum, every gzip stream read to its end (its CRC),
the tar and the InfluxDB manifest readable, and every bucket of the storage layout
present. Only then are older generations removed.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import shutil
import socket
import tarfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sunbox import __version__

from . import influx_api
from .config import BackupConfig

LOG = logging.getLogger(__name__)

MANIFEST = "sunbox-backup.json"
FORMAT = 1
FILES = "files.tar.gz"
INFLUX_DIR = "influxdb"
CHUNK = 1 << 20


class BackupError(RuntimeError):
    """A backup, verification or restore failed; the message says what and where."""


@dataclass(slots=True)
class Generation:
    """One complete generation: where, when, how big, what it holds."""

    path: Path
    created_ms: int
    size_bytes: int
    buckets: list[str]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _prefix(host: str) -> str:
    return f"sunbox-{host}-"


def generations(target: Path, host: str | None = None) -> list[Path]:
    """The complete generations in ``target`` (a manifest present), oldest first."""
    prefix = _prefix(host) if host else "sunbox-"
    if not target.is_dir():
        return []
    return sorted(p for p in target.iterdir() if p.name.startswith(prefix) and (p / MANIFEST).is_file())


def _archive(include: list[Path], exclude: list[str], destination: Path) -> list[str]:
    """``files.tar.gz`` of the ``include`` paths that exist; the ones archived."""
    skip = set(exclude)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in skip else info

    archived = []
    with tarfile.open(destination, "w:gz", compresslevel=6) as tar:
        for path in include:
            if path.exists():
                tar.add(path, arcname=str(path.relative_to(path.anchor)), filter=keep)
                archived.append(str(path))
            else:
                LOG.info("backup: %s does not exist, not archived", path)
    return archived


def _fsync(path: str | Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (a USB stick caches writes too)."""
    for directory, _dirs, names in os.walk(root):
        for name in names:
            _fsync(os.path.join(directory, name))
        _fsync(directory)


def make(config: BackupConfig, expected_buckets: list[str], now_ms: int | None = None) -> Generation:
    """Make, sync and verify one generation in ``config.target``; then keep the newest
    ``config.generations`` and delete the rest (and any partial one left by a crash).

    Raises:
        BackupError: the target is missing or not mounted, InfluxDB's backup failed, a
            file could not be written, or the new generation did not verify (it is then
            removed, and no older one is).
    """
    target = config.target
    if not target.is_dir():
        raise BackupError(f"target {target} does not exist")
    if config.require_mount and not os.path.ismount(target):
        raise BackupError(f"target {target} is not a mount point: is the USB stick or share there?")
    created_ms = int(time.time() * 1000) if now_ms is None else now_ms
    host = socket.gethostname()
    stamp = datetime.fromtimestamp(created_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{_prefix(host)}{stamp}"
    final = target / name
    if final.exists():
        raise BackupError(f"{final} already exists")
    work = target / f".{name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    try:
        (work / INFLUX_DIR).mkdir(mode=0o700)
        manifest = asyncio.run(
            influx_api.backup(
                config.influx.url, config.influx.resolved_token(), work / INFLUX_DIR, stamp, config.influx.timeout_s
            )
        )
        archived = _archive(config.include, config.exclude, work / FILES)
        files = {
            str(p.relative_to(work)): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(work.rglob("*"))
            if p.is_file()
        }
        document = {
            "format": FORMAT,
            "created_ms": created_ms,
            "host": host,
            "sunbox_version": __version__,
            "buckets": sorted(b["bucketName"] for b in manifest["buckets"]),
            "archived": archived,
            "files": files,
        }
        (work / MANIFEST).write_text(json.dumps(document, indent=2) + "\n")
        _sync_tree(work)
        work.rename(final)
        _fsync(target)
    except (OSError, influx_api.InfluxBackupError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise BackupError(f"backup into {target} failed: {exc}") from exc
    try:
        generation = verify(final, expected_buckets)
    except BackupError:
        shutil.rmtree(final, ignore_errors=True)
        raise
    rotate(target, host, config.generations)
    return generation


def verify(directory: Path, expected_buckets: list[str]) -> Generation:
    """Check a generation without a server (see the module's docstring).

    Raises:
        BackupError: naming the first file or bucket that fails.
    """
    try:
        document = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{directory}: no readable {MANIFEST}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BackupError(f"{directory}: {MANIFEST} is not format {FORMAT}")
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        raise BackupError(f"{directory}: {MANIFEST} lists no files")
    size = 0
    for relative, expected in files.items():
        path = directory / relative
        if not path.is_file() or path.stat().st_size != expected.get("size"):
            raise BackupError(f"{path}: missing or not {expected.get('size')} bytes")
        if _sha256(path) != expected.get("sha256"):
            raise BackupError(f"{path}: checksum differs from the manifest")
        if path.name.endswith(".gz"):
            try:
                with gzip.open(path, "rb") as stream:
                    while stream.read(CHUNK):
                        pass
            except (OSError, EOFError) as exc:
                raise BackupError(f"{path}: not a complete gzip stream: {exc}") from None
        size += expected["size"]
    try:
        with tarfile.open(directory / FILES, "r:gz") as tar:
            tar.getmembers()
        _base, manifest = influx_api.read_manifest(directory / INFLUX_DIR)
    except (OSError, tarfile.TarError, influx_api.InfluxBackupError) as exc:
        raise BackupError(f"{directory}: {exc}") from None
    buckets = sorted(b["bucketName"] for b in manifest["buckets"])
    missing = sorted(set(expected_buckets) - set(buckets))
    if missing:
        raise BackupError(f"{directory}: buckets missing from the backup: {', '.join(missing)}")
    for _shard, file_name in influx_api.shard_files(manifest):
        if f"{INFLUX_DIR}/{file_name}" not in files:
            raise BackupError(f"{directory}: shard file {file_name} is not in {MANIFEST}")
    return Generation(directory, int(document["created_ms"]), size, buckets, files)


def rotate(target: Path, host: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` generations of ``host`` and any partial one; the deleted."""
    removed = generations(target, host)[:-keep]
    removed += [p for p in target.iterdir() if p.name.startswith(f".{_prefix(host)}") and p.name.endswith(".partial")]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
        LOG.info("backup: removed %s", path)
    return removed


def record(state_file: Path, generation: Generation | None, error: str | None, duration_s: float) -> dict[str, Any]:
    """Write the last run's result for the display, keeping the last success's figures
    when this run failed; the state written. A write error is logged, never raised."""
    previous: dict[str, Any] = {}
    try:
        previous = json.loads(state_file.read_text())
    except (OSError, ValueError):
        pass
    now = int(time.time() * 1000)
    state: dict[str, Any] = {
        "last_run_ms": now,
        "ok": error is None,
        "error": error,
        "duration_s": round(duration_s, 1),
    }
    if generation is not None:
        state["last_success_ms"] = generation.created_ms
        state["last_success"] = {k: v for k, v in asdict(generation).items() if k in ("size_bytes", "buckets")} | {
            "path": str(generation.path)
        }
    else:
        for key in ("last_success_ms", "last_success"):
            if key in previous:
                state[key] = previous[key]
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.chmod(0o644)
        partial.replace(state_file)
    except OSError as exc:
        LOG.error("backup: cannot record the result in %s: %s", state_file, exc)
    return state


def restore(directory: Path, url: str, token: str, root: Path, expected_buckets: list[str]) -> str:
    """Verify a generation, restore InfluxDB from it (replacing everything there), then
    unpack its files under ``root`` (``/`` on the Pi), owners by name. The operator token
    valid afterwards.

    Raises:
        BackupError: the generation does not verify, InfluxDB refused the restore, or the
            archive holds a path that would land outside ``root``.
    """
    verify(directory, expected_buckets)
    try:
        token = asyncio.run(influx_api.restore_full(url, token, directory / INFLUX_DIR))
    except influx_api.InfluxBackupError as exc:
        raise BackupError(f"restore of InfluxDB from {directory} failed: {exc}") from exc
    try:
        with tarfile.open(directory / FILES, "r:gz") as tar:
            tar.extractall(root, filter="tar")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"unpacking {directory / FILES} under {root} failed: {exc}") from exc
    return token
