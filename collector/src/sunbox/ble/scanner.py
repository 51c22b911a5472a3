"""Discovery scanning that runs alongside the open links.

One scanner per adapter keeps the newest advert of every device (BLEDevice, RSSI, time
seen). Links ask it for a device before connecting and read RSSI from it for health.
On BlueZ, passive scanning needs an advertisement-monitor pattern; the one used here
matches the Flags AD type every connectable device sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from sunbox.aio import within

LOG = logging.getLogger(__name__)


@dataclass(slots=True)
class Seen:
    device: BLEDevice
    advertisement: AdvertisementData
    monotonic: float


class Scanner:
    """Wraps :class:`bleak.BleakScanner`; thread-free, callbacks run on the event loop."""

    def __init__(self, scanning_mode: str, adapter: str, backend: type[Any] | None = None) -> None:
        kwargs: dict[str, Any] = {"scanning_mode": scanning_mode}
        if backend is not None:
            kwargs["backend"] = backend
        else:
            kwargs["bluez"] = {"adapter": adapter}
            if scanning_mode == "passive":
                from bleak.args.bluez import OrPattern
                from bleak.assigned_numbers import AdvertisementDataType

                kwargs["bluez"]["or_patterns"] = [OrPattern(0, AdvertisementDataType.FLAGS, b"\x06")]
            else:
                # report every advert, not only changed ones (Instant Readout at the device's rate)
                kwargs["bluez"]["filters"] = {"DuplicateData": True}
        self._scanner = BleakScanner(self._on_advert, **kwargs)
        self.listeners: list[Callable[[BLEDevice, AdvertisementData], None]] = []
        self.seen: dict[str, Seen] = {}
        self._changed = asyncio.Event()
        self.adverts = 0
        #: adverts a listener raised on (logged on the first and every 1000th)
        self.listener_errors = 0

    def _on_advert(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        self.adverts += 1
        self.seen[device.address.upper()] = Seen(device, advertisement, time.monotonic())
        self._changed.set()
        for listener in self.listeners:
            try:
                listener(device, advertisement)
            except Exception:  # one listener's bug must not starve the others or the links
                self.listener_errors += 1
                if self.listener_errors == 1 or self.listener_errors % 1000 == 0:
                    LOG.exception("an advert listener failed (%d times so far)", self.listener_errors)

    async def start(self) -> None:
        await self._scanner.start()

    async def stop(self) -> None:
        await self._scanner.stop()

    def rssi(self, address: str) -> int | None:
        seen = self.seen.get(address.upper())
        return None if seen is None else seen.advertisement.rssi

    def device(self, address: str) -> BLEDevice | None:
        seen = self.seen.get(address.upper())
        return None if seen is None else seen.device

    def heard_since(self, address: str, since: float) -> bool:
        """Whether an advert of ``address`` arrived after ``since`` (``time.monotonic()``)."""
        seen = self.seen.get(address.upper())
        return seen is not None and seen.monotonic > since

    async def wait_heard(self, address: str, since: float) -> None:
        """Return once an advert of ``address`` arrives after ``since`` (``time.monotonic()``);
        unbounded: the caller bounds it."""
        while not self.heard_since(address, since):
            self._changed.clear()
            await self._changed.wait()

    async def wait_for(self, address: str, timeout: float) -> BLEDevice | None:
        """The device's newest BLEDevice, waiting up to ``timeout`` s for an advert."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (device := self.device(address)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._changed.clear()
            try:
                await within(self._changed.wait(), remaining)
            except TimeoutError:
                return None
        return device
