"""Home Assistant discovery through the real Mosquitto (issue 34): each simulated device
is announced with exactly the entities it sends; an entity's first value reaches a
subscriber that, like Home Assistant, subscribes to the state topic only after the
config arrived (the reading waits until the announcement settled); Home Assistant's
birth message brings every announcement again; a device no longer configured is
removed.

The client below subscribes the way Home Assistant's MQTT integration does (config
first, the state topic some milliseconds later); a real Home Assistant is not part of
this test (test_home_assistant_e2e.py runs one; docs/home-assistant.md).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.model import Reading
from sunbox.mqtt.discovery import entity_keys
from sunbox.sim.peripherals import SimWorld
from sunbox_stack.servers import Mosquitto

from .test_mqtt_e2e import collector_running, config_for, sim_backend, wait_until

pytestmark = pytest.mark.stack


class LateSubscriber:
    """Subscribes to ``homeassistant/#``; for each config, to its state topic 100 ms later.
    Records configs (retained or not), and per state topic the payloads received after
    its subscription was acknowledged."""

    def __init__(self, server: Mosquitto) -> None:
        self.lock = threading.Lock()
        self.configs: dict[str, list[bytes]] = {}
        self.states: dict[str, list[dict[str, Any]]] = {}
        self.subscribed: set[str] = set()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4().hex[:6]}"
        )
        self.client.username_pw_set(server.username, server.password)
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("homeassistant/#", 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            if message.topic.startswith("homeassistant/") and message.topic.endswith("/config"):
                self.configs.setdefault(message.topic, []).append(message.payload)
                if message.payload:
                    state_topic = json.loads(message.payload)["state_topic"]
                    if state_topic not in self.subscribed:
                        self.subscribed.add(state_topic)
                        threading.Timer(0.1, client.subscribe, (state_topic, 1)).start()
            elif not message.retain and not message.topic.startswith("homeassistant/"):
                self.states.setdefault(message.topic, []).append(json.loads(message.payload))

    def announced(self, device: str) -> set[str]:
        """The entity keys announced (non-empty config) for a device."""
        with self.lock:
            return {t.split("/")[3] for t, p in self.configs.items() if t.split("/")[2] == f"sunbox_{device}" and p[-1]}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def slow_config(mosquitto: Mosquitto, tmp_path: Any, interval_s: float) -> Any:
    config = config_for(mosquitto, tmp_path)
    for device in config.devices:
        object.__setattr__(device, "poll_interval_s", interval_s)
    object.__setattr__(config, "health_interval_s", interval_s)
    return config


async def test_each_device_is_announced_with_what_it_sends_and_its_first_value_arrives(
    world: SimWorld, mosquitto: Mosquitto, tmp_path: Any
) -> None:
    ha = LateSubscriber(mosquitto)
    sent: list[Reading] = []
    # one reading per device in the test's time: only the copy after the announcement
    # can reach a client that subscribes to the state topic after the config
    config = slow_config(mosquitto, tmp_path, 60.0)
    try:
        async with collector_running(config, sent, await sim_backend(world)):
            await wait_until(lambda: {"battery", "mppt"} <= {r.device_id for r in sent if r.kind != "health"})
            await wait_until(
                lambda: bool(ha.states.get("sunbox/battery/state")) and bool(ha.states.get("sunbox/mppt/state")), 10
            )
            readings = {r.device_id: r for r in sent if r.kind != "health"}
            healths = {r.device_id: r for r in sent if r.kind == "health"}
            for device in ("battery", "mppt"):
                expected = entity_keys(readings[device].values) | entity_keys(healths[device].values)
                await wait_until(lambda d=device, e=expected: ha.announced(d) == e, 10)  # type: ignore[misc]
    finally:
        ha.close()
    assert {"soc", "cell_voltage_01", "temperature_03", "connected"} <= ha.announced("battery")
    mppt = ha.announced("mppt")
    assert "pv_voltage" in mppt and "load_on" in mppt
    assert "battery_temperature" not in mppt and "pv_power" not in mppt  # never sent: never announced
    assert "cell_voltage_01" not in mppt
    first = ha.states["sunbox/battery/state"][0]
    assert first["time_ms"] == readings["battery"].time_ms  # the first reading, not a later one


async def test_home_assistant_coming_online_gets_every_announcement_again(
    world: SimWorld, mosquitto: Mosquitto, tmp_path: Any
) -> None:
    ha = LateSubscriber(mosquitto)
    sent: list[Reading] = []
    try:
        async with collector_running(slow_config(mosquitto, tmp_path, 60.0), sent, await sim_backend(world)):
            await wait_until(
                lambda: "soc" in ha.announced("battery") and bool(ha.states.get("sunbox/battery/state")), 20
            )
            topic = "homeassistant/sensor/sunbox_battery/soc/config"
            before = len(ha.configs[topic])
            ha.client.publish("homeassistant/status", "online", qos=1)
            await wait_until(lambda: len(ha.configs[topic]) > before, 10)
    finally:
        ha.close()


async def test_a_device_no_longer_configured_is_removed_from_home_assistant(
    world: SimWorld, mosquitto: Mosquitto, tmp_path: Any
) -> None:
    old = "homeassistant/sensor/sunbox_old-bms/soc/config"
    setup = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"setup-{uuid.uuid4().hex[:6]}")
    setup.username_pw_set(mosquitto.username, mosquitto.password)
    setup.connect("127.0.0.1", mosquitto.port)
    setup.loop_start()
    setup.publish(old, json.dumps({"state_topic": "sunbox/old-bms/state"}), qos=1, retain=True).wait_for_publish(5)
    index = {"old-bms": [old], "battery": ["homeassistant/sensor/sunbox_battery/cycles/config"]}
    setup.publish("sunbox/_discovery/announced", json.dumps(index), qos=1, retain=True).wait_for_publish(5)
    setup.loop_stop()
    setup.disconnect()
    ha = LateSubscriber(mosquitto)
    try:
        await wait_until(lambda: old in ha.configs, 5)  # the retained config, before the collector runs
        async with collector_running(config_for(mosquitto, tmp_path), [], await sim_backend(world)):
            await wait_until(lambda: ha.configs[old][-1] == b"", 10)
            await wait_until(lambda: "soc" in ha.announced("battery"), 10)
            await asyncio.sleep(0.5)
    finally:
        ha.close()
    fresh = LateSubscriber(mosquitto)  # what the broker keeps: no config, an index without it
    try:
        await wait_until(lambda: "soc" in fresh.announced("battery"), 5)
        assert old not in fresh.configs
    finally:
        fresh.close()
    got: list[bytes] = []
    reader = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"index-{uuid.uuid4().hex[:6]}")
    reader.username_pw_set(mosquitto.username, mosquitto.password)
    reader.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("sunbox/_discovery/announced", 1)
    reader.on_message = lambda _c, _u, m: got.append(m.payload)
    reader.connect("127.0.0.1", mosquitto.port)
    reader.loop_start()
    try:
        await wait_until(lambda: bool(got), 5)
    finally:
        reader.loop_stop()
        reader.disconnect()
    kept = json.loads(got[-1])
    assert "old-bms" not in kept
    assert "homeassistant/sensor/sunbox_battery/cycles/config" in kept["battery"]  # an earlier run's entity stays
