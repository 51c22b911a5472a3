"""Which ``Host`` and ``Origin`` headers the display answers. Pure: no I/O.

Two attacks a LAN browser can be used for, both refused here (issue 29, finding 3):

* **DNS rebinding.** A page from ``attacker.example`` re-resolves its own name to the
  Pi's address; the browser then sends the attacker's name in ``Host`` and treats the
  answers as same-origin. A request is answered only when its ``Host`` is an IP
  literal (a browser that typed the address is on the Pi's own origin), ``localhost``,
  the Pi's host name (bare, or with ``.local``) or a name listed in
  ``allowed_hosts``.
* **Cross-site WebSocket hijacking.** A page anywhere opens ``ws://<pi>:8080/api/live``;
  WebSockets are not bound by CORS, and a browser sends its cached Basic credentials.
  A request that carries an ``Origin`` is answered only when that origin is the
  display's own (its host and port equal ``Host``) or listed in ``allowed_origins``.
  Requests without ``Origin`` (curl, scripts, same-origin GETs) are not cross-site.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


def split_host(header: str) -> tuple[str, int | None] | None:
    """``Host`` header -> (lower-case host without brackets, port or None); None if malformed."""
    try:
        parts = urlsplit(f"//{header.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.path or parts.query or parts.username is not None:
        return None
    return host.lower().rstrip("."), port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class OriginPolicy:
    """The host names and origins a browser may use for this display.

    ``names``: lower-case host names besides IP literals (``localhost``, the Pi's own
    names, the configured ones); ``origins``: extra ``scheme://host[:port]`` origins.
    """

    names: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def build(cls, hostname: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> OriginPolicy:
        """``hostname`` as ``socket.gethostname()`` gives it (no DNS look-up is made)."""
        short = hostname.lower().split(".")[0]
        names = {"localhost", short, f"{short}.local", hostname.lower().rstrip(".")}
        names |= {h.lower().rstrip(".") for h in allowed_hosts}
        return cls(frozenset(n for n in names if n), frozenset(o.lower().rstrip("/") for o in allowed_origins))

    def host_refusal(self, host_header: str | None) -> str | None:
        """Why a ``Host`` is refused, or None when it is the display's own (or absent)."""
        if host_header is None:
            return None
        parsed = split_host(host_header)
        if parsed is None:
            return "malformed host header"
        host, _port = parsed
        if is_ip_literal(host) or host in self.names:
            return None
        return f"host {host!r} is not this display's name (add it to allowed_hosts in web.yaml)"

    def origin_refusal(self, origin: str | None, host_header: str | None) -> str | None:
        """Why an ``Origin`` is refused, or None when it is the display's own (or absent)."""
        if origin is None:
            return None
        normal = origin.strip().lower().rstrip("/")
        if normal in self.origins:
            return None
        try:
            parts = urlsplit(normal)
            origin_host, origin_port = parts.hostname, parts.port
        except ValueError:
            return "malformed origin header"
        if parts.scheme not in ("http", "https") or not origin_host or host_header is None:
            return f"origin {origin!r} is not this display's (add it to allowed_origins in web.yaml)"
        own = split_host(host_header)
        if own is not None:
            default = 443 if parts.scheme == "https" else 80
            same_port = (origin_port or default) == (own[1] or default)
            if origin_host.rstrip(".") == own[0] and same_port:
                return None
        return f"origin {origin!r} is not this display's (add it to allowed_origins in web.yaml)"
