"""Device drivers, one module per device family, looked up by name."""

from __future__ import annotations

from .base import Driver
from .jbd import JbdDriver
from .litime import LiTimeDriver
from .smartsolar import SmartSolarDriver

DRIVERS: dict[str, type[Driver]] = {
    JbdDriver.name: JbdDriver,
    LiTimeDriver.name: LiTimeDriver,
    SmartSolarDriver.name: SmartSolarDriver,
}


def driver_for_advert(name: str | None, service_uuids: list[str]) -> str | None:
    """Name of the driver that would handle a device with this advert, or None.

    The advertised service UUID decides first (JBD FF00 vs. Vatrer's Nordic UART
    packs, see the protocol notes), then the name prefix.
    """
    uuids = {u.lower() for u in service_uuids}
    for driver in DRIVERS.values():
        if driver.service_uuid in uuids:
            return driver.name
    for driver in DRIVERS.values():
        if name and name.startswith(driver.name_prefixes):
            return driver.name
    return None
