"""Victron Instant Readout: readings from the adverts the shared scanner already receives.

No connection is made. Every advert carrying manufacturer data 0x02E1 from a configured
address is decrypted and decoded (:mod:`sunbox.protocols.victron_advert`). The device
sends about one advert per second, so at most one reading per ``interval_s`` is
published. A wrong or changed key (the check byte does not match) is logged once, with
the fix, and counted in health on every advert; it is logged again only after the key
has worked in between. Malformed adverts are counted and skipped.

Health: ``connected`` means an advert arrived within ``stale_after_s``; ``rssi`` is the
newest advert's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from sunbox.config import VictronAdvertConfig
from sunbox.model import Health, Kind, Reading, now_ms
from sunbox.protocols import victron_advert
from sunbox.protocols.errors import FrameError

LOG = logging.getLogger(__name__)

Publish = Callable[[Reading], None]


class VictronAdvertSource:
    """Turns one device's adverts into readings; :meth:`on_advert` is a scanner listener."""

    def __init__(self, device: VictronAdvertConfig, publish: Publish) -> None:
        self.device = device
        self.publish = publish
        self.key = bytes.fromhex(device.key)
        self.health = Health(device_id=device.id)
        self.adverts = 0
        self.readings = 0
        self.key_errors = 0
        self._key_reported = False
        self._last_publish = 0.0
        self._last_seen = 0.0

    def on_advert(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        if device.address.upper() != self.device.address:
            return
        data = advertisement.manufacturer_data.get(victron_advert.COMPANY_ID)
        if data is None:
            return
        self.adverts += 1
        self._last_seen = time.monotonic()
        self.health.rssi = advertisement.rssi
        if not self.health.connected:
            self.health.connected = True
            self.publish_health()
        now = time.monotonic()
        if now - self._last_publish < self.device.interval_s:
            return
        try:
            kind, values = victron_advert.decode(data, self.key)
        except victron_advert.AdvertKeyError as exc:
            self.key_errors += 1
            self.health.record_error(str(exc))
            if not self._key_reported:
                self._key_reported = True
                LOG.error(
                    "%s: %s. Copy the key again from VictronConnect (Product info > Instant readout "
                    "details); it changes when the Bluetooth PIN is changed",
                    self.device.id,
                    exc,
                )
            return
        except FrameError as exc:
            self.health.record_error(str(exc))
            LOG.debug("%s: skipped an advert: %s", self.device.id, exc)
            return
        self._key_reported = False
        self._last_publish = now
        time_ms = now_ms()
        self.publish(Reading(self.device.id, cast(Kind, kind), time_ms, values))
        self.readings += 1
        self.health.record_reading(time_ms)

    def publish_health(self) -> None:
        if self.health.connected and time.monotonic() - self._last_seen > self.device.stale_after_s:
            self.health.connected = False
        self.publish(self.health.snapshot())
