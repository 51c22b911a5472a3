"""Venus OS MQTT end to end: a GX stand-in on the real Mosquitto -> the collector's Venus
source -> readings; the stand-in stops publishing when the keep-alives stop."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from sunbox.config import parse
from sunbox.model import Reading
from sunbox.protocols import venus
from sunbox.protocols.errors import FrameError
from sunbox.service import BleBackend, Collector
from sunbox.sim.venus_gx import VenusStandIn
from sunbox_stack.servers import Mosquitto

from .test_mqtt_e2e import wait_until

pytestmark = pytest.mark.stack


def test_topic_mapping() -> None:
    assert venus.decode("N/abc/solarcharger/279/Pv/V", b'{"value": 36.83}') == (
        "solarcharger",
        "279",
        "pv_voltage",
        36.83,
    )
    assert venus.decode("N/abc/battery/512/ConsumedAmphours", b'{"value": -12.5}')[3] == 12.5
    assert venus.decode("N/abc/solarcharger/279/History/Daily/0/Yield", b'{"value": 1.25}')[3] == 1250.0
    assert venus.decode("N/abc/battery/512/Soc", b'{"value": null}')[3] is None
    assert venus.decode("N/abc/battery/512/Soc", b"") == ("battery", "512", "", None)
    assert venus.decode("N/abc/grid/30/Ac/Power", b'{"value": 1}') is None
    assert venus.decode("R/abc/keepalive", b"") is None
    for bad in (b"{", b"[1]", b'{"v": 1}', b'{"value": "x"}', b'{"value": true}'):
        with pytest.raises(FrameError):
            venus.decode("N/abc/battery/512/Soc", bad)
    with pytest.raises(FrameError, match="integer"):
        venus.decode("N/abc/solarcharger/279/State", b'{"value": 3.5}')


def gx_config(mosquitto: Mosquitto) -> Any:
    """A collector reading one GX (the stand-in) on ``mosquitto``: keep-alive 0.5 s, publish 0.3 s."""
    return parse(
        {
            "mqtt": {"username": "u", "password": "p"},
            "venus": [
                {
                    "id": "gx",
                    "host": "127.0.0.1",
                    "port": mosquitto.port,
                    "username": mosquitto.username,
                    "password": mosquitto.password,
                    "keepalive_interval_s": 0.5,
                    "publish_interval_s": 0.3,
                }
            ],
        }
    )


async def test_gx_readings_and_keepalive(mosquitto: Mosquitto, tmp_path: Path) -> None:
    gx = VenusStandIn("127.0.0.1", mosquitto.port, mosquitto.username, mosquitto.password, timeout_s=2.0)
    gx.start()
    readings: list[Reading] = []
    config = gx_config(mosquitto)
    collector = Collector(config, BleBackend(), readings.append)
    task = asyncio.create_task(collector.run())
    try:
        await wait_until(
            lambda: {r.device_id for r in readings} >= {"gx-solarcharger-279", "gx-battery-512", "gx-vebus-276"}
        )
        await asyncio.sleep(1.5)  # a few keep-alives with suppress-republish
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        source = collector.venus_sources[0]
        assert source.portal_id == gx.portal_id  # found from N/+/system/0/Serial
        charger = [r for r in readings if r.device_id == "gx-solarcharger-279"][-1]
        assert charger.kind == "charger"
        assert charger.values["pv_voltage"] == 36.83 and charger.values["charge_state"] == "bulk"
        assert charger.values["yield_total"] == 812400.0 and charger.values["charge_power"] > 0
        battery = [r for r in readings if r.device_id == "gx-battery-512"][-1]
        assert battery.kind == "battery" and battery.values["soc"] == 87.5 and battery.values["time_to_go"] is None
        inverter = [r for r in readings if r.device_id == "gx-vebus-276"][-1]
        assert inverter.kind == "inverter" and inverter.values["device_state"] == "inverting"
        # the first keep-alive asks for everything, the later ones suppress the republish
        assert gx.keepalives[0] == b"" and any(b"suppress-republish" in k for k in gx.keepalives[1:])
        assert gx.full_republishes == 1
        # no keep-alives any more: the GX stops publishing after its timeout
        await asyncio.sleep(gx.timeout_s + 0.5)
        count = gx.published
        await asyncio.sleep(1.0)
        assert gx.published == count and not gx.alive()
    finally:
        gx.stop()
