"""InfluxDB 2's own backup and restore, over its HTTP API (aiohttp).

A backup is a consistent snapshot taken by the server: ``GET /api/v2/backup/metadata``
answers a ``multipart/mixed`` body with three parts, ``kv`` (the BoltDB metadata store:
orgs, buckets, tasks, tokens), ``sql`` (the SQLite store) and ``buckets`` (JSON: each
bucket's retention policies, shard groups and shard ids); ``GET
/api/v2/backup/shards/{id}`` answers one shard's TSM and index files as a tar. A full
restore replaces everything on the target server: ``POST /api/v2/restore/kv`` (answers
``{"token": ...}`` when the restored store changed the operator token), ``POST
/api/v2/restore/sql``, then ``POST /api/v2/restore/shards/{id}`` per shard. All of them
need the operator token.

Sources: InfluxDB 2.7's OpenAPI contract (``/api/v2/backup/*``, ``/api/v2/restore/*``)
and InfluxData's ``influx`` CLI, which uses the same calls
(influxdata/influx-cli ``clients/backup/backup.go``, ``clients/restore/restore.go``). The
files are laid out as that CLI lays them out (``<base>.bolt.gz``, ``<base>.sqlite.gz``,
``<base>.<shard>.tar.gz`` and ``<base>.manifest``, manifest version 2, gzip), so that
``influx restore --full`` is meant to read them too; that is not tested here (the CLI is
not available on this project's machines), only Sunbox's own restore is.

Errors: :class:`InfluxBackupError` with the call and the server's answer.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

#: manifest version of InfluxData's influx CLI that this layout follows
MANIFEST_VERSION = 2
#: the CLI's FileCompression enum: 0 none, 1 gzip
GZIP = 1
CHUNK = 1 << 16
#: a shard's snapshot refused while its engine compacts ("snapshots disabled", HTTP 500)
#: is asked for again after these pauses (s) before the run fails
SHARD_RETRY_S = (2.0, 5.0, 15.0, 30.0)
LOG = logging.getLogger(__name__)


class InfluxBackupError(RuntimeError):
    """A backup or restore call failed; the message names the call and the server's answer."""


@asynccontextmanager
async def _session(token: str, timeout_s: float) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Token {token}"},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_s),
        auto_decompress=False,
    ) as session:
        yield session


async def _fail(what: str, response: aiohttp.ClientResponse) -> InfluxBackupError:
    text = (await response.text(errors="replace"))[:300]
    return InfluxBackupError(f"{what}: HTTP {response.status}: {text}")


async def _save(chunks: AsyncIterator[bytes], path: Path, gzipped: bool) -> int:
    """Write a body to ``path`` gzip-compressed (compressing it unless it already is); the
    bytes written."""
    with path.open("wb") as raw:
        out: Any = raw if gzipped else gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)
        try:
            async for chunk in chunks:
                out.write(chunk)
        finally:
            if out is not raw:
                out.close()
        return raw.tell()


