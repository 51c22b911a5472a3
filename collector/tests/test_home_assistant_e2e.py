"""A real Home Assistant (issue 34) sees every Sunbox device as it is.

Home Assistant 2026.11.0 (``sunbox_stack.homeassistant``: Debian forky's Python 3.14 in
a cached chroot), onboarded and given the MQTT integration through its own HTTP API, on
a Mosquitto of its own. Sunbox's real collector reads simulated devices of every family
(JBD and LiTime over BLE, a SmartSolar over VictronConnect GATT, Instant Readout adverts
of eight Victron record types, two VE.Direct captures, a Venus OS GX) and publishes
through its real ``MqttPublisher``. Then, from Home Assistant's own API and log:

* the entity registry holds exactly one entity per quantity each device sent (none
  for a quantity it did not send), with the entity id, unit and device class of the
  table of quantities, and every enabled entity has a current value;
* they all go unavailable when the collector stops and come back when it restarts;
* the Energy dashboard's validation finds no issue with the energy sensors;
* Home Assistant's log has no warning or error about MQTT, templates or Sunbox.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sunbox.alarms.rules import DEFAULT_RULES
from sunbox.config import parse
from sunbox.model import Reading
from sunbox.mqtt.discovery import entity_keys, quantity_of, slug
from sunbox.protocols.victron_advert import _Cipher
from sunbox.sim.peripherals import (
    JbdSimulator,
    LiTimeSimulator,
    SimWorld,
    SmartSolarSimulator,
    VictronAdvertiser,
)
from sunbox.sim.vedirect_pty import VeDirectReplay
from sunbox.sim.venus_gx import VenusStandIn
from sunbox_stack.homeassistant import HomeAssistant, HomeAssistantUnavailable, build
from sunbox_stack.servers import Mosquitto, free_port

from .test_mqtt_e2e import collector_running, mqtt_settings, sim_backend, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("home-assistant")]
FIXTURES = Path(__file__).parent / "fixtures"
SMARTSOLAR = ("F9:3E:4C:00:00:09", 147258)
#: one Instant Readout advert per record type (victron-ble's published test vectors,
#: fixtures/victron_ble_vectors.json), as a device id
ADVERT_RECORDS = {
    "1": "ir-solar",
    "2": "ir-shunt",
    "4": "ir-orion",
    "8": "ir-accharger",
    "9": "ir-protect",
    "11": "ir-multirs",
    "12": "ir-vebus",
    "13": "ir-dcmeter",
}
VENUS_IDS = {"gx-solarcharger-279", "gx-battery-512", "gx-vebus-276", "gx-system-0"}


def advert_vectors() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for vector in json.loads((FIXTURES / "victron_ble_vectors.json").read_text())["vectors"]:
        device = ADVERT_RECORDS.get(str(vector.get("record_type")))
        if device and "advert" in vector and "mismatch" not in vector["source"] and device not in out:
            out[device] = vector
    return out


@pytest.fixture(scope="module")
def home_assistant() -> Iterator[HomeAssistant]:
    try:
        root = build()
    except HomeAssistantUnavailable as exc:
        pytest.skip(str(exc))
    ha = HomeAssistant(root)
    started = ha.start()
    print(f"Home Assistant started in {started:.1f} s")
    ha.onboard()
    yield ha
    ha.remove()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of its own: no retained configs from other tests reach Home Assistant."""
    server = Mosquitto("mosquitto-ha", free_port(), tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def every_family(broker: Mosquitto) -> AsyncIterator[tuple[SimWorld, list[str], VenusStandIn]]:
    """The simulated devices of every family; yields the BLE world, the VE.Direct ports
    and the GX stand-in (publishing on ``broker``)."""
    world = SimWorld()
    world.add(JbdSimulator(world.link, password="123456"))
    world.add(LiTimeSimulator(world.link))
    world.add(SmartSolarSimulator(world.link, SMARTSOLAR[0], passkey=SMARTSOLAR[1], keepalive_timeout=5))
    for number, (_device, vector) in enumerate(sorted(advert_vectors().items()), 1):
        data, key = bytes.fromhex(vector["advert"]), bytes.fromhex(vector["key"])
        plaintext = _Cipher(key.hex()).decrypt(data)[: len(data) - 8]
        world.add(VictronAdvertiser(world.link, f"D0:00:00:00:01:{number:02X}", key, data, plaintext, interval=0.5))
    await world.start()
    replays = [
        VeDirectReplay((FIXTURES / name).read_bytes(), interval=0.02)
        for name in ("vedirect_bvm702.dump", "vedirect_bluesolar_1.23.dump")
    ]
    tasks = [asyncio.create_task(r.run()) for r in replays]
    gx = VenusStandIn("127.0.0.1", broker.port, broker.username, broker.password, timeout_s=10.0)
    gx.start()
    try:
        yield world, [r.path for r in replays], gx
    finally:
        gx.stop()
        for task in tasks:
            task.cancel()
        for replay in replays:
            replay.close()


def collector_config(broker: Mosquitto, tmp_path: Path, ports: list[str]) -> Any:
    adverts = advert_vectors()
    return parse(
        {
            "mqtt": mqtt_settings(broker),
            "queue": {"path": str(tmp_path / "queue.sqlite3")},
            "ble": {"scanning_mode": "passive", "operation_timeout_s": 5.0},
            "devices": [
                {
                    "id": "bms",
                    "driver": "jbd",
                    "address": "A4:C1:37:00:00:01",
                    "password": "123456",
                    "poll_interval_s": 2,
                },
                {"id": "mppt", "driver": "litime", "address": "C8:47:80:00:00:02", "poll_interval_s": 2},
                {
                    "id": "smartsolar",
                    "driver": "smartsolar",
                    "address": SMARTSOLAR[0],
                    "passkey": SMARTSOLAR[1],
                    "poll_interval_s": 2,
                },
            ],
            "victron_adverts": [
                {
                    "id": device,
                    "address": f"D0:00:00:00:01:{number:02X}",
                    "key": adverts[device]["key"],
                    "interval_s": 2,
                }
                for number, device in enumerate(sorted(adverts), 1)
            ],
            "vedirect": [
                {"id": "bmv", "port": ports[0], "publish_interval_s": 2},
                {"id": "bluesolar", "port": ports[1], "publish_interval_s": 2},
            ],
            "venus": [
                {
                    "id": "gx",
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "username": broker.username,
                    "password": broker.password,
                    "publish_interval_s": 2,
                }
            ],
            # a bank of the JBD pack with the BMV as its meter (issue 31)
            "banks": [{"id": "house", "packs": ["bms"], "meter": "bmv", "interval_s": 2}],
            "health_interval_s": 2,
        }
    )


def expected_entities(sent: list[Reading]) -> dict[str, tuple[str, str]]:
    """unique_id -> (entity id, device) for every quantity a device sent a value for."""
    out: dict[str, tuple[str, str]] = {}
    for reading in sent:
        for key in entity_keys(reading.values):
            found = quantity_of(key)
            assert found is not None
            component = found[0].component
            out[f"sunbox_{reading.device_id}_{key}"] = (
                f"{component}.sunbox_{slug(reading.device_id)}_{key}",
                reading.device_id,
            )
    return out


def latest_values(sent: list[Reading]) -> dict[str, Any]:
    """unique_id -> the newest value sent (None: the device had none at that moment)."""
    out: dict[str, Any] = {}
    for reading in sent:
        values = dict(reading.values)
        for name, value in reading.values.items():
            if isinstance(value, list):
                for index, item in enumerate(value, 1):
                    values[f"{name[:-1]}_{index:02d}"] = item
        for key, value in values.items():
            out[f"sunbox_{reading.device_id}_{key}"] = value
    return out


def sunbox_registry(ha: HomeAssistant) -> dict[str, dict[str, Any]]:
    (entries,) = ha.websocket({"type": "config/entity_registry/list"})
    return {e["unique_id"]: e for e in entries if e["platform"] == "mqtt" and e["unique_id"].startswith("sunbox_")}


async def test_home_assistant_sees_every_device_as_it_is(
    home_assistant: HomeAssistant, broker: Mosquitto, tmp_path: Path
) -> None:
    ha = home_assistant
    ha.add_mqtt(broker.port, broker.username, broker.password)
    sent: list[Reading] = []
    devices = {"bms", "mppt", "smartsolar", "bmv", "bluesolar", "house", *ADVERT_RECORDS.values(), *VENUS_IDS}
    async with every_family(broker) as (world, ports, _gx):
        config = collector_config(broker, tmp_path, ports)
        async with collector_running(config, sent, await sim_backend(world, config)):
            await wait_until(
                lambda: all(sum(r.device_id == d and r.kind != "health" for r in sent) >= 3 for d in devices), 120
            )
            expected = expected_entities(sent)
            registry: dict[str, dict[str, Any]] = {}

            def registered() -> bool:
                nonlocal registry
                registry = sunbox_registry(ha)
                return set(registry) >= set(expected)

            await asyncio.to_thread(lambda: _poll(registered, 60))
            await asyncio.sleep(5)  # a few more readings of every device
            expected = expected_entities(sent)
            registry = await asyncio.to_thread(sunbox_registry, ha)
            states = await asyncio.to_thread(ha.states)
            latest = latest_values(sent)

            assert set(registry) == set(expected), (
                f"entities for quantities never sent: {sorted(set(registry) - set(expected))}; "
                f"quantities sent but not announced: {sorted(set(expected) - set(registry))}"
            )
            per_device: dict[str, int] = {}
            unknown = []
            for unique_id, entry in registry.items():
                entity_id, device = expected[unique_id]
                per_device[device] = per_device.get(device, 0) + 1
                assert entry["entity_id"] == entity_id, unique_id
                if entry["disabled_by"] is not None:
                    continue
                state = states[entity_id]
                key = unique_id.removeprefix(f"sunbox_{device}_")
                quantity = quantity_of(key)
                assert quantity is not None
                if quantity[0].unit and quantity[0].device_class != "timestamp":
                    assert state["attributes"].get("unit_of_measurement") == quantity[0].unit, entity_id
                assert state["attributes"].get("device_class") == quantity[0].device_class, entity_id
                if state["state"] in ("unknown", "unavailable") and latest.get(unique_id) is not None:
                    unknown.append(entity_id)
            assert not unknown, f"entities without a value: {unknown}"
            assert set(per_device) == devices | {"gx"}  # the GX source: its link health
            print("entities per device:", json.dumps(dict(sorted(per_device.items()))))

            # the alarms (issue 32): the service's own device, from its discovery
            await asyncio.to_thread(lambda: _alarms_in_home_assistant(ha, broker, tmp_path))

            # the Energy dashboard takes the energy counters without an issue
            prefs = {
                "energy_sources": [
                    {"type": "solar", "stat_energy_from": "sensor.sunbox_bluesolar_yield_total"},
                    {
                        "type": "battery",
                        "stat_energy_from": "sensor.sunbox_bmv_discharged_energy",
                        "stat_energy_to": "sensor.sunbox_bmv_charged_energy",
                    },
                ],
                "device_consumption": [],
            }
            _saved, validation, statistic_ids, statistics_issues = await asyncio.to_thread(
                ha.websocket,
                {"type": "energy/save_prefs", **prefs},
                {"type": "energy/validate"},
                {"type": "recorder/list_statistic_ids", "statistic_type": "sum"},
                {"type": "recorder/validate_statistics"},
            )
            # the recorder compiles statistics every 5 minutes: until its first run the
            # dashboard says "statistics not defined", and nothing else is allowed
            issues = [i for source in validation["energy_sources"] for i in source]
            assert {i["type"] for i in issues} <= {"statistics_not_defined"}, f"the Energy dashboard: {issues}"
            sums = {s["statistic_id"]: s for s in statistic_ids}
            for entity_id in (
                "sensor.sunbox_bluesolar_yield_total",
                "sensor.sunbox_bmv_charged_energy",
                "sensor.sunbox_bmv_discharged_energy",
            ):
                assert sums[entity_id]["has_sum"] and sums[entity_id]["statistics_unit_of_measurement"] == "Wh"
            ours = {
                e: i for e, i in statistics_issues.items() if e.startswith(("sensor.sunbox_", "binary_sensor.sunbox_"))
            }
            assert not ours, f"the recorder's statistics validation: {ours}"

        # the collector stopped (its last will and its own "offline"): all unavailable
        def all_unavailable() -> bool:
            states = ha.states()
            return all(states[e["entity_id"]]["state"] == "unavailable" for e in enabled(registry).values())

        await asyncio.to_thread(lambda: _poll(all_unavailable, 30))

        async with collector_running(config, [], await sim_backend(world, config)):

            def all_back() -> bool:
                states = ha.states()
                return all(states[e["entity_id"]]["state"] != "unavailable" for e in enabled(registry).values())

            await asyncio.to_thread(lambda: _poll(all_back, 90))

    logged = ha.log_lines()
    sources = collections.Counter(line.split("[", 1)[1].split("]", 1)[0] for line in logged if line[:4].isdigit())
    print(f"Home Assistant's log: {sum(sources.values())} warnings and errors, from {dict(sources.most_common())}")
    problems = [
        line
        for line in logged
        if any(word in line.lower() for word in ("mqtt", "sunbox", "template", "value_json", "sensor."))
        and "Disconnected from MQTT server" not in line
    ]
    assert not problems, "Home Assistant's log:\n" + "\n".join(problems[:40])


def _alarms_in_home_assistant(ha: HomeAssistant, broker: Mosquitto, tmp_path: Path) -> None:
    """`sunbox alarms run` with one rule that holds (the BMS's SOC below 101 %): Home
    Assistant shows one active alarm, with its id in the attributes, and both problem
    sensors on; when the service stops, its entities are unavailable."""
    config = tmp_path / "alarms.yaml"
    config.write_text(
        json.dumps(
            {
                "mqtt": {**mqtt_settings(broker), "client_id": "sunbox-alarms"},
                "defaults": {rule.id: False for rule in DEFAULT_RULES},
                "system": {"influx_url": None, "disk_path": None},
                "rules": [{"id": "bms-low", "quantity": "soc", "below": 101, "device": "bms", "severity": "alarm"}],
                "state_path": str(tmp_path / "alarms-state.json"),
                "outbox_path": str(tmp_path / "alarms-outbox.sqlite3"),
            }
        )
    )
    process = subprocess.Popen([sys.executable, "-m", "sunbox.cli", "alarms", "run", "-c", str(config)])
    entities = (
        "sensor.sunbox_alarms_active",
        "binary_sensor.sunbox_alarms_alarm",
        "binary_sensor.sunbox_alarms_warning",
    )
    try:

        def raised() -> bool:
            states = ha.states()
            return [states.get(e, {}).get("state") for e in entities] == ["1", "on", "on"]

        _poll(raised, 60)
        attributes = ha.states()["sensor.sunbox_alarms_active"]["attributes"]
        assert [a["id"] for a in attributes["alarms"]] == ["bms-low/bms"], attributes
        assert attributes["alarms"][0]["severity"] == "alarm" and attributes["alarms"][0]["active"] is True
    finally:
        process.terminate()
        process.wait(10)

    def unavailable() -> bool:
        states = ha.states()
        return all(states[e]["state"] == "unavailable" for e in entities)

    _poll(unavailable, 30)


def enabled(registry: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {u: e for u, e in registry.items() if e["disabled_by"] is None}


def _poll(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {predicate.__name__}")
        time.sleep(1)
