"""The ``sunbox`` command line: run, scan, decode, sim, store, influx."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from sunbox import __version__, decode_cli
from sunbox import config as config_mod
from sunbox.alarms import commands as alarms_commands
from sunbox.backup import commands as backup_commands
from sunbox.ble import kernel_recovery
from sunbox.storage import commands as storage_commands
from sunbox.web.config import DEFAULT_PATH as WEB_CONFIG

#: keshavdv/victron-ble tests/test_solar_charger.py (BlueSolar MPPT 75/15): the advert,
#: its key and the decrypted record, replayed by ``sunbox sim --victron-advert-address``
SOLAR_ADVERT_KEY = "adeccb947395801a4dd45a2eaa44bf17"
SOLAR_ADVERT_TEMPLATE = "100242a0016207adceb37b605d7e0ee21b24df5c"
SOLAR_ADVERT_PLAINTEXT = "04006c050e000300130000fe"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sunbox", description="Sunbox solar monitor collector")
    parser.add_argument("--version", action="version", version=f"sunbox {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the collector service")
    run.add_argument("-c", "--config", type=Path, default=config_mod.DEFAULT_PATH, help="configuration file")
    run.add_argument("--check", action="store_true", help="validate the configuration and exit")
    run.add_argument(
        "--once",
        action="store_true",
        help="read every configured device once, publish, exit 0 (all read) or 1 (naming the missing)",
    )
    run.add_argument("--timeout", type=float, default=60.0, help="--once: give up on a device after this long")

    scan = sub.add_parser("scan", help="list nearby devices with RSSI and the driver for each")
    scan.add_argument("-c", "--config", type=Path, default=None, help="take the BLE backend from this config")
    scan.add_argument("-t", "--timeout", type=float, default=10.0, help="seconds to listen")
    scan.add_argument("--adapter", default="hci0", help="Bluetooth adapter")
    scan.add_argument(
        "--inventory",
        action="store_true",
        help="print the devices Sunbox can read as host_vars YAML to paste into the inventory",
    )

    decode_cli.add_parser(sub)

    recovery = sub.add_parser(
        "adapter-recovery",
        help="recover a Bluetooth adapter below BlueZ (privileged helper, CAP_NET_ADMIN)",
    )
    recovery_sub = recovery.add_subparsers(dest="recovery_command", required=True, metavar="{serve,run}")
    serve = recovery_sub.add_parser("serve", help="answer the collector's requests (systemd socket activation)")
    serve.add_argument("--socket", type=Path, default=None, help="listen here instead of on systemd's socket")
    serve.add_argument("--group", default=None, help="with --socket: the group that may connect (mode 0660)")
    once = recovery_sub.add_parser("run", help="run one rung now")
    once.add_argument("adapter", help="hci0, hci1, ...")
    once.add_argument("rung", choices=kernel_recovery.RUNGS)

    sim = sub.add_parser("sim", help="run the simulated devices (bumble)")
    sim.add_argument("--hci", default="tcp-server:127.0.0.1:9001", help="bumble transport for the central side")
    sim.add_argument(
        "--wedge-file",
        type=Path,
        default=None,
        help="fault switch: while this file exists, connections to the addresses in it (one a line) wedge"
        " the kernel's link as a controller that sends the legacy connection event does (sunbox.sim.controller)",
    )
    sim.add_argument(
        "--silent-file",
        type=Path,
        default=None,
        help="fault switch: while this file exists, the devices at the addresses in it (one a line) stop"
        " answering; their links stay up",
    )
    sim.add_argument("--jbd-password", default=None, help="require this FF AA password")
    sim.add_argument("--jbd-passkey", type=int, default=None, help="require BLE passkey pairing")
    sim.add_argument(
        "--jbd-address",
        action="append",
        default=None,
        help="JBD address (repeat for several; default A4:C1:37:00:00:01)",
    )
    sim.add_argument("--litime-address", default="C8:47:80:00:00:02")
    sim.add_argument(
        "--jbd-paired-address",
        default=None,
        help="also simulate a newer-firmware JBD at this address that needs BLE passkey 123456 (no password)",
    )
    sim.add_argument("--smartsolar-address", default=None, help="also simulate a SmartSolar (GATT, passkey 147258)")
    sim.add_argument("--phoenix-address", default=None, help="also simulate a Phoenix inverter (GATT, passkey 147258)")
    sim.add_argument(
        "--victron-advert-address",
        default=None,
        help=f"also simulate a BlueSolar MPPT sending Instant Readout adverts (key {SOLAR_ADVERT_KEY})",
    )
    sim.add_argument(
        "--keystore",
        type=Path,
        default=None,
        help="keep the devices' bonds in this JSON file so they survive a restart (default: in memory)",
    )
    replay = sub.add_parser("sim-vedirect", help="replay a VE.Direct capture on a pseudo-terminal")
    replay.add_argument("capture", type=Path)
    replay.add_argument("--link", type=Path, default=None, help="also make this symlink to the terminal")
    replay.add_argument("--interval", type=float, default=1.0, help="seconds between blocks")
    replay.add_argument("--corrupt-every", type=int, default=None, help="break every n-th block's checksum")
    storage_commands.add_parsers(sub)
    backup_commands.add_parsers(sub)
    alarms_commands.add_parsers(sub)

    web = sub.add_parser("web", help="serve the live display (touchscreen and LAN browsers)")
    web.add_argument("-c", "--config", type=Path, default=WEB_CONFIG, help="configuration file")
    web.add_argument("--check", action="store_true", help="validate the configuration and exit")
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's help shows its defaults (``-c`` is /etc/sunbox/...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.formatter_class = argparse.ArgumentDefaultsHelpFormatter
                _show_defaults(child)


async def _scan(timeout: float, adapter: str, cfg: config_mod.Config | None, inventory: bool) -> int:
    from sunbox import discovery
    from sunbox.ble.scanner import Scanner
    from sunbox.service import close_all, open_backend

    backend_cls = None
    closers = []
    if cfg is not None:
        backend = await open_backend(cfg)
        backend_cls, closers = backend.scanner, backend.closers
        adapter = cfg.ble.adapter
    scanner = Scanner("active", adapter, backend_cls)
    await scanner.start()
    await asyncio.sleep(timeout)
    await scanner.stop()
    await close_all(closers)
    found = [
        discovery.classify(
            address,
            seen.advertisement.rssi,
            seen.advertisement.local_name,
            seen.advertisement.service_uuids,
            seen.advertisement.manufacturer_data,
        )
        for address, seen in scanner.seen.items()
    ]
    if not found:
        print(
            f"sunbox scan: no device heard in {timeout:g} s (is the adapter up? `bluetoothctl list`;"
            " a device with a phone app connected does not advertise)",
            file=sys.stderr,
        )
        return 1
    print(discovery.inventory(found) if inventory else discovery.table(found), end="")
    return 0


async def _adapter_recovery(args: argparse.Namespace) -> int:
    import json
    import shutil
    import socket

    if args.recovery_command == "run":
        reply = await kernel_recovery.answer(json.dumps({"adapter": args.adapter, "rung": args.rung}).encode())
        print(reply)
        return 0 if reply["ok"] else 1
    listener = kernel_recovery.listener_from_systemd()
    idle_exit_s: float | None = kernel_recovery.IDLE_EXIT_S
    if listener is None:
        idle_exit_s = None
        if args.socket is None:
            print("sunbox adapter-recovery serve: no socket from systemd; give --socket", file=sys.stderr)
            return 2
        args.socket.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # never wider than 0600 between bind and chmod
        try:
            listener.bind(str(args.socket))
        finally:
            os.umask(umask)
        if args.group:
            shutil.chown(args.socket, group=args.group)
        args.socket.chmod(0o660 if args.group else 0o600)
        listener.listen(4)
    await kernel_recovery.serve(listener, idle_exit_s)
    return 0


def wedged_addresses(path: Path) -> set[str]:
    """The addresses listed in ``path``, upper case (one a line; none when it is missing or
    unreadable): the simulator's fault switches."""
    try:
        return {word.upper() for word in path.read_text().split()}
    except OSError:
        return set()


