"""One persistent BLE link per device: connect, set up, poll forever, recover.

The design point is BlueZ issue #947 (a ``Disconnect()`` that never answers, after
which BlueZ believes a dead link is still up): a healthy link is never disconnected
by Sunbox. After a good read it stays open and is polled again every
``poll_interval_s``. Only a link that stops answering (timeout) or keeps returning
bad frames is dropped, with a disconnect bounded by ``disconnect_timeout_s``; then
stale BlueZ state is cleared (bleak-retry-connector ``close_stale_connections``) and
the link is re-established with exponential backoff and jitter. Connection setup is
serialised per adapter, and repeated failures escalate to an adapter power-cycle
(:class:`~sunbox.ble.adapter.AdapterSupervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from bleak import BleakClient
from bleak.exc import BleakCharacteristicNotFoundError, BleakError
from bleak_retry_connector import (
    BleakClientWithServiceCache,
    close_stale_connections,
    establish_connection,
    get_device,
)

from sunbox.aio import raise_if_cancelled, within
from sunbox.config import BleConfig, DeviceConfig
from sunbox.model import Health, Reading, now_ms
from sunbox.protocols.errors import FrameError

from .adapter import AdapterSupervisor, Backoff
from .device import AuthenticationError, DeviceProtocol
from .gatt import GattLink, LinkTimeout
from .scanner import Scanner
from .services_cache import forget_services

LOG = logging.getLogger(__name__)

Publish = Callable[[Reading], None]


#: After this many failed connects in a row, the log says what usually causes them.
BUSY_HINT_AFTER = 3
BUSY_HINT = (
    "%s: %s not connected after %d tries: the device is out of range, or busy. These devices "
    "accept one connection at a time: close the phone app (Xiaoxiang, LiTime, VictronConnect) "
    "and check the address with `sunbox scan` (docs/troubleshooting.md)"
)


class DeviceLink:
    """Keeps one device connected and publishes its readings and health."""

    def __init__(
        self,
        device: DeviceConfig,
        driver: DeviceProtocol,
        ble: BleConfig,
        scanner: Scanner,
        supervisor: AdapterSupervisor,
        publish: Publish,
        client_backend: type[Any] | None = None,
    ) -> None:
        self.device = device
        self.driver = driver
        self.ble = ble
        self.scanner = scanner
        self.supervisor = supervisor
        self.publish = publish
        self.client_backend = client_backend
        self.health = Health(device_id=device.id)
        self.backoff = Backoff(ble.backoff_initial_s, ble.backoff_max_s)
        self.readings = 0
        self._disconnected = asyncio.Event()
        self._client: BleakClient | None = None
        self._link: GattLink | None = None

    # --- one attempt ------------------------------------------------------------

    def _on_disconnect(self, _client: BleakClient) -> None:
        self._disconnected.set()

    async def _connect(self) -> GattLink:
        ble_device = await self.scanner.wait_for(self.device.address, self.ble.device_wait_s)
        if ble_device is None and self.client_backend is None:
            # BlueZ signals a device it already knows (bonded, or met before) only when
            # something in its adverts changed, so a quiet one may never be "seen" by a
            # collector started later (issue 35); BlueZ can still connect to it
            ble_device = await get_device(self.device.address)
            if ble_device is not None:
                LOG.info("%s: not heard for %g s, known to BlueZ: connecting", self.device.id, self.ble.device_wait_s)
        if ble_device is None:
            raise LinkTimeout(f"{self.device.address} not seen for {self.ble.device_wait_s:g} s")
        kwargs: dict[str, Any] = {"timeout": self.ble.connect_timeout_s}
        if self.client_backend is not None:
            kwargs["backend"] = self.client_backend
        else:
            kwargs["bluez"] = {"adapter": self.ble.adapter}
        async with self.supervisor.connect_lock:
            await close_stale_connections(ble_device)
            self._disconnected.clear()
            client = await within(
                establish_connection(
                    BleakClientWithServiceCache,
                    ble_device,
                    self.device.id,
                    disconnected_callback=self._on_disconnect,
                    max_attempts=2,
                    ble_device_callback=lambda: self.scanner.device(self.device.address) or ble_device,
                    **kwargs,
                ),
                self.ble.connect_timeout_s * 3,
            )
        self._client = client
        link = self.driver.make_link(client, self.ble.operation_timeout_s)
        try:
            await link.start()
            await within(self.driver.setup(link), self.ble.operation_timeout_s * 8)
        except BleakCharacteristicNotFoundError:
            # BlueZ can say ServicesResolved before it has exported every GATT object;
            # bleak then caches the short list for every later connect (services_cache)
            if self.client_backend is None and await forget_services(self.ble.adapter, self.device.address):
                LOG.warning("%s: a characteristic was missing; cached services cleared", self.device.id)
            raise
        return link

    async def _disconnect(self) -> bool:
        """Drop the link, bounded by ``disconnect_timeout_s``. False when the disconnect
        did not complete (logged): the caller decides whether to recover the adapter."""
        client, self._client, self._link = self._client, None, None
        if client is None:
            return True
        try:
            await within(client.disconnect(), self.ble.disconnect_timeout_s)
        except (TimeoutError, BleakError, OSError, EOFError) as exc:
            LOG.warning("%s: disconnect did not complete (%s); carrying on", self.device.id, exc or type(exc).__name__)
            return False
        return True

    async def poll_once(self, link: GattLink) -> Reading:
        """One poll: a reading, published; updates latency and counters."""
        started = time.monotonic()
        time_ms = now_ms()
        values = await within(self.driver.poll(link), self.ble.operation_timeout_s * 3)
        self.health.poll_latency_ms = round((time.monotonic() - started) * 1000, 1)
        reading = Reading(self.device.id, self.driver.kind, time_ms, values)
        self.publish(reading)
        self.readings += 1
        self.health.record_reading(time_ms)
        return reading

    def _count_error(self, exc: BaseException) -> None:
        self.health.record_error(f"{type(exc).__name__}: {exc}")

    def publish_health(self) -> None:
        self.health.rssi = self.scanner.rssi(self.device.address)
        self.health.skipped_frames = self.driver.skipped_bytes
        self.health.adapter_recoveries = sum(self.supervisor.recoveries.values())
        self.publish(self.health.snapshot())

    async def _serve(self, link: GattLink) -> None:
        """Poll an open link until it must be dropped (returns) or the task is cancelled."""
        loop = asyncio.get_running_loop()
        poll_errors = 0
        next_poll = loop.time()
        while True:
            raise_if_cancelled()
            if self._disconnected.is_set():
                raise BleakError("link lost")
            try:
                await self.poll_once(link)
                poll_errors = 0
            except FrameError as exc:
                poll_errors += 1
                self._count_error(exc)
                LOG.warning("%s: bad frame skipped (%s)", self.device.id, exc)
                if poll_errors >= self.device.max_poll_errors:
                    raise
            next_poll += self.device.poll_interval_s
            delay = max(0.0, next_poll - loop.time())
            if delay == 0.0:
                next_poll = loop.time()
            try:
                await within(self._disconnected.wait(), delay)
            except TimeoutError:
                pass

    async def _rest(self, delay: float, retry_on_advert: bool) -> None:
        """Sleep out a backoff of ``delay`` s, cut short by news that a retry may now work:
        the adapter recovered (by another link's escalation; the backoff starts over), or,
        when the failure was a device out of reach or busy (``retry_on_advert``), an advert
        of it heard after ``min(delay, ble.advert_retry_floor_s)`` s. A device back in reach is
        thus connected within seconds, not after a backoff grown to ``backoff_max_s``."""
        failed_at = time.monotonic()
        recovered = asyncio.ensure_future(self.supervisor.recovered.wait())
        waits: set[asyncio.Future[Any]] = {recovered}
        heard: asyncio.Future[Any] | None = None
        if retry_on_advert:
            floor = min(delay, self.ble.advert_retry_floor_s)

            async def heard_again() -> None:
                await asyncio.sleep(floor)
                await self.scanner.wait_heard(self.device.address, failed_at)

            heard = asyncio.ensure_future(heard_again())
            waits.add(heard)
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if recovered.done() and not recovered.cancelled():
            LOG.info("%s: the adapter was recovered: retrying now", self.device.id)
            self.backoff.reset()
        elif heard is not None and heard.done() and not heard.cancelled():
            LOG.info("%s: heard again after %.1f s: retrying", self.device.id, time.monotonic() - failed_at)

    # --- the forever loop -------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled. Never raises except CancelledError."""
        first = True
        #: since when the scanner must have heard the device for a failure not to count as unheard
        heard_mark = time.monotonic()
        try:
            while True:
                raise_if_cancelled()
                if not first:
                    self.health.reconnects += 1
                first = False
                retry_on_advert = False
                try:
                    link = await self._connect()
                    self._link = link
                    self.supervisor.report_success()
                    heard_mark = time.monotonic()
                    self.backoff.reset()
                    self.health.connected = True
                    LOG.info("%s: connected to %s", self.device.id, self.device.address)
                    self.publish_health()
                    await self._serve(link)
                except asyncio.CancelledError:
                    raise
                except (
                    AuthenticationError,
                    FrameError,
                    LinkTimeout,
                    TimeoutError,
                    BleakError,
                    OSError,
                    EOFError,
                ) as exc:
                    self._count_error(exc)
                    LOG.warning("%s: link dropped: %s: %s", self.device.id, type(exc).__name__, exc)
                    if not self.health.connected:
                        busy = not isinstance(exc, AuthenticationError | FrameError)  # not a password
                        if busy and self.health.consecutive_errors == BUSY_HINT_AFTER:
                            LOG.warning(BUSY_HINT, self.device.id, self.device.address, BUSY_HINT_AFTER)
                        unheard = not self.scanner.heard_since(self.device.address, heard_mark)
                        if await self.supervisor.report_failure(unheard=unheard):
                            self.backoff.reset()  # this link's failure recovered the adapter
                        retry_on_advert = busy
                except Exception as exc:
                    self._count_error(exc)
                    LOG.exception("%s: unexpected error", self.device.id)
                raise_if_cancelled()
                self.health.connected = False
                if not await self._disconnect() and await self.supervisor.report_stuck_disconnect(self.device.id):
                    self.backoff.reset()  # this link's stuck disconnect recovered the adapter
                self.publish_health()
                await self._rest(self.backoff.next_delay(), retry_on_advert)
        finally:
            self.health.connected = False
            await asyncio.shield(self._disconnect())
