"""Banks end to end (issue 31): simulated JBD packs of 100 Ah and 280 Ah over the
production bleak path, a BMV-702 replayed on a pseudo-terminal, the real collector and the
real Mosquitto. The banks reach a subscriber as devices of their own, with the
capacity-weighted SOC (or the meter's), power counted once, a silent pack counted out,
and their Home Assistant entities announced."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from sunbox.config import parse
from sunbox.model import Reading
from sunbox.mqtt.discovery import entity_keys
from sunbox.sim.peripherals import JbdSimulator, SimWorld
from sunbox.sim.vedirect_pty import VeDirectReplay
from sunbox_stack.servers import Mosquitto

from .test_mqtt_e2e import Subscriber, collector_running, mqtt_settings, sim_backend, wait_until

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).parent / "fixtures"


def latest_before(sent: list[Reading], index: int, device: str) -> Reading | None:
    return next((r for r in reversed(sent[:index]) if r.device_id == device and r.kind == "battery"), None)


async def test_banks_read_as_one_battery_with_power_counted_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    world = SimWorld()
    world.add(JbdSimulator(world.link, "A4:C1:37:00:00:11", "SMALL-SIM", capacity_ah=100, soc=50))
    world.add(JbdSimulator(world.link, "A4:C1:37:00:00:12", "BIG-SIM", capacity_ah=280, soc=90, seed=2))
    world.add(JbdSimulator(world.link, "A4:C1:37:00:00:13", "CABIN-SIM", capacity_ah=200, soc=60, seed=3))
    await world.start()
    replay = VeDirectReplay((FIXTURES / "vedirect_bvm702.dump").read_bytes(), interval=0.05)
    replaying = asyncio.create_task(replay.run())
    jbd = {"driver": "jbd", "poll_interval_s": 0.5}
    config = parse(
        {
            "mqtt": mqtt_settings(mosquitto),
            "queue": {"path": str(tmp_path / "queue.sqlite3")},
            "ble": {"operation_timeout_s": 1.0, "backoff_initial_s": 0.05, "backoff_max_s": 0.5},
            "devices": [
                {"id": "small", "address": "A4:C1:37:00:00:11", **jbd},
                {"id": "big", "address": "A4:C1:37:00:00:12", **jbd},
                {"id": "cabin-a", "address": "A4:C1:37:00:00:13", **jbd},
                {"id": "cabin-b", "address": "A4:C1:37:00:00:14", **jbd},  # no such pack: silent
            ],
            "vedirect": [{"id": "bmv", "port": replay.path, "publish_interval_s": 0.5}],
            "banks": [
                {"id": "house", "packs": ["small", "big"], "interval_s": 1},
                {"id": "cabin", "packs": ["cabin-a", "cabin-b"], "meter": "bmv", "interval_s": 1},
            ],
            "health_interval_s": 5,
        }
    )
    subscriber = Subscriber(mosquitto)
    sent: list[Reading] = []
    try:
        async with collector_running(config, sent, await sim_backend(world, config)):
            await wait_until(
                lambda: (
                    sum(s["packs_fresh"] == 2 for s in subscriber.states("house")) >= 3
                    and sum(s["packs_fresh"] == 1 and s["meter_fresh"] for s in subscriber.states("cabin")) >= 3
                ),
                timeout=60,
            )
            await asyncio.sleep(2.5)  # the discovery settle (mqtt.publisher.SETTLE_S) lets the last ones out
    finally:
        subscriber.close()
        replaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replaying
        replay.close()

    house = [s for s in subscriber.states("house") if s["packs_fresh"] == 2]
    assert all(s["kind"] == "bank" and s["packs_total"] == 2 and s["partial"] is False for s in house)
    # 50 Ah of 100 and 252 Ah of 280: 79.47 %, where a plain mean of the packs says 70 %
    assert all(s["soc"] == pytest.approx(302 / 380 * 100) for s in house), [s["soc"] for s in house]
    assert all(s["capacity_nominal"] == pytest.approx(380) for s in house)
    checked = 0
    for index, reading in enumerate(sent):
        if reading.device_id != "house" or reading.values["packs_fresh"] != 2:
            continue
        small, big = latest_before(sent, index, "small"), latest_before(sent, index, "big")
        assert small is not None and big is not None
        assert reading.values["power"] == pytest.approx(small.values["power"] + big.values["power"])
        assert reading.values["current"] == pytest.approx(small.values["current"] + big.values["current"])
        checked += 1
    assert checked >= 3

    cabin = [s for s in subscriber.states("cabin") if s["meter_fresh"]]
    assert all((s["packs_fresh"], s["packs_total"], s["partial"]) == (1, 2, True) for s in cabin)
    for index, reading in enumerate(sent):
        if reading.device_id != "cabin" or not reading.values["meter_fresh"]:
            continue
        meter = latest_before(sent, index, "bmv")
        assert meter is not None
        for key in ("soc", "power", "current", "voltage"):
            assert reading.values[key] == meter.values[key], key
        assert reading.values["capacity_nominal"] == pytest.approx(200)  # the one pack counted

    with subscriber.lock:
        configs = {t: p for t, p, _ in subscriber.messages if t.startswith("homeassistant/") and p}
    announced = {t.split("/")[3] for t in configs if t.split("/")[2] == "sunbox_house"}
    assert announced == entity_keys(house[-1]) and {"soc", "power", "partial", "packs_fresh"} <= announced
    soc_config = json.loads(configs["homeassistant/sensor/sunbox_house/soc/config"])
    assert soc_config["device_class"] == "battery" and soc_config["device"]["model"] == "Sunbox bank"
