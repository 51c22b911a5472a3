"""A VE.Direct device on a serial port (pyserial): blocks in, readings and health out.

The port is opened at 19200 8N1 (VE.Direct Protocol 3.33). Bytes go through
:class:`sunbox.protocols.vedirect.BlockParser`. A BMV's two blocks per second are joined
(:class:`PairMerger`). At most one reading per ``publish_interval_s`` is published:
the newest one. A port that cannot be opened, or that stops sending valid blocks for
``silence_timeout_s``, is closed and reopened with backoff. Bad checksums and malformed
blocks are counted in health (``errors_total``, ``skipped_frames``), never published.

Use a stable port name: ``/dev/serial/by-id/usb-VictronEnergy_BV_VE_Direct_cable_<serial>-if00-port0``
(udev by-id), not ``/dev/ttyUSB0``, whose number depends on plug order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

import serial

from sunbox.aio import raise_if_cancelled
from sunbox.ble.adapter import Backoff
from sunbox.config import VeDirectConfig
from sunbox.model import Health, Kind, Reading, now_ms
from sunbox.protocols import vedirect
from sunbox.protocols.errors import FrameError

LOG = logging.getLogger(__name__)

Publish = Callable[[Reading], None]


class PairMerger:
    """Streaming :func:`sunbox.protocols.vedirect.merge_pairs`: push blocks, get merged ones.

    A main block is held until the next block shows whether a history block follows.
    """

    def __init__(self) -> None:
        self._pending: vedirect.Block | None = None

    def push(self, block: vedirect.Block) -> vedirect.Block | None:
        if vedirect.is_history(block):
            pending, self._pending = self._pending, None
            return None if pending is None else pending | block
        pending, self._pending = self._pending, block
        return pending


class VeDirectSource:
    """Reads one VE.Direct port until cancelled."""

    def __init__(self, device: VeDirectConfig, publish: Publish) -> None:
        self.device = device
        self.publish = publish
        self.health = Health(device_id=device.id)
        self.backoff = Backoff(1.0, 60.0)
        self.parser = vedirect.BlockParser()
        self.readings = 0
        self._merger = PairMerger()
        self._last_publish = 0.0

    def publish_health(self) -> None:
        stats = self.parser.stats
        self.health.skipped_frames = stats.skipped_bytes
        self.publish(self.health.snapshot())

    def _open(self) -> serial.Serial:
        return serial.Serial(self.device.port, baudrate=self.device.baudrate, timeout=0.5)

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                port = await asyncio.to_thread(self._open)
            except (serial.SerialException, OSError) as exc:
                self._failed(f"cannot open {self.device.port}: {exc}")
                await asyncio.sleep(self.backoff.next_delay())
                continue
            try:
                await self._serve(port)
            except (serial.SerialException, OSError) as exc:
                self._failed(f"{self.device.port}: {exc}")
            finally:
                await asyncio.to_thread(port.close)
                if self.health.connected:
                    self.health.connected = False
                    self.publish_health()
            await asyncio.sleep(self.backoff.next_delay())

    def _failed(self, message: str) -> None:
        self.health.record_error(message)
        LOG.warning("VE.Direct %s: %s", self.device.id, message)

    async def _serve(self, port: serial.Serial) -> None:
        last_block = time.monotonic()
        while True:
            data = cast(bytes, await asyncio.to_thread(port.read, 512))
            bad_before = self.parser.stats.bad_checksums + self.parser.stats.malformed
            blocks = self.parser.feed(data)
            bad = self.parser.stats.bad_checksums + self.parser.stats.malformed - bad_before
            if bad:
                self.health.errors_total += bad
                self.health.last_error = "VE.Direct block with a bad checksum or format"
            if blocks:
                last_block = time.monotonic()
                if not self.health.connected:
                    self.health.connected = True
                    self.health.reconnects += 1 if self.readings else 0
                    self.backoff.reset()
                    self.publish_health()
            elif time.monotonic() - last_block > self.device.silence_timeout_s:
                raise OSError(f"no valid block for {self.device.silence_timeout_s:.0f} s")
            for block in blocks:
                merged = self._merger.push(block)
                if merged is not None:
                    self._handle(merged)

    def _handle(self, block: vedirect.Block) -> None:
        try:
            kind, values = vedirect.to_values(block)
        except FrameError as exc:
            self._failed(str(exc))
            return
        now = time.monotonic()
        if now - self._last_publish < self.device.publish_interval_s:
            return
        self._last_publish = now
        time_ms = now_ms()
        self.publish(Reading(self.device.id, cast(Kind, kind), time_ms, values))
        self.readings += 1
        self.health.record_reading(time_ms)
