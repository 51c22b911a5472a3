"""systemd service notifications: READY=1, WATCHDOG=1, STOPPING=1 (the sd_notify protocol).

A message is one datagram to the AF_UNIX socket named in ``$NOTIFY_SOCKET``: a path, or
an abstract name written with a leading ``@`` (systemd's ``sd_notify(3)``). The watchdog
interval is ``$WATCHDOG_USEC`` microseconds, meant for this process when
``$WATCHDOG_PID`` is unset or names it (``sd_watchdog_enabled(3)``). Without
``$NOTIFY_SOCKET`` (not started by systemd, or ``Type=simple``) every call does nothing.

The units use ``Type=notify`` and ``WatchdogSec=``: systemd restarts a service whose
pings stop, which a crash does not need (``Restart=always`` covers it) but a hang does: an
event loop blocked by a bug, a deadlocked thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

PING_DIVISOR = 3  # ping three times per watchdog interval


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``); True if a socket took it, False without one."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
    except OSError:  # systemd gone or the socket unreadable: nothing to tell
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval in seconds asked of this process, or None when there is none."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


async def watchdog_pings(healthy: Callable[[], bool] | None = None) -> None:
    """Ping the watchdog while ``healthy()`` (runs until cancelled; returns at once
    without a watchdog). That this coroutine runs at all shows the event loop is alive."""
    interval = watchdog_interval_s()
    if interval is None:
        return
    while True:
        await asyncio.sleep(interval / PING_DIVISOR)
        if healthy is None or healthy():
            notify("WATCHDOG=1")
