"""Venus OS MQTT: readings from a GX device's broker (paho-mqtt).

Connects to the GX broker (username and password when its security profile needs them,
optional TLS). Finds the portal id from ``N/+/system/0/Serial`` unless the config gives
one. Subscribes to the ``N/`` topics of ``battery``, ``solarcharger``, ``vebus`` and
``system``. Keeps the session alive on ``R/<portal id>/keepalive``: the first keep-alive
is empty, which asks for a full republish. Later ones carry
``{"keepalive-options": ["suppress-republish"]}`` (Venus OS 3.20 and later; set
``suppress_republish: false`` for older versions). Each ``(service, instance)`` becomes
one device, ``<id>-<service>-<instance>``. Its newest values are published as a reading
every ``publish_interval_s``. A bad payload is counted and skipped. An empty payload
(the device has gone) drops that device's values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.config import VenusConfig
from sunbox.model import Health, Kind, Reading, now_ms
from sunbox.protocols import venus
from sunbox.protocols.errors import FrameError

LOG = logging.getLogger(__name__)

Publish = Callable[[Reading], None]
SUPPRESS = json.dumps({"keepalive-options": ["suppress-republish"]})


class VenusSource:
    """One GX device. :meth:`run` until cancelled."""

    def __init__(self, config: VenusConfig, publish: Publish) -> None:
        self.config = config
        self.publish = publish
        self.portal_id: str | None = config.portal_id
        self.health = Health(device_id=config.id)
        self.messages = 0
        self.keepalives = 0
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], dict[str, Any]] = {}
        self._fresh: set[tuple[str, str]] = set()
        self._subscribed = False
        self._last_message = 0.0
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=config.client_id)
        if config.username is not None:
            client.username_pw_set(config.username, config.resolved_password())
        if config.tls:
            client.tls_set(ca_certs=str(config.ca_file) if config.ca_file else None)
        client.reconnect_delay_set(1, 60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    # --- paho callbacks (network thread) ------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._error(f"GX broker refused the connection: {reason}")
            return
        self.health.connected = True
        self._subscribed = False
        if self.portal_id is None:
            client.subscribe("N/+/system/0/Serial", 0)
        else:
            self._subscribe(client)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.health.connected = False
        LOG.warning("Venus %s: disconnected (%s)", self.config.id, reason)

    def _subscribe(self, client: mqtt.Client) -> None:
        portal = self.portal_id
        client.subscribe([(f"N/{portal}/{service}/+/#", 0) for service in venus.SERVICES])
        self._subscribed = True
        self._keepalive(full=True)

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        parts = venus.split_topic(message.topic)
        if parts is None:
            return
        if self.portal_id is None:
            self.portal_id = parts[0]
            LOG.info("Venus %s: portal id %s", self.config.id, self.portal_id)
            self._subscribe(client)
            return
        if parts[0] != self.portal_id:
            return
        try:
            decoded = venus.decode(message.topic, message.payload)
        except FrameError as exc:
            self._error(str(exc))
            return
        if decoded is None:
            return
        service, instance, name, value = decoded
        with self._lock:
            self.messages += 1
            self._last_message = time.monotonic()
            if not name:
                self._values.pop((service, instance), None)
                return
            self._values.setdefault((service, instance), {})[name] = value
            self._fresh.add((service, instance))

    def _error(self, message: str) -> None:
        self.health.errors_total += 1
        self.health.last_error = message[:200]
        LOG.warning("Venus %s: %s", self.config.id, message)

    def _keepalive(self, full: bool = False) -> None:
        if self.portal_id is None:
            return
        payload = "" if full or not self.config.suppress_republish else SUPPRESS
        self.client.publish(f"R/{self.portal_id}/keepalive", payload, qos=0)
        self.keepalives += 1

    # --- the asyncio side -----------------------------------------------------------------

    def device_id(self, service: str, instance: str) -> str:
        return f"{self.config.id}-{service}-{instance}".lower()

    def publish_readings(self) -> int:
        """Publish one reading per device that got new values; returns how many."""
        with self._lock:
            fresh = [(key, dict(self._values[key])) for key in sorted(self._fresh) if key in self._values]
            self._fresh.clear()
        time_ms = now_ms()
        for (service, instance), values in fresh:
            kind = venus.KINDS[service]
            reading = Reading(self.device_id(service, instance), cast(Kind, kind), time_ms, venus.finish(kind, values))
            self.publish(reading)
        if fresh:
            self.health.last_reading_ms = time_ms
        return len(fresh)

    def publish_health(self) -> None:
        self.publish(self.health.snapshot())

    async def run(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=30)
        self.client.loop_start()
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + self.config.keepalive_interval_s
        try:
            while True:
                await asyncio.sleep(self.config.publish_interval_s)
                self.publish_readings()
                if loop.time() >= next_keepalive:
                    if self._subscribed:
                        self._keepalive()
                    next_keepalive = loop.time() + self.config.keepalive_interval_s
        finally:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