async def _sim(args: argparse.Namespace) -> int:
    from sunbox.sim.peripherals import (
        JbdSimulator,
        LiTimeSimulator,
        PhoenixSimulator,
        SimWorld,
        SmartSolarSimulator,
        VictronAdvertiser,
    )

    world = SimWorld(keystore=args.keystore)
    for index, address in enumerate(args.jbd_address or ["A4:C1:37:00:00:01"]):
        world.add(
            JbdSimulator(
                world.link, address, f"DWCK00309J-SIM{index}", args.jbd_password, args.jbd_passkey, seed=index + 1
            )
        )
    world.add(LiTimeSimulator(world.link, args.litime_address))
    if args.jbd_paired_address:
        world.add(JbdSimulator(world.link, args.jbd_paired_address, "DWCK00309J-PAIR", None, 123456, seed=9))
    if args.smartsolar_address:
        world.add(SmartSolarSimulator(world.link, args.smartsolar_address))
    if args.phoenix_address:
        world.add(PhoenixSimulator(world.link, args.phoenix_address))
    if args.victron_advert_address:
        world.add(
            VictronAdvertiser(
                world.link,
                args.victron_advert_address,
                bytes.fromhex(SOLAR_ADVERT_KEY),
                bytes.fromhex(SOLAR_ADVERT_TEMPLATE),
                bytes.fromhex(SOLAR_ADVERT_PLAINTEXT),
                interval=1.0,
            )
        )
    transport = await world.serve(args.hci)
    await world.start()
    logging.getLogger("sunbox.sim").info("simulators advertising; central controller on %s", args.hci)
    try:
        while True:
            if args.wedge_file is not None and world.host_controller is not None:
                world.host_controller.wedged = wedged_addresses(args.wedge_file)
            if args.silent_file is not None:
                silent = wedged_addresses(args.silent_file)
                for peripheral in world.peripherals:
                    peripheral.silent = peripheral.address in silent
            await asyncio.sleep(0.5)
    finally:
        await transport.close()
    return 0


