"""The privileged rungs of adapter recovery, below BlueZ (issue 35).

When BlueZ wedges (bluez/bluez#932: a Disconnect whose HCI command the kernel never
sends), bluetoothd keeps its one management command in flight, so the D-Bus
``Adapter1.Powered`` cycle that the collector tries first is queued behind it and never
answered. Two ways around bluetoothd reach the kernel directly and release it (both
measured in the BLE virtual Pi, docs/virtual-pi.md):

``mgmt``
    The kernel's Bluetooth management socket: ``btmgmt --index N power off``, then
    ``on`` (BlueZ's own tool, in Debian's ``bluez`` package). The kernel powers the
    controller down, every link goes, bluetoothd's pending command fails and its queue
    moves.
``rfkill``
    A soft block, then unblock, of the adapter's rfkill switch, written to
    ``/dev/rfkill`` as ``struct rfkill_event`` (``include/uapi/linux/rfkill.h``:
    ``__u32 idx; __u8 type, op, soft, hard``; ``RFKILL_OP_CHANGE`` = 2).
``rebind``
    The adapter's own reset, for a controller that no longer answers the kernel at all:
    its parent device (``/sys/class/bluetooth/hciN/device``: on a Pi the UART's serdev
    device under ``hci_uart_bcm``, on a USB dongle its interface under ``btusb``) is
    unbound from its driver and bound again (the kernel's driver model, sysfs
    ``drivers/<driver>/unbind`` and ``bind``, Documentation/ABI/testing/sysfs-bus-*), so
    the driver resets and loads the controller anew and ``hciN`` is registered again.
    A virtual adapter (the test VM's ``hci_vhci``) has no parent device: this rung says
    so and fails. What it does to a Pi's UART controller only a real Pi can show.

They need ``CAP_NET_ADMIN`` (and root for sysfs), which the collector does not have: they
run in ``sunbox adapter-recovery serve``, a socket-activated service with that capability
alone, which only the collector's group may reach (roles/collector). It does nothing
but these three things to an adapter named ``hci<N>``.

Protocol on its Unix socket: one JSON line in, ``{"adapter": "hci0", "rung": "mgmt"}``;
one JSON line out, ``{"ok": true, "seconds": 0.31}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

ADAPTER = re.compile(r"hci(\d{1,3})")
RUNGS = ("mgmt", "rfkill", "rebind")
#: seconds the adapter stays off (or blocked) before it is brought back
OFF_S = 1.0
#: longest a rung may take, seconds
RUNG_TIMEOUT_S = 15.0
#: the service exits after this long without a request (socket activation starts it again)
IDLE_EXIT_S = 120.0
RFKILL_OP_CHANGE = 2
RFKILL_TYPE_BLUETOOTH = 2


class RecoveryError(Exception):
    """A request that names no adapter or rung this helper knows, or a rung that failed."""


def adapter_index(name: str) -> int:
    """``hci0`` -> 0. Raises RecoveryError for anything else."""
    match = ADAPTER.fullmatch(name)
    if match is None:
        raise RecoveryError(f"adapter {name!r} is not hci<N>")
    return int(match.group(1))


def rfkill_event(index: int, soft: bool) -> bytes:
    """The 8-byte ``struct rfkill_event`` that sets rfkill switch ``index``'s soft block."""
    return struct.pack("=IBBBB", index, RFKILL_TYPE_BLUETOOTH, RFKILL_OP_CHANGE, int(soft), 0)


def rfkill_switch(adapter: str, sysfs: Path = Path("/sys/class/bluetooth")) -> int:
    """The rfkill switch index of ``adapter`` (``/sys/class/bluetooth/hci0/rfkill<N>/index``)."""
    found = sorted((sysfs / adapter).glob("rfkill*/index"))
    if not found:
        raise RecoveryError(f"{adapter} has no rfkill switch")
    return int(found[0].read_text().strip())


async def _btmgmt(index: int, state: str) -> None:
    try:
        process = await asyncio.create_subprocess_exec(
            "btmgmt",
            "--index",
            str(index),
            "power",
            state,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise RecoveryError(f"btmgmt: {exc}") from exc
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUNG_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        raise RecoveryError(f"btmgmt power {state} did not return in {RUNG_TIMEOUT_S:g} s") from None
    text = output.decode(errors="replace").strip()
    if process.returncode != 0 or "failed" in text.lower():
        raise RecoveryError(f"btmgmt power {state}: exit {process.returncode}: {text[:200]}")


async def mgmt_power_cycle(index: int) -> None:
    """Power adapter ``hci<index>`` off and on through the kernel's management socket."""
    await _btmgmt(index, "off")
    await asyncio.sleep(OFF_S)
    await _btmgmt(index, "on")


async def rfkill_cycle(adapter: str, device: Path = Path("/dev/rfkill")) -> None:
    """Soft-block ``adapter``'s rfkill switch, then unblock it."""
    index = rfkill_switch(adapter)
    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, rfkill_event(index, True))
        await asyncio.sleep(OFF_S)
        os.write(fd, rfkill_event(index, False))
    finally:
        os.close(fd)


