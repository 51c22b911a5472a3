"""The ``sunbox web`` application (aiohttp): pages, a read-only JSON API and a live WebSocket.

Routes (every one is GET but the acknowledgement of an alarm, the display's one write):

* ``/`` — the single-page app (Now, History, Cells, Health), ``/static/*`` its assets,
  all served from the Pi: no CDN, no web font.
* ``/api/health`` — ``{"ok": true, "broker": {...}, "storage": bool, "devices": n,
  "kiosk_heartbeat_age_s": s | null, "disk": {...}}``; the kiosk waits for it, and its
  watchdog restarts the browser when the page on the Pi itself stops beating. ``disk``
  is the card holding the history (:class:`sunbox.disk.DiskState`: ``status`` ok, low,
  full, read-only or unknown, free and total bytes), looked at every ``disk_check_s``;
  ``backup`` the nightly backup's last result (:func:`sunbox.backup.state.summary`).
* ``/api/heartbeat`` — 204; the page on the Pi itself calls it every 15 s. Only the
  kiosk's browser may beat: a loopback connection owned by ``kiosk_user``
  (:mod:`sunbox.web.peer`); anyone else gets 403, so no local process can hide a hung
  screen from the watchdog. A hung renderer stops its timers, so its heartbeat ages,
  which the browser's own endpoints (DevTools) would not show.
* ``/api/state`` — every device's latest reading, health and availability.
* ``/api/live`` — WebSocket: a ``snapshot`` message at once, then one ``device``
  message per reading as it arrives, and ``broker``/``collector``/``disk``/``backup``
  messages on changes (``disk`` and ``backup`` when their status changes).
* ``POST /api/alarms/ack`` with ``{"id": "<rule>/<device>"}`` — marks an active alarm
  seen (published to the alarm engine, ``<prefix>/_alarms/ack``): 202. Only from the Pi
  itself (loopback: the kiosk's touchscreen) or a LAN viewer who gave the viewer
  password; anyone else gets 403, an alarm that is not active 404, a request that is not
  JSON 415 or 400, and 503 while the broker is away. The live stream carries the alarms
  (``alarms`` messages: active, history, the engine's availability).
* ``/api/history?quantity=soc&range=24h[&device=id]`` (or ``start``/``stop`` in Unix
  seconds), ``/api/energy?range=24h|7d|30d|1y|10y`` (Wh per hour, day, month or
  year; ``period=days|months`` as before) and ``/api/gaps`` (10-minute windows of
  the last 24 h without a reading, per device) — from InfluxDB with the read-only
  token; 503 with ``{"error": "storage unavailable"}`` when InfluxDB does not answer.

Every request is first checked for its ``Host`` and ``Origin`` (:mod:`sunbox.web.origin`:
DNS rebinding and cross-site WebSocket hijacking are refused with 403), then for its
query parameters (an unknown or repeated one, or a value out of range, is a 400 naming
the parameter). Every response carries a strict Content-Security-Policy (same origin only). With
``viewer_password_file`` set, LAN browsers need HTTP Basic credentials (any user name,
that password); the kiosk on the Pi itself (loopback) does not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import pwd
import signal
import socket as sockets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from sunbox import disk, systemd
from sunbox.backup.state import read_summary

from .config import WebConfig
from .feed import Feed
from .history import (
    GAP_SPAN_S,
    GAP_WINDOW_S,
    History,
    HistoryError,
    StorageUnavailable,
    energy_range,
    parse_range,
)
from .live import LiveState
from .origin import OriginPolicy
from .peer import peer_uid

LOG = logging.getLogger(__name__)

STATIC = Path(str(resources.files("sunbox.web") / "static"))
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: The query parameters each route takes; any other, or one given twice, is a 400
#: naming it (issue 29, finding 4). Routes not listed take none.
PARAMETERS: dict[str, frozenset[str]] = {
    "/api/history": frozenset({"quantity", "range", "start", "stop", "device"}),
    "/api/energy": frozenset({"period", "range"}),
}
#: messages a slow page may fall behind before it is dropped (it reconnects and gets a snapshot)
SOCKET_QUEUE = 2000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WebApp:
    """The application's state: live readings, the broker's status, open sockets."""

    def __init__(self, config: WebConfig, history: History | None) -> None:
        self.config = config
        self.history = history
        self.live = LiveState(prefix=config.mqtt.topic_prefix)
        self.broker: dict[str, Any] = {"connected": False, "reason": "starting", "since_ms": now_ms()}
        self.sockets: dict[web.WebSocketResponse, asyncio.Queue[str | None]] = {}
        self.password = config.viewer_password()
        self._closing: set[asyncio.Future[bool]] = set()
        #: time.monotonic() of the last heartbeat from the kiosk's browser
        self.kiosk_heartbeat: float | None = None
        self.policy = OriginPolicy.build(sockets.gethostname(), config.allowed_hosts, config.allowed_origins)
        self.disk = disk.DiskState("unknown", config.disk_path, error="not looked at yet")
        #: publishes an acknowledgement to the alarm engine (the feed's); False: not sent
        self.acknowledge: Callable[[str], bool] | None = None
        self.backup: dict[str, Any] = {"configured": False, "status": "none"}

    async def watch_disk(self, stop: asyncio.Event) -> None:
        """Look at the card and the last backup every ``disk_check_s`` until ``stop``; a
        change of status is logged and sent to every page (in a thread: a dying card may
        block)."""
        low = self.config.disk_low_free_mb * 1_000_000
        max_age_s = self.config.backup_max_age_h * 3600
        while not stop.is_set():
            backup = await asyncio.to_thread(read_summary, self.config.backup_state_file, now_ms(), max_age_s)
            if backup["status"] != self.backup["status"]:
                LOG.log(
                    logging.WARNING if backup["status"] in ("overdue", "unknown") else logging.INFO,
                    "backup: %s (%s)",
                    backup["status"],
                    backup.get("error") or backup.get("age_s"),
                )
                self.broadcast({"type": "backup", "backup": backup, "server_time_ms": now_ms()})
            self.backup = backup
            state = await asyncio.to_thread(disk.read_state, self.config.disk_path, low)
            if state.status != self.disk.status:
                level = logging.INFO if state.status == "ok" else logging.WARNING
                why = state.error or f"{state.free_bytes} bytes free"
                LOG.log(level, "the card holding %s: %s (%s)", state.path, state.status, why)
                self.broadcast({"type": "disk", "disk": state.to_dict(), "server_time_ms": now_ms()})
            self.disk = state
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.disk_check_s)

    # --- feed callbacks (on the event loop) ------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        changed = self.live.apply(topic, payload, now_ms())
        if changed == "collector":
            self.broadcast({"type": "collector", "online": self.live.collector_online})
        elif changed == "alarms":
            self.broadcast({"type": "alarms", "alarms": self.live.alarm_view(), "server_time_ms": now_ms()})
        elif changed is not None:
            self.broadcast({"type": "device", "device": self.live.device(changed), "server_time_ms": now_ms()})

    def on_status(self, connected: bool, reason: str) -> None:
        if connected != self.broker["connected"]:
            self.broker = {"connected": connected, "reason": reason, "since_ms": now_ms()}
            self.broadcast({"type": "broker", "broker": self.broker, "server_time_ms": now_ms()})

    def broadcast(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        for socket, queue in list(self.sockets.items()):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                LOG.warning("a page fell %d messages behind; dropping it (it reconnects)", SOCKET_QUEUE)
                self.sockets.pop(socket, None)
                task = asyncio.ensure_future(socket.close())  # the handler then ends its writer
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            **self.live.snapshot(),
            "broker": self.broker,
            "server_time_ms": now_ms(),
            "stale_after_s": self.config.stale_after_s,
            "dead_after_s": self.config.dead_after_s,
            "storage": self.history is not None,
            "disk": self.disk.to_dict(),
            "backup": self.backup,
        }

    # --- handlers --------------------------------------------------------------------

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(self, _request: web.Request) -> web.StreamResponse:
        storage = await self.history.available() if self.history is not None else False
        age = None if self.kiosk_heartbeat is None else round(time.monotonic() - self.kiosk_heartbeat, 1)
        return web.json_response(
            {
                "ok": True,
                "broker": self.broker,
                "storage": storage,
                "devices": len(self.live.devices),
                "kiosk_heartbeat_age_s": age,
                "disk": self.disk.to_dict(),
                "backup": self.backup,
            }
        )

    async def heartbeat(self, request: web.Request) -> web.StreamResponse:
        """204 for the kiosk's browser (its beat is recorded); 403 for anyone else."""
        if not self._from_kiosk(request):
            return web.Response(status=403, text="Sunbox: only the kiosk's browser beats")
        self.kiosk_heartbeat = time.monotonic()
        return web.Response(status=204)

    def _from_kiosk(self, request: web.Request) -> bool:
        """Whether the request comes over loopback from a process of ``kiosk_user``."""
        if not _loopback(request.remote) or request.transport is None:
            return False
        peer = request.transport.get_extra_info("peername")
        own = request.transport.get_extra_info("sockname")
        try:
            kiosk = pwd.getpwnam(self.config.kiosk_user).pw_uid
        except KeyError:
            return False
        if not (isinstance(peer, tuple) and isinstance(own, tuple)):
            return False
        return peer_uid(int(peer[1]), int(own[1])) == kiosk

    async def state(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.snapshot())

    async def socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue(SOCKET_QUEUE)
        self.sockets[ws] = queue
        await ws.send_str(json.dumps(self.snapshot(), separators=(",", ":")))

        async def writer() -> None:
            while (text := await queue.get()) is not None and not ws.closed:
                await ws.send_str(text)

        task = asyncio.create_task(writer())
        try:
            async for message in ws:  # pages send nothing; this waits for the close
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.pop(ws, None)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        return ws

    async def ack_route(self, request: web.Request) -> web.StreamResponse:
        """Acknowledge an active alarm (see the module docstring for who may)."""
        if not (_loopback(request.remote) or (self.password is not None and self._authorized(request))):
            LOG.info("refused an acknowledgement from %s: not the Pi itself, no viewer password", request.remote)
            return web.json_response(
                {"error": "only the touchscreen, or a LAN viewer with the viewer password, may acknowledge"},
                status=403,
            )
        if request.content_type != "application/json":
            return web.json_response({"error": 'send JSON: {"id": "<rule>/<device>"}'}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body: not JSON"}, status=400)
        alarm_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(alarm_id, str) or alarm_id not in {a["id"] for a in self.live.alarms or []}:
            return web.json_response({"error": "id: no such active alarm"}, status=404)
        if self.acknowledge is None or not self.acknowledge(alarm_id):
            return web.json_response({"error": "broker unavailable"}, status=503)
        LOG.info("alarm %s acknowledged from %s", alarm_id, request.remote)
        return web.json_response({"ok": True}, status=202)

    async def _from_storage(self, what: str, query: Callable[[History], Awaitable[Any]]) -> web.StreamResponse:
        """Run one storage query: 400 for a refused request, 503 when InfluxDB is away."""
        if self.history is None:
            return web.json_response({"error": "storage unavailable"}, status=503)
        try:
            body = await query(self.history)
        except HistoryError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except StorageUnavailable as exc:
            LOG.warning("%s: storage unavailable: %s", what, exc)
            return web.json_response({"error": "storage unavailable"}, status=503)
        return web.json_response(body)

    async def history_route(self, request: web.Request) -> web.StreamResponse:
        q = request.query

        async def query(history: History) -> dict[str, Any]:
            now_s = time.time()
            start_s, stop_s = parse_range(q.get("range"), q.get("start"), q.get("stop"), now_s)
            return await history.series(q.get("quantity", ""), start_s, stop_s, q.get("device"), now_s)

        return await self._from_storage("history", query)

    async def gaps_route(self, _request: web.Request) -> web.StreamResponse:
        async def query(history: History) -> dict[str, Any]:
            return {"window_s": GAP_WINDOW_S, "span_s": GAP_SPAN_S, "devices": await history.gaps(time.time())}

        return await self._from_storage("gaps", query)

    async def energy_route(self, request: web.Request) -> web.StreamResponse:
        members = self.live.bank_members()

        async def query(history: History) -> dict[str, Any]:
            name = energy_range(request.query.get("range"), request.query.get("period"))
            return await history.energy(name, time.time(), members)

        return await self._from_storage("energy", query)

    # --- middleware --------------------------------------------------------------------

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.policy.host_refusal(request.headers.get("Host")) or self.policy.origin_refusal(
            request.headers.get("Origin"), request.headers.get("Host")
        )
        if refusal is not None:
            LOG.info("refused %s %s: %s", request.method, request.path, refusal)
            return web.Response(status=403, text=f"Sunbox: {refusal}")
        if self.password is not None and not _loopback(request.remote) and not self._authorized(request):
            return web.Response(
                status=401, text="Sunbox: password required", headers={"WWW-Authenticate": 'Basic realm="Sunbox"'}
            )
        bad = _bad_parameter(request)
        response = web.json_response({"error": bad}, status=400) if bad else await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            _user, _, given = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        assert self.password is not None
        return hmac.compare_digest(given.encode(), self.password.encode())

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/api/health", self.health)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/heartbeat", self.heartbeat)
        app.router.add_get("/api/live", self.socket)
        app.router.add_get("/api/history", self.history_route)
        app.router.add_get("/api/energy", self.energy_route)
        app.router.add_get("/api/gaps", self.gaps_route)
        app.router.add_post("/api/alarms/ack", self.ack_route)
        app.router.add_static("/static/", STATIC, append_version=False)
        return app