async def _sim_vedirect(args: argparse.Namespace) -> int:
    from sunbox.sim.vedirect_pty import VeDirectReplay

    replay = VeDirectReplay(args.capture.read_bytes(), args.interval, args.corrupt_every)
    if args.link is not None:
        replay.link(args.link)
    print(replay.path, flush=True)
    try:
        await replay.run()
    finally:
        replay.close()
    return 0


def config_mod_ids(cfg: config_mod.Config) -> list[str]:
    from sunbox.service import expected_ids

    return expected_ids(cfg)


def _web(args: argparse.Namespace) -> int:
    from sunbox.web import config as web_config

    try:
        cfg = web_config.load(args.config)
        cfg.mqtt.resolved_password()
        cfg.influx.resolved_token()
        cfg.viewer_password()  # an unreadable secret file: main() prints it in one line
    except web_config.ConfigError as exc:
        print(f"sunbox web: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK")
        return 0
    logging.getLogger().setLevel(cfg.log_level)
    from sunbox.web.server import run_web

    run_web(cfg)
    return 0


BLUEZ_MISSING = (
    "Bluetooth is not reachable: no D-Bus system bus or no BlueZ (org.bluez). "
    "Check with `systemctl status bluetooth` and `bluetoothctl list`."
)


def _bluez_missing(exc: BaseException) -> bool:
    """A failure to reach D-Bus or BlueZ itself (not a device's error)."""
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return True  # dbus-fast connecting to the system bus socket
    text = f"{type(exc).__name__}: {exc}"
    return "org.bluez" in text and ("was not provided" in text or "ServiceUnknown" in text)


def main(argv: list[str] | None = None) -> int:
    """The ``sunbox`` command. A user's mistake is one line on stderr and exit 2, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # the reader went away (`sunbox decode ... | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if args.command in ("scan", "run") and _bluez_missing(exc):
            print(f"sunbox {args.command}: {BLUEZ_MISSING}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.filename is not None:
            print(f"sunbox {args.command}: {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
        raise


def _dispatch(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "decode":
        return decode_cli.cmd_decode(args)
    if args.command == "run":
        try:
            cfg = config_mod.load(args.config)
        except config_mod.ConfigError as exc:
            print(f"sunbox: invalid configuration: {exc}", file=sys.stderr)
            return 2
        problem = config_mod.check_runtime(cfg)
        if problem:
            print(f"sunbox: invalid configuration: {problem}", file=sys.stderr)
            return 2
        if args.check:
            print(f"{args.config}: OK, {len(config_mod_ids(cfg))} device(s)")
            return 0
        logging.getLogger().setLevel(cfg.log_level)
        if args.once:
            from sunbox.service import run_once

            loop = asyncio.new_event_loop()
            result = loop.run_until_complete(run_once(cfg, args.timeout))
            delivery = f"{result.delivered} message(s) delivered to the broker, {result.queued} queued"
            if result.missing:
                print(f"sunbox run --once: no reading from {', '.join(result.missing)}; {delivery}", file=sys.stderr)
            else:
                print(f"sunbox run --once: read all {len(config_mod_ids(cfg))} device(s); {delivery}")
            if result.queued:
                print(
                    f"sunbox run --once: {result.queued} message(s) not delivered (broker {result.broker_state});"
                    " they wait in the disk queue for the next run",
                    file=sys.stderr,
                )
            sys.stdout.flush()
            sys.stderr.flush()
            # exit without waiting for tasks a bug might have left running (see run_once)
            os._exit(1 if result.missing or result.queued else 0)
        from sunbox.service import run_service

        asyncio.run(run_service(cfg))
        return 0
    if args.command == "scan":
        scan_cfg = None
        if args.config is not None:
            try:
                scan_cfg = config_mod.load(args.config)
            except config_mod.ConfigError as exc:
                print(f"sunbox: invalid configuration: {exc}", file=sys.stderr)
                return 2
        return asyncio.run(_scan(args.timeout, args.adapter, scan_cfg, args.inventory))
    if args.command == "sim-vedirect":
        try:
            return asyncio.run(_sim_vedirect(args))
        except KeyboardInterrupt:
            return 0
    if args.command == "store":
        return storage_commands.cmd_store(args)
    if args.command == "web":
        return _web(args)
    if args.command == "influx":
        return storage_commands.cmd_influx(args)
    if args.command == "backup":
        return backup_commands.cmd_backup(args)
    if args.command == "alarms":
        return alarms_commands.cmd_alarms(args)
    if args.command == "adapter-recovery":
        return asyncio.run(_adapter_recovery(args))
    if args.command == "sim":
        try:
            return asyncio.run(_sim(args))
        except KeyboardInterrupt:
            return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