def parent_device(adapter: str, sysfs: Path = Path("/sys/class/bluetooth")) -> tuple[Path, str]:
    """The driver directory of ``adapter``'s parent device and that device's name, as
    ``drivers/<driver>/unbind`` and ``bind`` take it.

    Raises:
        RecoveryError: a virtual adapter (no parent device) or a device with no driver.
    """
    device = sysfs / adapter / "device"
    if not device.exists():
        raise RecoveryError(f"{adapter} has no parent device (a virtual adapter): nothing to rebind")
    driver = device / "driver"
    if not driver.exists():
        raise RecoveryError(f"{adapter}'s device {device.resolve().name} is bound to no driver")
    return driver.resolve(), device.resolve().name


async def rebind(adapter: str, sysfs: Path = Path("/sys/class/bluetooth"), wait_s: float = 10.0) -> None:
    """Unbind ``adapter``'s parent device from its driver, bind it again, and wait up to
    ``wait_s`` for ``adapter`` to be registered again."""
    driver, name = parent_device(adapter, sysfs)
    try:
        (driver / "unbind").write_text(name)
        await asyncio.sleep(OFF_S)
        (driver / "bind").write_text(name)
    except OSError as exc:
        raise RecoveryError(f"rebind {name} to {driver.name}: {exc}") from exc
    deadline = time.monotonic() + wait_s
    while not (sysfs / adapter).exists():
        if time.monotonic() > deadline:
            raise RecoveryError(f"{adapter} not back {wait_s:g} s after {name} was bound to {driver.name} again")
        await asyncio.sleep(0.2)


async def run_rung(adapter: str, rung: str) -> float:
    """Run one rung; the seconds it took. Raises RecoveryError."""
    index = adapter_index(adapter)
    started = time.monotonic()
    if rung == "mgmt":
        await mgmt_power_cycle(index)
    elif rung == "rfkill":
        try:
            await rfkill_cycle(adapter)
        except OSError as exc:
            raise RecoveryError(f"rfkill: {exc}") from exc
    elif rung == "rebind":
        await rebind(adapter)
    else:
        raise RecoveryError(f"rung {rung!r} is not one of {', '.join(RUNGS)}")
    return time.monotonic() - started


async def answer(line: bytes) -> dict[str, Any]:
    """The reply to one request line (never raises)."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise RecoveryError("the request is not a JSON object")
        adapter, rung = request.get("adapter"), request.get("rung")
        if not isinstance(adapter, str) or not isinstance(rung, str):
            raise RecoveryError("the request needs adapter and rung (strings)")
        LOG.warning("%s: recovery rung %s requested", adapter, rung)
        seconds = await run_rung(adapter, rung)
    except (ValueError, RecoveryError) as exc:
        LOG.error("recovery refused or failed: %s", exc)
        return {"ok": False, "error": str(exc)[:300]}
    LOG.warning("%s: recovery rung %s done in %.2f s", adapter, rung, seconds)
    return {"ok": True, "seconds": round(seconds, 3)}


async def serve(listener: socket.socket, idle_exit_s: float | None = IDLE_EXIT_S) -> None:
    """Answer requests on ``listener`` (a bound, listening Unix socket) one at a time,
    until ``idle_exit_s`` pass without one (None: forever, for a helper started by hand,
    which nothing would start again)."""
    lock = asyncio.Lock()
    last = time.monotonic()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal last
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            async with lock:
                reply = await answer(line)
                last = time.monotonic()
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError) as exc:
            LOG.warning("recovery request dropped: %s", exc)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, sock=listener)
    async with server:
        while idle_exit_s is None or time.monotonic() - last < idle_exit_s or lock.locked():
            await asyncio.sleep(1)


def listener_from_systemd() -> socket.socket | None:
    """The socket systemd passed (``LISTEN_FDS``, fd 3), or None when started by hand."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=3)


async def request(path: Path, adapter: str, rung: str, timeout_s: float = RUNG_TIMEOUT_S * 2 + 5) -> float:
    """Ask the helper at ``path`` to run ``rung`` on ``adapter``: the seconds it took.

    Raises:
        RecoveryError: the helper refused or the rung failed.
        OSError, TimeoutError: the helper could not be reached or did not answer.
    """

    async def ask() -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(json.dumps({"adapter": adapter, "rung": rung}).encode() + b"\n")
            await writer.drain()
            reply: dict[str, Any] = json.loads(await reader.readline())
            return reply
        finally:
            writer.close()

    reply = await asyncio.wait_for(ask(), timeout_s)
    if not reply.get("ok"):
        raise RecoveryError(str(reply.get("error")))
    return float(reply.get("seconds", 0.0))
