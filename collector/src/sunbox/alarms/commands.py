"""``sunbox alarms run|test|check`` (docs/alarms.md).

Exit codes: 0 done (``test``: every target accepted the message), 1 a target refused or
could not be reached, 2 a usage or configuration error (one line naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sunbox import systemd
from sunbox.config import ConfigError, read_yaml, validate

from . import notify
from .rules import AlarmsConfig

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/sunbox/alarms.yaml")


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    alarms = sub.add_parser("alarms", help="alarm rules, their state and notifications")
    alarms_sub = alarms.add_subparsers(dest="alarms_command", required=True, metavar="{run,test,check}")
    for name, text in (
        ("run", "evaluate the rules on every reading; publish, store and notify"),
        ("test", "send a test notification to every configured target and say which succeeded"),
        ("check", "validate the configuration and the notification URLs, and list the rules"),
    ):
        command = alarms_sub.add_parser(name, help=text)
        command.add_argument("-c", "--config", type=Path, default=DEFAULT_PATH, help="configuration file")


def load(path: Path) -> AlarmsConfig:
    """Read and validate the configuration, and the notification URLs.

    Raises:
        ConfigError: naming the offending key.
    """
    config = validate(AlarmsConfig, read_yaml(path))
    try:
        urls = config.notify.urls()
    except OSError as exc:
        raise ConfigError(f"notify.urls_file: cannot read {config.notify.urls_file}: {exc.strerror}") from None
    for i, url in enumerate(urls):
        try:
            notify.check_url(url)
        except notify.NotifyError as exc:
            raise ConfigError(f"notify.urls_file: line {i + 1}: {exc}") from None
    try:
        config.mqtt.resolved_password()
    except OSError as exc:
        raise ConfigError(f"mqtt.password_file: cannot read {config.mqtt.password_file}: {exc.strerror}") from None
    return config


def cmd_alarms(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"sunbox alarms: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.alarms_command == "check":
        for rule in config.all_rules():
            print(f"{rule.id}: {rule.describe()} ({rule.severity})")
        print(f"{args.config}: OK, {len(config.all_rules())} rule(s), {len(config.notify.urls())} target(s)")
        return 0
    if args.alarms_command == "test":
        return asyncio.run(_test(config))
    logging.getLogger().setLevel(config.log_level)
    # the rules it runs, into the journal at each start (a second process for this, the
    # unit's ExecStartPre, doubled the start's time on a slow machine)
    for rule in config.all_rules():
        log.info("rule %s: %s (%s)", rule.id, rule.describe(), rule.severity)
    log.info("%s: %d rule(s), %d target(s)", args.config, len(config.all_rules()), len(config.notify.urls()))
    return asyncio.run(_run(config))


async def _test(config: AlarmsConfig) -> int:
    urls = config.notify.urls()
    if not urls:
        print("sunbox alarms test: no target (notify.urls_file)", file=sys.stderr)
        return 1
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    body = f"A test from Sunbox on {socket.gethostname()} at {stamp}: alarms reach you here."
    failed = 0
    for i, url in enumerate(urls):
        try:
            ok = await notify.send(url, "Sunbox: test notification", body)
        except Exception as exc:  # noqa: BLE001 - reported per target
            ok = False
            print(f"{notify.target_name(i, url)}: {type(exc).__name__}: {exc}")
        print(f"{notify.target_name(i, url)}: {'delivered' if ok else 'FAILED'}")
        failed += not ok
    return 1 if failed else 0


async def _run(config: AlarmsConfig) -> int:
    from .service import AlarmService

    service = AlarmService(config, asyncio.get_running_loop())
    task = asyncio.ensure_future(service.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    systemd.notify("READY=1")
    pings = asyncio.ensure_future(systemd.watchdog_pings())
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        systemd.notify("STOPPING=1")
        pings.cancel()
    return 0