async def _part_chunks(part: aiohttp.BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def backup(url: str, token: str, directory: Path, base: str, timeout_s: float = 600) -> dict[str, Any]:
    """Back up the whole server into ``directory`` (which exists); the manifest, also
    written to ``<base>.manifest``. Shards deleted while the backup runs (retention) are
    skipped.

    Raises:
        InfluxBackupError: a call failed or its answer was not what the API describes.
    """
    manifest: dict[str, Any] = {"manifestVersion": MANIFEST_VERSION, "buckets": []}
    async with _session(token, timeout_s) as session:
        # identity: the multipart body is read as it streams (the files are gzipped here)
        metadata = f"{url}/api/v2/backup/metadata"
        async with session.get(metadata, headers={"Accept-Encoding": "identity"}) as response:
            if response.status != 200:
                raise await _fail("backup metadata", response)
            buckets: list[dict[str, Any]] | None = None
            reader = aiohttp.MultipartReader.from_response(response)
            if response.headers.get("Content-Encoding", "identity") != "identity":
                raise InfluxBackupError("backup metadata: answered with a Content-Encoding it was not asked for")
            while (part := await reader.next()) is not None:
                if not isinstance(part, aiohttp.BodyPartReader):
                    raise InfluxBackupError("backup metadata: a nested multipart part")
                name = part.name
                if name in ("kv", "sql"):
                    file_name = f"{base}.{'bolt' if name == 'kv' else 'sqlite'}.gz"
                    size = await _save(_part_chunks(part), directory / file_name, gzipped=False)
                    manifest[name] = {"fileName": file_name, "size": size, "compression": GZIP}
                elif name == "buckets":
                    buckets = json.loads(bytes(await part.read()))
                else:
                    raise InfluxBackupError(f"backup metadata: unexpected part {name!r}")
        if buckets is None or "kv" not in manifest:
            raise InfluxBackupError("backup metadata: the kv or buckets part is missing")
        for bucket in buckets:
            for policy in bucket.get("retentionPolicies", []):
                for group in policy.get("shardGroups", []):
                    kept = []
                    for shard in group.get("shards", []):
                        entry = await _backup_shard(session, url, directory, base, int(shard["id"]))
                        if entry is not None:
                            kept.append({**shard, **entry})
                    group["shards"] = kept
            manifest["buckets"].append(bucket)
    (directory / f"{base}.manifest").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


async def _backup_shard(
    session: aiohttp.ClientSession, url: str, directory: Path, base: str, shard_id: int
) -> dict[str, Any] | None:
    """One shard's files, saved gzipped; None when retention removed it meanwhile.

    InfluxDB answers HTTP 500 "snapshots disabled" while the shard's engine has its
    snapshots switched off for a compaction (influxdb tsm1 ``Compactor.WriteSnapshot``,
    ``errSnapshotsDisabled``): asked again after each pause of :data:`SHARD_RETRY_S`.
    """
    for pause in SHARD_RETRY_S:
        try:
            return await _try_backup_shard(session, url, directory, base, shard_id, busy_is_final=False)
        except _Busy as busy:
            LOG.warning("shard %d: %s; asking again in %.0f s", shard_id, busy, pause)
            await asyncio.sleep(pause)
    return await _try_backup_shard(session, url, directory, base, shard_id, busy_is_final=True)


class _Busy(Exception):
    """InfluxDB refused a shard's snapshot for now (HTTP 500)."""


async def _try_backup_shard(
    session: aiohttp.ClientSession, url: str, directory: Path, base: str, shard_id: int, busy_is_final: bool
) -> dict[str, Any] | None:
    async with session.get(f"{url}/api/v2/backup/shards/{shard_id}", headers={"Accept-Encoding": "gzip"}) as response:
        if response.status == 404:  # removed by retention while the backup ran
            return None
        if response.status == 500 and not busy_is_final:
            raise _Busy((await response.text(errors="replace"))[:200])
        if response.status != 200:
            raise await _fail(f"backup of shard {shard_id}", response)
        file_name = f"{base}.{shard_id}.tar.gz"
        gzipped = response.headers.get("Content-Encoding") == "gzip"
        size = await _save(response.content.iter_chunked(CHUNK), directory / file_name, gzipped)
    return {"fileName": file_name, "size": size, "compression": GZIP}


def read_manifest(directory: Path) -> tuple[str, dict[str, Any]]:
    """The base name and manifest of the InfluxDB backup in ``directory``.

    Raises:
        InfluxBackupError: no manifest, several, or one that is not version 2 JSON.
    """
    found = sorted(directory.glob("*.manifest"))
    if len(found) != 1:
        raise InfluxBackupError(f"{directory}: expected one *.manifest, found {len(found)}")
    try:
        manifest = json.loads(found[0].read_text())
    except (OSError, ValueError) as exc:
        raise InfluxBackupError(f"{found[0]}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("manifestVersion") != MANIFEST_VERSION:
        raise InfluxBackupError(f"{found[0]}: not a version {MANIFEST_VERSION} manifest")
    return found[0].name.removesuffix(".manifest"), manifest


def shard_files(manifest: dict[str, Any]) -> list[tuple[int, str]]:
    """(shard id, file name) of every shard in a manifest."""
    return [
        (int(shard["id"]), str(shard["fileName"]))
        for bucket in manifest.get("buckets", [])
        for policy in bucket.get("retentionPolicies", [])
        for group in policy.get("shardGroups", [])
        for shard in group.get("shards", [])
    ]


async def restore_full(url: str, token: str, directory: Path, timeout_s: float = 600) -> str:
    """Replace everything on the server with the backup in ``directory``: metadata, then
    every shard. Returns the operator token valid afterwards (the restored store's, when
    the server reports one; else ``token``).

    Raises:
        InfluxBackupError: a call failed; the server may then hold part of the backup.
    """
    _base, manifest = read_manifest(directory)
    async with _session(token, timeout_s) as session:
        token = (
            await _post_file(session, f"{url}/api/v2/restore/kv", directory / manifest["kv"]["fileName"], "kv") or token
        )
    async with _session(token, timeout_s) as session:
        if "sql" in manifest:
            await _post_file(session, f"{url}/api/v2/restore/sql", directory / manifest["sql"]["fileName"], "sql")
        for shard_id, file_name in shard_files(manifest):
            await _post_file(
                session, f"{url}/api/v2/restore/shards/{shard_id}", directory / file_name, f"shard {shard_id}"
            )
    return token


async def _post_file(session: aiohttp.ClientSession, url: str, path: Path, what: str) -> str | None:
    """POST a gzip file as it is (``Content-Encoding: gzip``); the new operator token if the answer names one."""
    with path.open("rb") as body:
        headers = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
        async with session.post(url, data=body, headers=headers) as response:
            if response.status not in (200, 204):
                raise await _fail(f"restore of {what}", response)
            if response.status == 200 and response.content_type == "application/json":
                answer = await response.json()
                token = answer.get("token") if isinstance(answer, dict) else None
                return str(token) if token else None
    return None
