"""VE.Direct end to end: a pseudo-terminal replaying real captures -> the collector's serial
source (pyserial) -> the real Mosquitto -> a subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sunbox.config import parse
from sunbox.model import Reading
from sunbox.service import BleBackend, Collector
from sunbox.sim.vedirect_pty import VeDirectReplay
from sunbox_stack.servers import Mosquitto, free_port

from .test_mqtt_e2e import Subscriber, collector_running, mqtt_settings, wait_until

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).parent / "fixtures"


@contextlib.asynccontextmanager
async def replaying(name: str, corrupt_every: int | None = None) -> AsyncIterator[VeDirectReplay]:
    replay = VeDirectReplay((FIXTURES / name).read_bytes(), interval=0.02, corrupt_every=corrupt_every)
    task = asyncio.create_task(replay.run())
    try:
        yield replay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        replay.close()


def config_for(server: Mosquitto, tmp_path: Path, ports: dict[str, str]) -> Any:
    return parse(
        {
            "mqtt": mqtt_settings(server),
            "queue": {"path": str(tmp_path / "queue.sqlite3")},
            "vedirect": [{"id": d, "port": p, "publish_interval_s": 0} for d, p in ports.items()],
            "health_interval_s": 1,
        }
    )


async def test_vedirect_readings_reach_a_subscriber(mosquitto: Mosquitto, tmp_path: Path) -> None:
    subscriber = Subscriber(mosquitto)
    sent: list[Reading] = []
    async with (
        replaying("vedirect_bluesolar_1.23.dump", corrupt_every=5) as mppt,
        replaying("vedirect_bvm702.dump") as bmv,
    ):
        config = config_for(mosquitto, tmp_path, {"mppt": mppt.path, "shunt": bmv.path})
        try:
            async with collector_running(config, sent) as (_, collector):
                await wait_until(lambda: len(subscriber.states("mppt")) >= 10 and len(subscriber.states("shunt")) >= 5)
                await wait_until(lambda: "sunbox/shunt/health" in subscriber.topics())
        finally:
            subscriber.close()
    charger = subscriber.states("mppt")
    assert all(s["kind"] == "charger" and s["model"] == "BlueSolar Charger MPPT 75/15" for s in charger)
    # the capture's VPV runs from 16.25 V to 38.3 V; a BlueSolar on a 12 V bank
    assert all(16 <= s["pv_voltage"] < 40 and s["battery_voltage"] > 12 for s in charger)
    assert all(s["charge_state"] in ("bulk", "absorption", "float", "off") for s in charger)
    shunt = subscriber.states("shunt")
    # every battery reading is a merged BMV pair: main and history fields together
    assert all("soc" in s and "charged_energy" in s for s in shunt)
    assert all(11.5 < s["voltage"] < 13 and s["charged_energy"] == 85270.0 for s in shunt)
    source = next(s for s in collector.serial_sources if s.device.id == "mppt")
    assert source.parser.stats.bad_checksums >= 1, "the corrupted blocks were seen"
    assert source.health.errors_total >= source.parser.stats.bad_checksums
    # a corrupted block is never published: every published PV voltage is one the capture holds
    capture = (FIXTURES / "vedirect_bluesolar_1.23.dump").read_bytes()
    for reading in (r for r in sent if r.device_id == "mppt" and r.kind == "charger"):
        assert f"VPV\t{round(reading.values['pv_voltage'] * 1000)}\r\n".encode() in capture


async def test_a_vanished_port_is_reopened(tmp_path: Path) -> None:
    link = tmp_path / "ttyVE"
    readings: list[Reading] = []
    config = parse(
        {
            "mqtt": {"username": "u", "password": "p"},
            "vedirect": [{"id": "mppt", "port": str(link), "publish_interval_s": 0, "silence_timeout_s": 2}],
        }
    )
    collector = Collector(config, BleBackend(), readings.append)
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.sleep(1.5)  # no port yet: counted, retried
        source = collector.serial_sources[0]
        assert source.health.errors_total >= 1 and "cannot open" in (source.health.last_error or "")
        async with replaying("vedirect_bluesolar_1.23.dump") as replay:
            replay.link(link)
            await wait_until(lambda: any(r.kind == "charger" for r in readings), timeout=30)
        before = len(readings)
        async with replaying("vedirect_bluesolar_1.23.dump") as replay:  # the cable is plugged back in
            replay.link(link)
            await wait_until(lambda: len([r for r in readings[before:] if r.kind == "charger"]) >= 3, timeout=30)
        assert source.health.reconnects >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_run_once_exit_codes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``sunbox run --once``: 0 when every device was read, 1 naming the one that was not."""
    import json as json_mod
    import sys

    async with replaying("vedirect_bluesolar_1.23.dump") as mppt:

        async def once(ports: dict[str, str], broker_port: int | None = None) -> tuple[int, str]:
            config = config_for(mosquitto, tmp_path, ports).model_dump(mode="json")
            if broker_port is not None:
                config["mqtt"]["port"] = broker_port
            path = tmp_path / "sunbox.yaml"
            path.write_text(json_mod.dumps(config))  # JSON is YAML
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sunbox.cli",
                "run",
                "--once",
                "-c",
                str(path),
                "--timeout",
                "4",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            return process.returncode or 0, (out + err).decode()

        code, output = await once({"mppt": mppt.path})
        assert code == 0 and "delivered to the broker, 0 queued" in output, output
        code, output = await once({"mppt": mppt.path, "unplugged": str(tmp_path / "no-such-port")})
        assert code == 1 and "no reading from unplugged" in output, output
        # a wrong broker port: read, but not delivered; the log says why, once
        code, output = await once({"mppt": mppt.path}, broker_port=free_port())
        assert code == 1 and "not delivered (broker unreachable)" in output, output
        assert output.count(": unreachable; check mqtt.host and mqtt.port") == 1, output
