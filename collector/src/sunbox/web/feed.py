"""The display's broker connection: paho-mqtt in its own thread, messages handed to asyncio.

A clean, non-persistent session (the display needs the newest reading, not a backlog)
subscribed to ``<prefix>/+/state``, ``/health`` and ``/availability``, and the alarm
engine's ``<prefix>/_alarms/active``, ``/history`` and ``/availability``, at QoS 0. Its
one write is an acknowledgement of an alarm (``<prefix>/_alarms/ack``, :meth:`Feed.acknowledge`). paho
reconnects by itself (1 s doubling to 30 s); every change of the connection is logged
and handed to ``on_status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox import topics

from .config import WebMqttConfig

LOG = logging.getLogger(__name__)

#: (topic, payload) of one message
OnMessage = Callable[[str, bytes], None]
#: (connected, reason text)
OnStatus = Callable[[bool, str], None]


class Feed:
    """Subscribes to the readings; calls ``on_message``/``on_status`` on the asyncio loop."""

    def __init__(
        self, config: WebMqttConfig, loop: asyncio.AbstractEventLoop, on_message: OnMessage, on_status: OnStatus
    ) -> None:
        self.config = config
        self._loop = loop
        self._on_message_cb = on_message
        self._on_status_cb = on_status
        self.connected = False
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=config.client_id)
        client.username_pw_set(config.username, config.resolved_password())
        if config.tls:
            client.tls_set(ca_certs=str(config.ca_file) if config.ca_file else None)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried, not raised."""
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _status(self, connected: bool, reason: str) -> None:
        if connected != self.connected:
            state = "connected" if connected else "lost"
            LOG.info("broker %s:%s %s (%s)", self.config.host, self.config.port, state, reason)
        self.connected = connected
        self._loop.call_soon_threadsafe(self._on_status_cb, connected, reason)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            LOG.warning("broker refused the connection: %s", reason)
            self._status(False, f"refused: {reason}")
            return
        prefix = self.config.topic_prefix
        alarms = [f"{prefix}/{topics.ALARMS_LEVEL}/{leaf}" for leaf in ("active", "history", "availability")]
        client.subscribe([(t, 0) for t in topics.subscriptions(prefix, topics.LEAVES) + alarms])
        self._status(True, "connected")

    def acknowledge(self, alarm_id: str) -> bool:
        """Ask the alarm engine to mark ``alarm_id`` seen (QoS 1); False when the broker is away."""
        if not self.connected:
            return False
        topic = f"{self.config.topic_prefix}/{topics.ALARMS_LEVEL}/ack"
        info = self.client.publish(topic, json.dumps({"id": alarm_id}), qos=1)
        return bool(info.rc == mqtt.MQTT_ERR_SUCCESS)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._status(False, f"disconnected: {reason}")

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self._on_message_cb, message.topic, bytes(message.payload))
