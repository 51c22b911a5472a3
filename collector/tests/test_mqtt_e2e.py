"""End to end: simulators -> collector -> the real Mosquitto -> a subscriber.

Includes a broker stop and restart mid-run: every reading arrives, in order, with its
original timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.config import parse
from sunbox.model import Reading
from sunbox.mqtt.publisher import MqttPublisher
from sunbox.mqtt.queue import DiskQueue
from sunbox.service import BleBackend, Collector, is_configured
from sunbox.sim.peripherals import SimWorld
from sunbox_stack.servers import Mosquitto

pytestmark = pytest.mark.stack


class Subscriber:
    """A persistent-session QoS 1 subscriber collecting every message per topic."""

    def __init__(self, server: Mosquitto, *filters: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        wanted = [(f, 1) for f in filters or ("sunbox/#", "homeassistant/#")]
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.username_pw_set(server.username, server.password)
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(wanted)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def states(self, device: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == f"sunbox/{device}/state"]

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto)
    yield sub
    sub.close()


def mqtt_settings(server: Mosquitto) -> dict[str, Any]:
    """The collector's ``mqtt`` section for the test broker (a fresh client id)."""
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "client_id": f"collector-{uuid.uuid4().hex[:6]}",
    }


def config_for(server: Mosquitto, tmp_path: Path) -> Any:
    return parse(
        {
            "mqtt": mqtt_settings(server),
            "queue": {"path": str(tmp_path / "queue.sqlite3")},
            "ble": {"operation_timeout_s": 1.0, "backoff_initial_s": 0.05, "backoff_max_s": 0.5},
            "devices": [
                {
                    "id": "battery",
                    "driver": "jbd",
                    "address": "A4:C1:37:00:00:01",
                    "password": "123456",
                    "poll_interval_s": 0.5,
                },
                {"id": "mppt", "driver": "litime", "address": "C8:47:80:00:00:02", "poll_interval_s": 0.5},
            ],
            "health_interval_s": 1,
        }
    )


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def sim_backend(world: SimWorld, config: Any = None) -> BleBackend:
    """The bleak backend on ``world``'s bumble central, knowing ``config``'s passkeys."""
    central = await world.central()
    for device in config.devices if config is not None else []:
        if device.pairing_passkey is not None:
            central.passkeys[device.address] = device.pairing_passkey
    return BleBackend(central.client_backend(), central.scanner_backend(), None)


@contextlib.asynccontextmanager
async def collector_running(
    config: Any, sent: list[Reading], backend: BleBackend | None = None
) -> AsyncIterator[tuple[MqttPublisher, Collector]]:
    """The collector publishing through a real :class:`MqttPublisher`; every reading is also
    appended to ``sent``. Without a ``backend``, only non-BLE sources can run."""
    queue = DiskQueue(config.queue.path, config.queue.max_age_s, config.queue.max_messages)
    publisher = MqttPublisher(config.mqtt, queue, configured=is_configured(config))
    publisher.start()

    def publish(reading: Reading) -> None:
        sent.append(reading)
        publisher.publish_reading(reading)

    collector = Collector(config, backend or BleBackend(), publish)
    task = asyncio.create_task(collector.run())
    try:
        yield publisher, collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(publisher.stop)
        queue.close()


async def test_readings_reach_a_subscriber(
    world: SimWorld, mosquitto: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    sent: list[Reading] = []
    async with collector_running(config_for(mosquitto, tmp_path), sent, await sim_backend(world)):
        await wait_until(lambda: len(subscriber.states("battery")) >= 2 and len(subscriber.states("mppt")) >= 2)
        await wait_until(lambda: "sunbox/battery/health" in subscriber.topics())
    battery = subscriber.states("battery")[-1]
    assert battery["kind"] == "battery" and battery["device_id"] == "battery"
    assert battery["temperatures"] == [26.8, 27.6, 27.0]
    assert len(battery["cell_voltages"]) == 4
    assert isinstance(battery["time_ms"], int)
    mppt = subscriber.states("mppt")[-1]
    assert mppt["pv_voltage"] == 80.1 and mppt["battery_temperature"] is None
    topics = subscriber.topics()
    assert "homeassistant/sensor/sunbox_battery/soc/config" in topics
    assert "homeassistant/binary_sensor/sunbox_mppt/load_on/config" in topics
    assert "sunbox/collector/availability" in topics
    assert "sunbox/battery/availability" in topics


async def test_broker_restart_loses_nothing(
    world: SimWorld, mosquitto: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    sent: list[Reading] = []
    async with collector_running(config_for(mosquitto, tmp_path), sent, await sim_backend(world)) as (publisher, _):
        await wait_until(lambda: len(subscriber.states("battery")) >= 3)
        queued = publisher.queued  # (discovery's settling queues a few at the start)
        await asyncio.to_thread(mosquitto.stop)
        await wait_until(lambda: publisher.queued >= queued + 10)
        assert len(publisher.queue) > 0
        await asyncio.to_thread(mosquitto.start)
        await wait_until(lambda: len(publisher.queue) == 0 and publisher.connected, timeout=60)
        await asyncio.sleep(1.0)
    expected = {d: [r.time_ms for r in sent if r.device_id == d and r.kind != "health"] for d in ("battery", "mppt")}
    await wait_until(
        lambda: all(set(expected[d]) <= {s["time_ms"] for s in subscriber.states(d)} for d in expected), timeout=30
    )
    for device, times in expected.items():
        received = [s["time_ms"] for s in subscriber.states(device)]
        assert set(times) <= set(received), f"{device}: {len(set(times) - set(received))} readings lost"
        # replay keeps the order (duplicates from QoS 1 retries allowed)
        deduplicated = list(dict.fromkeys(received))
        assert deduplicated == sorted(deduplicated)
