"""Connection manager against bumble simulators through the production bleak code path.

The simulators drop the link, stop answering, answer garbage or refuse the password;
the collector recovers, counts it and publishes health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from bumble.keys import JsonKeyStore

from sunbox.config import parse
from sunbox.model import Reading
from sunbox.service import BleBackend, Collector
from sunbox.sim.peripherals import JbdSimulator, LiTimeSimulator, SimWorld

FAST_BLE = {
    "operation_timeout_s": 1.0,
    "connect_timeout_s": 5.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "device_wait_s": 5.0,
    "power_cycle_after": 3,
    "power_cycle_min_interval_s": 0,
}


def make_config(sections: dict[str, Any] | None = None, **device_overrides: Any) -> Any:
    """A JBD and a LiTime on the simulators; ``sections`` adds top-level configuration."""
    jbd = {
        "id": "battery",
        "driver": "jbd",
        "address": "A4:C1:37:00:00:01",
        "password": "123456",
        "poll_interval_s": 0.5,
        "max_poll_errors": 2,
    }
    jbd.update(device_overrides)
    return parse(
        {
            "mqtt": {"username": "u", "password": "p"},
            "ble": FAST_BLE,
            "devices": [
                jbd,
                {"id": "mppt", "driver": "litime", "address": "C8:47:80:00:00:02", "poll_interval_s": 0.5},
            ],
            "health_interval_s": 1,
        }
        | (sections or {})
    )


class Recorder:
    def __init__(self) -> None:
        self.items: list[Reading] = []
        self.event = asyncio.Event()

    def __call__(self, reading: Reading) -> None:
        self.items.append(reading)
        self.event.set()

    def readings(self, device: str) -> list[Reading]:
        return [r for r in self.items if r.device_id == device and r.kind != "health"]

    def health(self, device: str) -> list[Reading]:
        return [r for r in self.items if r.device_id == device and r.kind == "health"]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.event.clear()
                await self.event.wait()


@contextlib.asynccontextmanager
async def running(
    world: SimWorld, config: Any, cycles: list[int] | None = None, recorder: Recorder | None = None
) -> AsyncIterator[tuple[Collector, Recorder]]:
    central = await world.central()

    async def power_cycle() -> None:
        if cycles is not None:
            cycles.append(1)
        await central.power_cycle()

    recorder = recorder or Recorder()
    collector = Collector(
        config, BleBackend(central.client_backend(), central.scanner_backend(), power_cycle), recorder
    )
    task = asyncio.create_task(collector.run())
    try:
        yield collector, recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reads_both_devices(world: SimWorld) -> None:
    async with running(world, make_config()) as (collector, rec):
        await rec.wait(lambda: len(rec.readings("battery")) >= 2 and len(rec.readings("mppt")) >= 2)
        battery = rec.readings("battery")[-1]
        assert battery.kind == "battery"
        assert battery.values["model"] == "JBD-SP04S034-L4S-200A-B-U"
        assert 12 < battery.values["voltage"] < 15
        assert len(battery.values["cell_voltages"]) == 4
        assert battery.values["temperatures"] == [26.8, 27.6, 27.0]
        mppt = rec.readings("mppt")[-1]
        assert mppt.kind == "charger"
        assert mppt.values["pv_voltage"] == 80.1
        assert mppt.values["model"] == "LT-MPPT-4860-SIM"
        # one persistent link each: polls keep coming with no reconnect
        assert all(link.health.reconnects == 0 for link in collector.links)
        assert all(link.health.connected for link in collector.links)


async def test_link_dropped_by_device_recovers(world: SimWorld) -> None:
    jbd_sim = world.peripherals[0]
    async with running(world, make_config()) as (collector, rec):
        await rec.wait(lambda: len(rec.readings("battery")) >= 1)
        await jbd_sim.drop_links()
        await rec.wait(lambda: collector.links[0].health.reconnects >= 1)
        before = len(rec.readings("battery"))
        await rec.wait(lambda: len(rec.readings("battery")) > before + 1)
        assert any(not h.values["connected"] for h in rec.health("battery"))
        assert rec.health("battery")[-1].values["reconnects"] >= 1


async def test_silent_device_is_dropped_and_reconnected(world: SimWorld) -> None:
    jbd_sim = world.peripherals[0]
    async with running(world, make_config()) as (collector, rec):
        await rec.wait(lambda: len(rec.readings("battery")) >= 1)
        jbd_sim.silent = True
        link = collector.links[0]
        await rec.wait(lambda: link.health.errors_total >= 1 and not link.health.connected)
        assert "LinkTimeout" in (link.health.last_error or "")
        jbd_sim.silent = False
        before = len(rec.readings("battery"))
        await rec.wait(lambda: len(rec.readings("battery")) > before)
        assert link.health.reconnects >= 1


async def test_garbage_is_counted_never_published(world: SimWorld) -> None:
    jbd_sim = world.peripherals[0]
    async with running(world, make_config()) as (collector, rec):
        await rec.wait(lambda: len(rec.readings("battery")) >= 1)
        good = len(rec.readings("battery"))
        jbd_sim.corrupt = 1
        link = collector.links[0]
        await rec.wait(lambda: link.health.errors_total >= 1)
        await rec.wait(lambda: len(rec.readings("battery")) > good + 1)
        # corrupted answers were skipped: every published reading is sane
        for reading in rec.readings("battery"):
            assert 12 < reading.values["voltage"] < 15
        jbd_sim.garbage = True
        await rec.wait(lambda: link.health.errors_total >= 3)
        published = len(rec.readings("battery"))
        await asyncio.sleep(1.0)
        assert len(rec.readings("battery")) == published
        jbd_sim.garbage = False
        await rec.wait(lambda: len(rec.readings("battery")) > published)


async def test_a_device_not_seen_gets_the_busy_hint_once(world: SimWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sunbox.ble.link")
    async with running(world, make_config(address="A4:C1:37:0F:0F:0F")) as (collector, rec):
        link = collector.links[0]
        await rec.wait(lambda: link.health.errors_total >= 4, timeout=60)
    hints = [r for r in caplog.records if "close the phone app" in r.getMessage()]
    assert len(hints) == 1 and "A4:C1:37:0F:0F:0F" in hints[0].getMessage()


@contextlib.asynccontextmanager
async def resting_battery(
    floor_s: float, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[SimWorld, Collector, Recorder]]:
    """A collector whose battery (the JBD simulator, not yet advertising) failed twice and
    rests in a backoff of 3-6 s then 6-12 s; the LiTime streams meanwhile."""
    caplog.set_level(logging.INFO, logger="sunbox.ble.link")
    sim = SimWorld()
    sim.add(JbdSimulator(sim.link, password="123456"))
    await sim.add(LiTimeSimulator(sim.link)).start()
    ble = FAST_BLE | {
        "backoff_initial_s": 6.0,
        "backoff_max_s": 60.0,
        "device_wait_s": 0.3,
        "advert_retry_floor_s": floor_s,
    }
    async with running(sim, make_config({"ble": ble})) as (collector, rec):
        link = collector.links[0]
        await rec.wait(lambda: link.health.errors_total >= 2, timeout=15)
        assert "LinkTimeout" in (link.health.last_error or "")
        yield sim, collector, rec


async def test_a_device_back_in_reach_is_connected_when_heard_not_after_its_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with resting_battery(0.2, caplog) as (sim, _collector, rec):
        resting_since = asyncio.get_running_loop().time()
        await sim.peripherals[0].start()
        await rec.wait(lambda: bool(rec.readings("battery")), timeout=10)
        took = asyncio.get_running_loop().time() - resting_since
    # the backoff it rested in was at least 6 s
    assert took < 3.5, f"connected {took:.1f} s after it advertised again"
    assert any("heard again" in r.getMessage() for r in caplog.records)


async def test_an_adapter_recovery_ends_every_links_backoff(caplog: pytest.LogCaptureFixture) -> None:
    async with resting_battery(60.0, caplog) as (sim, collector, rec):
        await sim.peripherals[0].start()
        await asyncio.sleep(0.5)  # heard, but the floor (60 s) keeps it resting
        assert not rec.readings("battery")
        resting_since = asyncio.get_running_loop().time()
        assert await collector.supervisor.recover() == "dbus"
        await rec.wait(lambda: bool(rec.readings("battery")), timeout=10)
        took = asyncio.get_running_loop().time() - resting_since
    assert took < 3.5, f"connected {took:.1f} s after the adapter recovered"
    assert any("the adapter was recovered: retrying now" in r.getMessage() for r in caplog.records)


async def test_wrong_password_is_reported_and_escalates(world: SimWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sunbox.ble.link")
    cycles: list[int] = []
    async with running(world, make_config(password="000000"), cycles) as (collector, rec):
        link = collector.links[0]
        await rec.wait(lambda: link.health.errors_total >= 3 and bool(cycles), timeout=30)
        assert "AuthenticationError" in (link.health.last_error or "")
        assert rec.readings("battery") == []
        assert collector.supervisor.power_cycles >= 1
        # the other device keeps working
        assert len(rec.readings("mppt")) >= 1
    assert not [r for r in caplog.records if "close the phone app" in r.getMessage()], "a password is not a busy device"


async def test_passkey_pairing_path() -> None:
    sim = SimWorld()
    sim.add(JbdSimulator(sim.link, passkey=123456))
    sim.add(LiTimeSimulator(sim.link))
    await sim.start()
    config = make_config(password=None, passkey=123456)
    central = await sim.central()
    central.passkeys["A4:C1:37:00:00:01"] = 123456
    rec = Recorder()
    collector = Collector(config, BleBackend(central.client_backend(), central.scanner_backend(), None), rec)
    task = asyncio.create_task(collector.run())
    try:
        await rec.wait(lambda: len(rec.readings("battery")) >= 1)
        assert rec.readings("battery")[0].values["soc"] == 96
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_simulators_bond_outlives_it_in_its_keystore_file(tmp_path: Path) -> None:
    """`sunbox sim --keystore`: the bond made by pairing is in the file, where a restarted
    simulator (the virtual Pi after a power cut) finds it again."""
    keys_file = tmp_path / "bonds.json"
    sim = SimWorld(keystore=keys_file)
    sim.add(JbdSimulator(sim.link, passkey=123456))
    sim.add(LiTimeSimulator(sim.link))
    await sim.start()
    central = await sim.central()
    central.passkeys["A4:C1:37:00:00:01"] = 123456
    rec = Recorder()
    config = make_config(password=None, passkey=123456)
    collector = Collector(config, BleBackend(central.client_backend(), central.scanner_backend(), None), rec)
    task = asyncio.create_task(collector.run())
    try:
        await rec.wait(lambda: len(rec.readings("battery")) >= 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    restarted = JsonKeyStore("A4:C1:37:00:00:01", str(keys_file))
    bonds = await restarted.get_all()
    assert [address.split("/")[0] for address, _ in bonds] == [sim.central_address]
    assert bonds[0][1].ltk is not None, "the long-term key is what a reconnect encrypts with"
    assert await JsonKeyStore("C8:47:80:00:00:02", str(keys_file)).get_all() == [], "the LiTime never paired"


async def test_without_pairing_the_echo_is_detected() -> None:
    sim = SimWorld()
    sim.add(JbdSimulator(sim.link, passkey=123456))
    sim.add(LiTimeSimulator(sim.link))
    await sim.start()
    async with running(sim, make_config(password=None)) as (collector, rec):
        link = collector.links[0]
        await rec.wait(lambda: link.health.errors_total >= 1)
        assert "PairingRequired" in (link.health.last_error or "")
        assert rec.readings("battery") == []


@pytest.mark.parametrize("load_on", [True, False])
async def test_litime_load_control_only_when_enabled(world: SimWorld, load_on: bool) -> None:
    from sunbox.drivers.litime import ControlDisabled

    async with running(world, make_config()) as (collector, rec):
        await rec.wait(lambda: len(rec.readings("mppt")) >= 1)
        mppt_link = collector.links[1]
        assert mppt_link._link is not None
        with pytest.raises(ControlDisabled):
            await mppt_link.driver.set_load(mppt_link._link, load_on)  # type: ignore[attr-defined]
        sim = world.peripherals[1]
        assert isinstance(sim, LiTimeSimulator)
        mppt_link.driver.config = mppt_link.driver.config.model_copy(update={"control": True})
        await mppt_link.driver.set_load(mppt_link._link, load_on)  # type: ignore[attr-defined]
        assert sim.load_on is load_on
