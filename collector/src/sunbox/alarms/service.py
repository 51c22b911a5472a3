"""``sunbox alarms run``: the engine between the broker, its state file and the outbox.

A service of its own (not inside the collector), so that it can say the collector is
gone. It subscribes to every device's readings (``<prefix>/+/state``, and bridged sites'),
feeds them to :class:`~sunbox.alarms.engine.Engine`, ticks it every second, and for each
change:

* rewrites the state file (:mod:`sunbox.alarms.state`);
* publishes the alarm retained on ``<prefix>/_alarms/<rule>/<device>`` (the alarm's JSON,
  ``active`` true or false), the list of active ones on ``<prefix>/_alarms/active`` and
  the last changes on ``<prefix>/_alarms/history``, so every screen and Home Assistant
  see the same state;
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

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox import topics
from sunbox.storage.points import PayloadError, parse_reading

from . import discovery, notify, state
from .engine import Engine, Event
from .outbox import Outbox, when
from .rules import AlarmsConfig

LOG = logging.getLogger(__name__)

#: the branch under the prefix where alarms are published (no device id starts with "_")
BRANCH = "_alarms"
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
        self.outbox = Outbox(config.outbox_path, urls, notify.send, config.notify.digest_s, config.notify.retry_max_s)
        self.skipped: Counter[str] = Counter()
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=config.mqtt.client_id)
        client.username_pw_set(config.mqtt.username, config.mqtt.resolved_password())
        if config.mqtt.tls:
            client.tls_set(ca_certs=str(config.mqtt.ca_file) if config.mqtt.ca_file else None)
        client.reconnect_delay_set(1, 30)
        client.will_set(f"{self.prefix}/{BRANCH}/availability", "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_message = lambda _c, _u, m: loop.call_soon_threadsafe(
            self._inbox.put_nowait, (m.topic, bytes(m.payload))
        )
        self.client = client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            LOG.warning("broker refused the connection: %s", reason)
            return
        subscriptions = [*topics.subscriptions(self.prefix, ("state",)), f"{self.prefix}/{BRANCH}/ack"]
        client.subscribe([(t, 0 if t.endswith("/state") else 1) for t in subscriptions])
        client.publish(f"{self.prefix}/{BRANCH}/availability", "online", qos=1, retain=True)
        if self.config.mqtt.discovery:
            for topic, payload in discovery.discovery_messages(self.prefix, self.config.mqtt.discovery_prefix, BRANCH):
                client.publish(topic, payload, qos=1, retain=True)
        self._loop.call_soon_threadsafe(self._publish_all)
        LOG.info("broker %s:%s connected", self.config.mqtt.host, self.config.mqtt.port)

    # --- events ------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Event]:
        """One reading (or acknowledgement) from the broker; the events it caused (already
        stored and published)."""
        if topic == f"{self.prefix}/{BRANCH}/ack":
            return self._acknowledged(payload)
        try:
            point, data = parse_reading(topic, payload, now_ms(), self.prefix)
        except PayloadError as exc:
            self.skipped[str(exc).split(":")[0][:60]] += 1
            return []
        values = {k: v for k, v in data.items() if k not in ("device_id", "kind")}
        events = self.engine.observe(point.device, point.measurement, values, point.time_ms)
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
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    topic, payload = await asyncio.wait_for(self._inbox.get(), 1.0)
                    self.handle(topic, payload)
                    while not self._inbox.empty():
                        self.handle(*self._inbox.get_nowait())
                self.tick()
                await self.outbox.deliver(now_ms())
        finally:
            self.client.publish(f"{self.prefix}/{BRANCH}/availability", "offline", qos=1, retain=True)
            self.client.disconnect()
            self.client.loop_stop()
            self.outbox.close()
