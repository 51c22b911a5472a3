"""One device's crash must not stop the others.

:func:`sunbox.supervise.supervised` on its own, then the collector with two simulated BLE
devices (bumble, production bleak path) and a VE.Direct port (a pseudo-terminal replaying
a real BMV capture) whose readings the publish path refuses twice: the port's task
crashes, is counted and started again, and the BLE links never reconnect. Last, a Venus OS
source on the real Mosquitto crashes the same way and connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from sunbox.ble.adapter import Backoff
from sunbox.model import Reading
from sunbox.service import BleBackend, Collector
from sunbox.sim.peripherals import SimWorld
from sunbox.sim.venus_gx import VenusStandIn
from sunbox.supervise import supervised
from sunbox_stack.servers import Mosquitto

from .test_links import Recorder, make_config, running
from .test_vedirect_e2e import replaying
from .test_venus_e2e import gx_config


async def test_a_crashing_task_is_started_again_and_its_sibling_keeps_running() -> None:
    starts = 0
    crashes: list[str] = []
    ticks = 0

    async def flaky() -> None:
        nonlocal starts
        starts += 1
        if starts <= 2:
            raise RuntimeError(f"bug number {starts}")
        if starts == 3:
            return  # a forever loop that ended: reported too
        await asyncio.sleep(3600)

    async def sibling() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(supervised("flaky", flaky, crashes.append, Backoff(0.01, 0.05)))
    other = asyncio.create_task(sibling())
    try:
        async with asyncio.timeout(10):
            while starts < 4:
                await asyncio.sleep(0.01)
        ticks_before = ticks
        await asyncio.sleep(0.1)
        assert ticks > ticks_before, "the sibling stopped"
        assert not task.done()
    finally:
        for t in (task, other):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    assert starts == 4
    assert crashes == [
        "crashed: RuntimeError: bug number 1",
        "crashed: RuntimeError: bug number 2",
        "ended unexpectedly",
    ]


async def test_cancellation_while_waiting_to_restart_is_prompt() -> None:
    crashed = asyncio.Event()

    async def broken() -> None:
        raise ValueError("always")

    task = asyncio.create_task(supervised("broken", broken, lambda _: crashed.set(), Backoff(3600, 3600)))
    await asyncio.wait_for(crashed.wait(), 5)
    started = time.monotonic()
    task.cancel()
    finished, _ = await asyncio.wait({task}, timeout=5)
    assert finished and task.cancelled()
    assert time.monotonic() - started < 1


async def test_a_failing_crash_report_does_not_stop_the_supervisor() -> None:
    starts = 0

    async def broken() -> None:
        nonlocal starts
        starts += 1
        raise ValueError("always")

    def report(_: str) -> None:
        raise OSError("the report's own path is broken")

    task = asyncio.create_task(supervised("broken", broken, report, Backoff(0.01, 0.01)))
    try:
        async with asyncio.timeout(5):
            while starts < 3:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RefusingRecorder(Recorder):
    """The publish path, failing with a bug on the first ``refuse`` readings of one device."""

    def __init__(self, device: str, refuse: int) -> None:
        super().__init__()
        self.device = device
        self.refuse = refuse

    def __call__(self, reading: Reading) -> None:
        if reading.device_id == self.device and reading.kind != "health" and self.refuse > 0:
            self.refuse -= 1
            raise RuntimeError("publish path bug")
        super().__call__(reading)


async def test_a_crashing_serial_source_leaves_the_ble_links_alone(world: SimWorld) -> None:
    async with replaying("vedirect_bvm702.dump") as replay:
        config = make_config({"vedirect": [{"id": "shunt", "port": replay.path, "publish_interval_s": 0}]})
        async with running(world, config, recorder=RefusingRecorder("shunt", refuse=2)) as (collector, rec):
            await rec.wait(lambda: len(rec.readings("battery")) >= 2 and len(rec.readings("mppt")) >= 2)
            # the shunt's task crashed twice (backoff 0.5-1 s, then 1-2 s) and reads again
            await rec.wait(lambda: len(rec.readings("shunt")) >= 3, timeout=30)
            polls = len(rec.readings("battery"))
            await rec.wait(lambda: len(rec.readings("battery")) >= polls + 3)
    shunt = collector.serial_sources[0]
    assert shunt.health.errors_total >= 2
    crashes = [h.values for h in rec.health("shunt") if str(h.values["last_error"]).startswith("crashed:")]
    assert crashes and crashes[0]["last_error"] == "crashed: RuntimeError: publish path bug"
    assert all(link.health.reconnects == 0 and link.health.errors_total == 0 for link in collector.links)
    assert all(r.values["soc"] is not None for r in rec.readings("shunt"))


async def test_a_failing_advert_listener_does_not_starve_the_others(world: SimWorld) -> None:
    seen: list[str] = []

    def broken(device: BLEDevice, advertisement: AdvertisementData) -> None:
        raise KeyError("listener bug")

    def recording(device: BLEDevice, advertisement: AdvertisementData) -> None:
        seen.append(device.address)

    async with running(world, make_config()) as (collector, rec):
        collector.scanner.listeners[:0] = [broken]
        collector.scanner.listeners.append(recording)
        await rec.wait(lambda: len(rec.readings("mppt")) >= 2)
        async with asyncio.timeout(10):
            while len(seen) < 2:
                await asyncio.sleep(0.05)
    assert collector.scanner.listener_errors >= len(seen) >= 2


@pytest.mark.stack
async def test_a_crashed_venus_source_connects_again_and_asks_for_everything(mosquitto: Mosquitto) -> None:
    gx = VenusStandIn("127.0.0.1", mosquitto.port, mosquitto.username, mosquitto.password, timeout_s=5.0)
    gx.start()
    rec = RefusingRecorder("gx-battery-512", refuse=1)
    config = gx_config(mosquitto)
    collector = Collector(config, BleBackend(), rec)
    task = asyncio.create_task(collector.run())
    try:
        # the first battery reading crashes the source; paho is stopped, then started again
        await rec.wait(lambda: len(rec.readings("gx-battery-512")) >= 2, timeout=30)
        await rec.wait(lambda: len(rec.readings("gx-solarcharger-279")) >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gx.stop()
    source = collector.venus_sources[0]
    assert source.health.errors_total >= 1
    assert str(source.health.last_error).startswith("crashed: RuntimeError")
    # the new connection asked the GX for a full republish, as the first one did
    assert gx.full_republishes == 2
    assert rec.readings("gx-battery-512")[-1].values["soc"] == 87.5
