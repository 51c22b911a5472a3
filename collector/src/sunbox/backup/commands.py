"""``sunbox backup run|verify|list|restore``: the nightly backup and its way back (docs/backup.md).

Exit codes: 0 done, 1 the backup, check or restore failed (the message says why, and
``run`` records it for the display), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sunbox.config import ConfigError, resolve_secret
from sunbox.storage import layout as layout_mod

from . import announce, generations
from . import config as config_mod

LOG = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    backup = sub.add_parser("backup", help="back up InfluxDB, the configuration and state; check or restore one")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True, metavar="{run,verify,list,restore}")
    run = backup_sub.add_parser("run", help="make one generation in the target, verify it, keep the newest N")
    run.add_argument("-c", "--config", type=Path, default=config_mod.DEFAULT_PATH, help="configuration file")
    run.add_argument("--check", action="store_true", help="validate the configuration and exit")
    verify = backup_sub.add_parser("verify", help="check a generation's files, checksums and buckets")
    verify.add_argument("generation", type=Path, help="the generation's directory")
    verify.add_argument("--layout", type=Path, default=None, help="storage layout whose buckets must be present")
    listing = backup_sub.add_parser("list", help="the generations in a directory, oldest first (JSON)")
    listing.add_argument("target", type=Path)
    restore = backup_sub.add_parser(
        "restore", help="replace InfluxDB's contents and unpack the files from a generation"
    )
    restore.add_argument("generation", type=Path, help="the generation's directory")
    restore.add_argument("--url", default="http://localhost:8086", help="InfluxDB")
    restore.add_argument(
        "--token-file", type=Path, required=True, help="file holding InfluxDB's operator token, '-' for standard input"
    )
    restore.add_argument("--root", type=Path, default=Path("/"), help="where the archived files are unpacked")
    restore.add_argument("--layout", type=Path, default=None, help="storage layout whose buckets must be present")


def _buckets(path: Path | None) -> list[str]:
    """The buckets a generation must hold: the readings' (a generation made before the
    alarm events' bucket existed still restores; the events bucket is backed up with the
    rest when it is there)."""
    return [] if path is None else list(layout_mod.load(path).data_buckets())


def cmd_backup(args: argparse.Namespace) -> int:
    try:
        if args.backup_command == "run":
            return _run(args)
        if args.backup_command == "verify":
            generation = generations.verify(args.generation, _buckets(args.layout))
            print(json.dumps({"ok": True, "size_bytes": generation.size_bytes, "buckets": generation.buckets}))
            return 0
        if args.backup_command == "list":
            print(json.dumps([str(p) for p in generations.generations(args.target)], indent=2))
            return 0
        return _restore(args)
    except ConfigError as exc:
        print(f"sunbox backup: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except generations.BackupError as exc:
        print(f"sunbox backup: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if args.check:
        print(f"{args.config}: OK")
        return 0
    logging.getLogger().setLevel(cfg.log_level)
    started = time.monotonic()
    try:
        generation = generations.make(cfg, _buckets(cfg.layout))
    except generations.BackupError as exc:
        _announce(cfg, generations.record(cfg.state_file, None, str(exc)[:500], time.monotonic() - started))
        raise
    _announce(cfg, generations.record(cfg.state_file, generation, None, time.monotonic() - started))
    when = datetime.fromtimestamp(generation.created_ms / 1000, UTC).isoformat(timespec="seconds")
    LOG.info(
        "backup %s: %d bytes in %.1f s, verified (%s)",
        generation.path,
        generation.size_bytes,
        time.monotonic() - started,
        when,
    )
    return 0


def _announce(cfg: config_mod.BackupConfig, state: dict[str, Any]) -> None:
    if cfg.mqtt is not None:
        announce.publish(cfg.mqtt, socket.gethostname(), state)


def _restore(args: argparse.Namespace) -> int:
    secret = sys.stdin.read() if str(args.token_file) == "-" else resolve_secret(None, args.token_file)
    token = (secret or "").strip()
    if not token:
        print("sunbox backup restore: the operator token is empty", file=sys.stderr)
        return 2
    started = time.monotonic()
    generations.restore(args.generation, args.url, token, args.root, _buckets(args.layout))
    print(json.dumps({"ok": True, "restored": str(args.generation), "seconds": round(time.monotonic() - started, 1)}))
    return 0