def _bad_parameter(request: web.Request) -> str | None:
    """Why an API request's query parameters are refused: unknown or repeated; None if fine."""
    if not request.path.startswith("/api/"):
        return None
    allowed = PARAMETERS.get(request.path, frozenset())
    for name in request.query:
        if name not in allowed:
            return f"{name[:40]}: unknown parameter" + (f" (takes {', '.join(sorted(allowed))})" if allowed else "")
        if len(request.query.getall(name)) > 1:
            return f"{name}: given more than once"
    return None


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def serve(config: WebConfig, stop: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
    """Run until ``stop`` is set: the broker feed, the HTTP server; ``ready(port)`` once listening."""
    history = History(config.influx, config.max_points)
    app = WebApp(config, history)
    feed = Feed(config.mqtt, asyncio.get_running_loop(), app.on_message, app.on_status)
    app.acknowledge = feed.acknowledge
    feed.start()
    watcher = asyncio.create_task(app.watch_disk(stop))
    runner = web.AppRunner(app.application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.listen, config.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port
    LOG.info("sunbox web listening on %s:%s", config.listen, port)
    if ready is not None:
        ready(port)
    systemd.notify("READY=1")
    pings = asyncio.create_task(systemd.watchdog_pings())
    try:
        await stop.wait()
    finally:
        systemd.notify("STOPPING=1")
        pings.cancel()
        watcher.cancel()
        for socket in list(app.sockets):
            await socket.close()
        await runner.cleanup()
        await asyncio.to_thread(feed.stop)
        await history.close()


def run_web(config: WebConfig) -> None:
    """The service: serve until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop)

    asyncio.run(main())
