"""Which local account owns the other end of a loopback TCP connection (Linux).

The kiosk's heartbeat (``/api/heartbeat``) may only come from the kiosk's own browser
(issue 29, finding 5): any other local process could otherwise keep the watchdog from
seeing a hung screen. On loopback both ends of the connection are on this machine, and
the kernel lists every TCP socket with its owner's uid in ``/proc/net/tcp`` and
``/proc/net/tcp6`` (``proc(5)``, "/proc/net/tcp": columns ``local_address``,
``rem_address``, ``st``, ..., ``uid``; addresses are hex ``ADDR:PORT`` with the port
in network order as four hex digits). The client's socket is the row whose local port
is the request's peer port and whose remote port is the server's own port.

:func:`owner_uid` is pure (it parses the tables' text); :func:`peer_uid` reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def owner_uid(tables: Iterable[str], peer_port: int, server_port: int) -> int | None:
    """The uid owning the socket whose local port is ``peer_port`` and remote port
    ``server_port``, from the text of ``/proc/net/tcp``-style tables; None if not found
    or ambiguous (two owners)."""
    owners: set[int] = set()
    for text in tables:
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) < 8:
                continue
            try:
                local_port = int(cols[1].rpartition(":")[2], 16)
                remote_port = int(cols[2].rpartition(":")[2], 16)
                uid = int(cols[7])
            except ValueError:
                continue
            if local_port == peer_port and remote_port == server_port:
                owners.add(uid)
    return owners.pop() if len(owners) == 1 else None


def peer_uid(peer_port: int, server_port: int) -> int | None:
    """The uid of the local process at the other end of a loopback connection, or None."""
    texts = []
    for path in TABLES:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    return owner_uid(texts, peer_port, server_port)
