"""``sunbox run``: the collector service wiring (config -> scanner, links, publisher)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sunbox import systemd
from sunbox.aio import within
from sunbox.banks import BankAggregator
from sunbox.ble.adapter import AdapterSupervisor, PowerCycle, bluez_power_cycle, helper_rungs
from sunbox.ble.link import DeviceLink, Publish
from sunbox.ble.scanner import Scanner
from sunbox.ble.victron_adverts import VictronAdvertSource
from sunbox.config import Config
from sunbox.drivers import DRIVERS
from sunbox.model import Health, Reading
from sunbox.serial.vedirect_source import VeDirectSource
from sunbox.sinks.csv_sink import CsvSink
from sunbox.supervise import supervised
from sunbox.venus.source import VenusSource

if TYPE_CHECKING:
    from sunbox.mqtt.queue import DiskQueue

LOG = logging.getLogger(__name__)


@dataclass
class BleBackend:
    """Which bleak backend classes to use (None = the platform's, i.e. BlueZ)."""

    client: type[Any] | None = None
    scanner: type[Any] | None = None
    power_cycle: PowerCycle | None = None
    closers: list[Any] = field(default_factory=list)


async def open_backend(config: Config) -> BleBackend:
    """BlueZ on the appliance; a bumble host over a transport for ``backend: bumble``."""
    if config.ble.backend == "bluez":
        backend = BleBackend(power_cycle=bluez_power_cycle(config.ble.adapter))
        passkeys = {d.address: d.pairing_passkey for d in config.devices if d.pairing_passkey is not None}
        if passkeys:
            backend.closers.extend(await _pairing_agent(passkeys))
        return backend
    from sunbox.sim.bleak_backend import BumbleCentral

    central = await BumbleCentral.open(config.ble.bumble_transport)
    for device in config.devices:
        if device.pairing_passkey is not None:
            central.passkeys[device.address] = device.pairing_passkey
    return BleBackend(central.client_backend(), central.scanner_backend(), central.power_cycle, [central])


async def close_all(closers: list[Any], timeout: float = 5.0) -> None:
    """Close each of a backend's closers, each within ``timeout`` s: a stop must not hang
    on a Bluetooth controller or bus that no longer answers (logged, then carried on)."""
    for closer in closers:
        try:
            await within(closer.close(), timeout)
        except Exception as exc:  # noqa: BLE001 - on the way out, nothing may stop the rest
            LOG.warning("closing %s: %s", type(closer).__name__, exc or type(exc).__name__)


class _BusCloser:
    def __init__(self, bus: Any) -> None:
        self.bus = bus

    async def close(self) -> None:
        self.bus.disconnect()


async def _pairing_agent(passkeys: dict[str, int]) -> list[Any]:
    """Register the BlueZ pairing agent; on failure log it (pairing will then fail)."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import DBusError

    from sunbox.ble import agent

    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        await agent.register(bus, passkeys)
    except (DBusError, OSError) as exc:
        LOG.error("cannot register the BlueZ pairing agent (%s); passkey pairing will fail", exc)
        return []
    return [_BusCloser(bus)]


class _Source(Protocol):
    """What the collector supervises: a device's task and its health."""

    health: Health

    async def run(self) -> None: ...

    def publish_health(self) -> None: ...


def _reporter(source: _Source) -> Callable[[str], None]:
    """A crash of ``source``'s task is counted in its health and published at once."""

    def report(message: str) -> None:
        source.health.record_error(message)
        source.publish_health()

    return report


class Collector:
    """Owns the scanner and one :class:`DeviceLink` per configured device.

    Every device's task runs under :func:`~sunbox.supervise.supervised`: a task that
    crashes is counted in that device's health and started again, and the others keep
    their links.
    """

    def __init__(self, config: Config, backend: BleBackend, publish: Publish, bank_loop: bool = True) -> None:
        self.config = config
        self.backend = backend
        #: the configured banks, fed every reading the sources publish (sunbox.banks)
        self.banks = BankAggregator(config.banks, publish)
        self.bank_loop = bank_loop and bool(config.banks)

        out = publish

        def publish_and_observe(reading: Reading) -> None:
            out(reading)
            self.banks.observe(reading)

        publish = publish_and_observe if config.banks else out
        self.publish = publish
        self.scanner = Scanner(config.ble.scanning_mode, config.ble.adapter, backend.scanner)
        self.supervisor = AdapterSupervisor(
            config.ble.adapter,
            backend.power_cycle,
            config.ble.power_cycle_after,
            config.ble.power_cycle_min_interval_s,
            helper_rungs(config.ble.adapter, config.ble.recovery_socket) if config.ble.backend == "bluez" else None,
            power_cycle_after_unheard=config.ble.power_cycle_after_unheard,
        )
        self.links = [
            DeviceLink(
                device,
                DRIVERS[device.driver](device),
                config.ble,
                self.scanner,
                self.supervisor,
                publish,
                backend.client,
            )
            for device in config.devices
        ]
        self.serial_sources = [VeDirectSource(device, publish) for device in config.vedirect]
        self.venus_sources = [VenusSource(device, publish) for device in config.venus]
        self.advert_sources = [VictronAdvertSource(device, publish) for device in config.victron_adverts]
        for source in self.advert_sources:
            self.scanner.listeners.append(source.on_advert)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            for link in self.links:
                link.publish_health()
            for source in self.serial_sources:
                source.publish_health()
            for advert_source in self.advert_sources:
                advert_source.publish_health()
            for venus_source in self.venus_sources:
                venus_source.publish_health()

    async def _bank_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.banks.tick()

    async def run(self) -> None:
        """Run until cancelled; every task is awaited on the way out."""
        uses_ble = bool(self.links or self.advert_sources)
        if uses_ble:  # no Bluetooth needed for a serial-only setup
            await self.scanner.start()
        try:
            async with asyncio.TaskGroup() as group:
                sources: list[tuple[str, _Source]] = [(f"link-{link.device.id}", link) for link in self.links]
                sources += [(f"vedirect-{source.device.id}", source) for source in self.serial_sources]
                sources += [(f"venus-{gx.config.id}", gx) for gx in self.venus_sources]
                for name, source in sources:
                    group.create_task(supervised(name, source.run, _reporter(source)), name=name)
                group.create_task(supervised("health", self._health_loop, lambda _: None), name="health")
                if self.bank_loop:
                    group.create_task(supervised("banks", self._bank_loop, lambda _: None), name="banks")
        finally:
            if uses_ble:
                with contextlib.suppress(Exception):
                    await within(self.scanner.stop(), 5)


def open_queue(config: Config) -> DiskQueue:
    """The collector's queue as configured (``queue``, ``mqtt.hold_until_stored``)."""
    from sunbox.mqtt.queue import DiskQueue

    q = config.queue
    return DiskQueue(
        q.path,
        q.max_age_s,
        q.max_messages,
        durable=config.mqtt.hold_until_stored,
        sync_after_s=q.sync_after_s,
        fresh_path=q.fresh_path,
    )


async def run_service(config: Config) -> None:
    """The ``sunbox run`` main coroutine: stops cleanly on SIGTERM/SIGINT."""
    from sunbox.mqtt.publisher import MqttPublisher

    queue = open_queue(config)
    publisher = MqttPublisher(config.mqtt, queue, configured=is_configured(config))
    publisher.start()
    backend = await open_backend(config) if config.devices or config.victron_adverts else BleBackend()
    sink = CsvSink(config.csv.directory, config.csv.keep_days) if config.csv.enabled else None

    def publish(reading: Reading) -> None:
        publisher.publish_reading(reading)
        if sink is not None:
            sink.write(reading)

    collector = Collector(config, backend, publish)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    systemd.notify("READY=1")
    pings = asyncio.create_task(systemd.watchdog_pings(publisher.healthy))
    try:
        await collector.run()
    except asyncio.CancelledError:
        LOG.info("stopping")
    finally:
        systemd.notify("STOPPING=1")
        pings.cancel()
        await close_all(backend.closers)
        await asyncio.to_thread(publisher.stop)
        queue.close()
        if sink is not None:
            sink.close()


def is_configured(config: Config) -> Callable[[str], bool]:
    """Whether a device id belongs to this configuration: a configured id or bank, or one
    of a Venus OS source's devices (``<id>-<service>-<instance>``)."""
    ids = frozenset(expected_ids(config)) | {b.id for b in config.banks}
    venus = tuple(f"{d.id}-" for d in config.venus)

    def configured(device_id: str) -> bool:
        return device_id in ids or device_id.startswith(venus)

    return configured


def expected_ids(config: Config) -> list[str]:
    """Every configured device id (a Venus source counts as read once any of its devices is)."""
    ids = [d.id for d in config.devices] + [d.id for d in config.vedirect]
    return ids + [d.id for d in config.victron_adverts] + [d.id for d in config.venus]


@dataclass(frozen=True, slots=True)
class OnceResult:
    """What ``sunbox run --once`` did: devices not read, readings delivered and still queued."""

    missing: list[str]
    delivered: int
    queued: int
    broker_state: str


async def run_once(config: Config, timeout: float) -> OnceResult:
    """``sunbox run --once``: read every configured device once, publish, stop.

    Returns the ids of the devices that gave no reading within ``timeout`` s (empty when
    all were read), how many messages the broker took, and how many it did not take
    within the time left: those stay in the disk queue for the next run, as in the
    service.
    """
    from sunbox.mqtt.publisher import MqttPublisher

    queue = open_queue(config)
    publisher = MqttPublisher(config.mqtt, queue, configured=is_configured(config))
    publisher.start()
    backend = await open_backend(config) if config.devices or config.victron_adverts else BleBackend()
    sink = CsvSink(config.csv.directory, config.csv.keep_days) if config.csv.enabled else None
    wanted = set(expected_ids(config))
    venus_ids = {d.id for d in config.venus}
    read: set[str] = set()
    done = asyncio.Event()

    def publish(reading: Reading) -> None:
        publisher.publish_reading(reading)
        if sink is not None:
            sink.write(reading)
        if reading.kind == "health":
            return
        device = reading.device_id
        owner = next((v for v in venus_ids if device.startswith(v + "-")), device)
        read.add(owner)
        if wanted <= read:
            done.set()

    collector = Collector(config, backend, publish, bank_loop=False)
    task = asyncio.create_task(collector.run())
    try:
        with contextlib.suppress(TimeoutError):
            await within(done.wait(), timeout)
    finally:
        task.cancel()
        finished, _ = await asyncio.wait({task}, timeout=30)
        if not finished:  # a bug kept a link from stopping: report it, do not hang the schedule
            LOG.error("a device task did not stop within 30 s of the end of --once")
        else:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_all(backend.closers)
        collector.banks.tick()  # each bank once, from what its members gave
        await asyncio.to_thread(publisher.flush, 10.0)
        await asyncio.to_thread(publisher.stop)
        queued = len(queue)
        queue.close()
        if sink is not None:
            sink.close()
    return OnceResult(sorted(wanted - read), publisher.published, queued, publisher.broker_state)
