"""``sunbox alarms run``: the engine between the broker, its state file and the outbox.

A service of its own (not inside the collector), so that it can say the collector is
gone. It subscribes to every device's readings (``<prefix>/+/state``, and bridged sites'),
feeds them to :class:`~sunbox.alarms.engine.Engine`, ticks it every second, observes the
appliance itself every ``system.check_s`` (:mod:`sunbox.alarms.system`: the collector's
availability, the writer's reports, the backup's state, the broker connection, InfluxDB's
``/health``, the card), and for each change:

* rewrites the state file (:mod:`sunbox.alarms.state`);
* publishes the alarm retained on ``<prefix>/_alarms/<rule>/<device>`` (the alarm's JSON,
  ``active`` true or false), the list of active ones on ``<prefix>/_alarms/active`` and
  the last changes on ``<prefix>/_alarms/history``, so every screen and Home Assistant
  see the same state;
* publishes the event itself (QoS 1, not retained) on ``<prefix>/_alarms/events``, which
  the writer stores in the events bucket for History's markers (``sunbox.storage.writer``);
* queues a line for every notification target (:mod:`sunbox.alarms.outbox`).

Home Assistant learns of them through discovery (:mod:`sunbox.alarms.discovery`).

An acknowledgement comes from the display on ``<prefix>/_alarms/ack`` (``{"id": ...}``).
A payload that fails the writer's own validation is skipped and counted, never evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox import disk, topics
from sunbox.storage.points import PayloadError, parse_reading

from . import discovery, notify, state, system
from .engine import Engine, Event
from .outbox import Outbox, when
from .rules import AlarmsConfig

LOG = logging.getLogger(__name__)

#: the branch under the prefix where alarms are published
BRANCH = topics.ALARMS_LEVEL
#: the last changes published for the Alarms page (``<prefix>/_alarms/history``)
HISTORY_SHOWN = 50


def now_ms() -> int:
    return int(time.time() * 1000)


def line(event: Event) -> str:
    """One event as a notification line: its original time, what, severity, device and words."""
    a = event.alarm
    value = "" if a.value is None or event.what != "raised" else f" ({a.value:g})"
    return f"{when(event.time_ms)}  {event.what.upper()}  {a.severity}  {a.device}: {a.text}{value}"


class AlarmService:
    """The running service (see the module docstring)."""

    def __init__(self, config: AlarmsConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.prefix = config.mqtt.topic_prefix
        self._loop = loop
        self.engine = Engine(config.all_rules(), now_ms(), {d: None for d in config.devices})
        saved = state.load(config.state_path)
        if saved is not None:
            try:
                self.engine.load(saved)
            except ValueError as exc:
                LOG.error("alarm state %s ignored: %s", config.state_path, exc)
        urls = config.notify.urls()
        n = config.notify
        self.outbox = Outbox(
            config.outbox_path,
            urls,
            notify.send,
            digest_s=n.digest_s,
            retry_first_s=n.retry_first_s,
            retry_max_s=n.retry_max_s,
        )
        self.skipped: Counter[str] = Counter()
        self.facts = system.SystemFacts(started_ms=now_ms())
        self._checked_at = 0.0
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=config.mqtt.client_id)
        client.username_pw_set(config.mqtt.username, config.mqtt.resolved_password())
        if config.mqtt.tls:
            client.tls_set(ca_certs=str(config.mqtt.ca_file) if config.mqtt.ca_file else None)
        client.reconnect_delay_set(1, 30)
        client.will_set(f"{self.prefix}/{BRANCH}/availability", "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda _c, _u, _f, reason, _p: loop.call_soon_threadsafe(
            self._broker, False, str(reason)
        )
        client.on_message = lambda _c, _u, m: loop.call_soon_threadsafe(
            self._inbox.put_nowait, (m.topic, bytes(m.payload))
        )
        self.client = client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            LOG.warning("broker refused the connection: %s", reason)
            return
        own = [f"{self.prefix}/{t}" for t in (f"{BRANCH}/ack", "collector/availability", "_store/stored")]
        subscriptions = [*topics.subscriptions(self.prefix, ("state",)), *own]
        client.subscribe([(t, 0 if t.endswith("/state") else 1) for t in subscriptions])
        self._loop.call_soon_threadsafe(self._broker, True, "connected")
        client.publish(f"{self.prefix}/{BRANCH}/availability", "online", qos=1, retain=True)
        if self.config.mqtt.discovery:
            for topic, payload in discovery.discovery_messages(self.prefix, self.config.mqtt.discovery_prefix, BRANCH):
                client.publish(topic, payload, qos=1, retain=True)
        self._loop.call_soon_threadsafe(self._publish_all)
        LOG.info("broker %s:%s connected", self.config.mqtt.host, self.config.mqtt.port)

    # --- events ------------------------------------------------------------------

    def _broker(self, connected: bool, reason: str) -> None:
        if connected != self.facts.broker_connected:
            LOG.log(
                logging.INFO if connected else logging.WARNING, "broker %s (%s)", "up" if connected else "lost", reason
            )
        self.facts.broker_connected = connected

    def handle(self, topic: str, payload: bytes) -> list[Event]:
        """One reading (or acknowledgement, or a fact about the appliance) from the broker;
        the events it caused (already stored and published)."""
        if topic == f"{self.prefix}/{BRANCH}/ack":
            return self._acknowledged(payload)
        if self._system_fact(topic, payload):
            return []
        try:
            point, data = parse_reading(topic, payload, now_ms(), self.prefix)
        except PayloadError as exc:
            self.skipped[str(exc).split(":")[0][:60]] += 1
            return []
        values = {k: v for k, v in data.items() if k not in ("device_id", "kind")}
        self.facts.last_reading_ms = now_ms()
        events = self.engine.observe(point.device, point.measurement, values, point.time_ms)
        self._apply(events)
        return events

    def _system_fact(self, topic: str, payload: bytes) -> bool:
        """Take a message about the appliance itself; False when the topic is not one."""
        leaf = topic.removeprefix(f"{self.prefix}/")
        if leaf == "collector/availability":
            self.facts.collector_online = payload.strip() == b"online"
        elif leaf == "_store/stored":
            self.facts.last_store_report_ms = now_ms()
        elif leaf == "backup/state":
            try:
                self.facts.backup_state(json.loads(payload))
            except (ValueError, AttributeError, TypeError):
                self.skipped["backup state malformed"] += 1
        else:
            return False
        return True

    async def check_system(self, session: aiohttp.ClientSession | None) -> list[Event]:
        """Look at InfluxDB and the card, then observe the appliance's quantities."""
        config = self.config.system
        if session is not None and config.influx_url:
            try:
                async with session.get(f"{config.influx_url}/health") as response:
                    self.facts.storage_up = response.status == 200 and (await response.json()).get("status") == "pass"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if self.facts.storage_up is not False:
                    LOG.warning("InfluxDB at %s not answering: %s", config.influx_url, exc or type(exc).__name__)
                self.facts.storage_up = False
        if config.disk_path:
            card = await asyncio.to_thread(disk.read_state, config.disk_path, 0)
            self.facts.disk_status = card.status
            if card.free_bytes is not None and card.total_bytes:
                self.facts.disk_free_pct = round(100 * card.free_bytes / card.total_bytes, 1)
        now = now_ms()
        events = self.engine.observe(system.DEVICE, system.KIND, self.facts.values(now), now)
        self._apply(events)
        return events

    def tick(self) -> list[Event]:
        events = self.engine.tick(now_ms())
        self._apply(events)
        return events

    def _acknowledged(self, payload: bytes) -> list[Event]:
        """``{"id": "<rule>/<device>"}`` from the display (the only account that may send it)."""
        try:
            alarm_id = json.loads(payload).get("id")
        except (ValueError, AttributeError, UnicodeDecodeError):
            alarm_id = None
        if not isinstance(alarm_id, str):
            self.skipped["acknowledgement malformed"] += 1
            return []
        event = self.engine.acknowledge(alarm_id, now_ms())
        events = [event] if event is not None else []
        self._apply(events)
        return events

    def _apply(self, events: list[Event]) -> None:
        if not events:
            return
        for event in events:
            LOG.warning("alarm %s %s: %s", event.what, event.alarm.id, event.alarm.text)
            if event.what == "raised" or (event.what == "cleared" and self.config.notify.on_clear):
                self.outbox.put(line(event), event.time_ms, now_ms())
            self._publish(event.alarm.id, event.alarm.to_dict())
            self.client.publish(topics.alarm_events_topic(self.prefix), json.dumps(event.to_dict()), qos=1)
        self._publish_active()
        try:
            state.save(self.config.state_path, self.engine.to_dict())
        except OSError as exc:
            LOG.error("alarm state not saved (%s): %s", self.config.state_path, exc)

    def _publish(self, alarm_id: str, payload: dict[str, Any]) -> None:
        self.client.publish(f"{self.prefix}/{BRANCH}/{alarm_id}", json.dumps(payload), qos=1, retain=True)

    def _publish_active(self) -> None:
        active = [a.to_dict() for a in self.engine.active()]
        self.client.publish(f"{self.prefix}/{BRANCH}/active", json.dumps(active), qos=1, retain=True)
        history = list(self.engine.history)[-HISTORY_SHOWN:]
        self.client.publish(f"{self.prefix}/{BRANCH}/history", json.dumps(history), qos=1, retain=True)

    def _publish_all(self) -> None:
        for alarm in self.engine.active():
            self._publish(alarm.id, alarm.to_dict())
        self._publish_active()

    # --- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, self.config.mqtt.keepalive)
        self.client.loop_start()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    topic, payload = await asyncio.wait_for(self._inbox.get(), 1.0)
                    self.handle(topic, payload)
                    while not self._inbox.empty():
                        self.handle(*self._inbox.get_nowait())
                if time.monotonic() - self._checked_at >= self.config.system.check_s:
                    self._checked_at = time.monotonic()
                    await self.check_system(session)
                self.tick()
                await self.outbox.deliver(now_ms())
        finally:
            await session.close()
            self.client.publish(f"{self.prefix}/{BRANCH}/availability", "offline", qos=1, retain=True)
            self.client.disconnect()
            self.client.loop_stop()
            self.outbox.close()
