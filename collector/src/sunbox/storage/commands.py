"""The storage subcommands of ``sunbox``: ``store`` and ``influx apply|render``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sunbox import systemd
from sunbox.config import ConfigError

from . import layout as layout_mod
from . import store_config


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    store = sub.add_parser("store", help="write MQTT readings into InfluxDB (the storage service)")
    store.add_argument("-c", "--config", type=Path, default=store_config.DEFAULT_PATH, help="configuration file")
    store.add_argument("--check", action="store_true", help="validate the configuration and exit")

    influx = sub.add_parser("influx", help="apply the storage layout (buckets, tiers, tasks, tokens) to InfluxDB")
    influx_sub = influx.add_subparsers(dest="influx_command", required=True, metavar="{apply,render}")
    apply = influx_sub.add_parser("apply", help="converge InfluxDB to the layout, idempotently")
    apply.add_argument("-c", "--layout", type=Path, default=None, help="storage layout YAML (default: built-in)")
    apply.add_argument("--url", default="http://localhost:8086", help="InfluxDB")
    apply.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the operator token, '-' for standard input (default: $INFLUX_TOKEN)",
    )
    apply.add_argument("--template", type=Path, default=None, help="downsample.flux (default: searched)")
    apply.add_argument(
        "--tokens-out",
        default=None,
        help="write the writer/dashboards tokens to this file (0600), or '-': under \"tokens\" in the JSON printed",
    )
    render = influx_sub.add_parser("render", help="print the Flux task of every tier")
    render.add_argument("-c", "--layout", type=Path, default=None)
    render.add_argument("--template", type=Path, default=None)


def _layout(path: Path | None) -> layout_mod.StorageLayout:
    return layout_mod.parse(None) if path is None else layout_mod.load(path)


def cmd_store(args: argparse.Namespace) -> int:
    try:
        cfg = store_config.load(args.config)
    except ConfigError as exc:
        print(f"sunbox store: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK")
        return 0
    logging.getLogger().setLevel(cfg.log_level)
    from .writer import Store

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    store = Store(cfg)
    store.start()
    systemd.notify("READY=1")
    interval = systemd.watchdog_interval_s()
    if interval is not None:
        # the longest wait of the worker is retry_max_s plus one write's timeout
        max_age = cfg.retry_max_s + cfg.influx.timeout_s + 30

        def pings() -> None:
            while not done.wait(interval / systemd.PING_DIVISOR):
                if store.alive(max_age):
                    systemd.notify("WATCHDOG=1")

        threading.Thread(target=pings, name="watchdog", daemon=True).start()
    done.wait()
    systemd.notify("STOPPING=1")
    store.stop()
    return 0


def cmd_influx(args: argparse.Namespace) -> int:
    try:
        layout = _layout(args.layout)
        template = layout_mod.find_template(args.template).read_text()
    except ConfigError as exc:
        print(f"sunbox influx: {exc}", file=sys.stderr)
        return 2
    if args.influx_command == "render":
        for tier in layout.tiers:
            print(layout_mod.render_task(layout, tier, template))
        return 0
    # standard input or a root-only file keep the operator token out of `ps`, the
    # environment and sudo's journal (issue 16); $INFLUX_TOKEN is for a developer's shell
    if args.token_file == Path("-"):
        token = sys.stdin.read().strip()
    elif args.token_file:
        token = args.token_file.read_text().strip()
    else:
        token = os.environ.get("INFLUX_TOKEN", "")
    if not token:
        print("sunbox influx: no operator token: give --token-file or set INFLUX_TOKEN", file=sys.stderr)
        return 2
    from .influx_setup import SetupError, apply

    try:
        result = apply(args.url, token, layout, template)
    except SetupError as exc:
        print(f"sunbox influx: {exc}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {"changed": result.changed, "changes": result.changes, "tasks": result.task_ids}
    if args.tokens_out == "-":
        summary["tokens"] = result.tokens
    elif args.tokens_out is not None:
        fd = os.open(args.tokens_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(result.tokens, out)
    print(json.dumps(summary))
    return 0
