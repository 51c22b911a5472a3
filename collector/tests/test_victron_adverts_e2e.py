"""Instant Readout end to end: bumble advertisers sending encrypted adverts -> the shared
scanner (production bleak path on the bumble backend) -> the collector -> the real Mosquitto.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sunbox.config import parse
from sunbox.model import Reading
from sunbox.sim.peripherals import SimWorld, VictronAdvertiser
from sunbox_stack.servers import Mosquitto

from .test_mqtt_e2e import Subscriber, collector_running, mqtt_settings, sim_backend, wait_until

pytestmark = pytest.mark.stack
VECTORS = json.loads((Path(__file__).parent / "fixtures" / "devices.json").read_text())["victron_advert"]
SOLAR, SHUNT = VECTORS[0], VECTORS[1]


def advertiser(world: SimWorld, address: str, vector: dict[str, Any]) -> VictronAdvertiser:
    peripheral = VictronAdvertiser(
        world.link,
        address,
        bytes.fromhex(vector["key"]),
        bytes.fromhex(vector["mfr_data_after_company_id"]),
        bytes.fromhex(vector["decrypted"]),
        interval=0.1,
    )
    world.add(peripheral)
    return peripheral


async def test_adverts_become_readings(
    world: SimWorld, mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    advertiser(world, "D0:00:00:00:00:01", SOLAR)
    advertiser(world, "D0:00:00:00:00:02", SHUNT)
    stale = advertiser(world, "D0:00:00:00:00:03", SOLAR)
    await world.start()
    config = parse(
        {
            "mqtt": mqtt_settings(mosquitto),
            "queue": {"path": str(tmp_path / "queue.sqlite3")},
            "ble": {"scanning_mode": "passive"},
            "victron_adverts": [
                {"id": "solar", "address": "D0:00:00:00:00:01", "key": SOLAR["key"], "interval_s": 0.5},
                {"id": "shunt", "address": "D0:00:00:00:00:02", "key": SHUNT["key"], "interval_s": 0.5},
                {"id": "rekeyed", "address": "D0:00:00:00:00:03", "key": "00" * 16, "interval_s": 0},
            ],
            "health_interval_s": 1,
        }
    )
    subscriber = Subscriber(mosquitto)
    sent: list[Reading] = []
    caplog.set_level(logging.ERROR, logger="sunbox.ble.victron_adverts")
    try:
        async with collector_running(config, sent, await sim_backend(world)) as (_, collector):
            await wait_until(lambda: len(subscriber.states("solar")) >= 3 and len(subscriber.states("shunt")) >= 3)
            await wait_until(lambda: stale.sent >= 10 and "sunbox/rekeyed/health" in subscriber.topics())
    finally:
        subscriber.close()
    solar = subscriber.states("solar")[-1]
    assert solar["kind"] == "charger" and solar["battery_voltage"] == 13.88 and solar["pv_power"] == 19.0
    assert solar["charge_state"] == "absorption" and solar["model"] == "BlueSolar Charger MPPT 75/15"
    shunt = subscriber.states("shunt")[-1]
    assert shunt["kind"] == "battery" and shunt["soc"] == 50.0 and shunt["consumed_ah"] == 50.0
    # rate-limited: adverts arrive every 0.1 s, readings at most every 0.5 s
    source = next(s for s in collector.advert_sources if s.device.id == "solar")
    times = [r.time_ms for r in sent if r.device_id == "solar" and r.kind == "charger"]
    assert source.adverts > len(times) and all(b - a >= 450 for a, b in itertools.pairwise(times))
    # the wrong key: nothing published, counted on every advert, logged once
    rekeyed = next(s for s in collector.advert_sources if s.device.id == "rekeyed")
    assert not [r for r in sent if r.device_id == "rekeyed" and r.kind != "health"]
    assert rekeyed.key_errors >= 5 and "does not match" in (rekeyed.health.last_error or "")
    assert len([r for r in caplog.records if "rekeyed" in r.getMessage()]) == 1
