"""Device drivers, one module per device family, looked up by name."""

from __future__ import annotations

from .base import Driver
from .jbd import JbdDriver
from .litime import LiTimeDriver
from .smartsolar import PhoenixDriver, SmartSolarDriver

DRIVERS: dict[str, type[Driver]] = {
    JbdDriver.name: JbdDriver,
    LiTimeDriver.name: LiTimeDriver,
    SmartSolarDriver.name: SmartSolarDriver,
    PhoenixDriver.name: PhoenixDriver,
}


def driver_for_advert(name: str | None, service_uuids: list[str]) -> str | None:
    """Name of the driver that would handle a device with this advert, or None.

    The advertised service UUID decides first (JBD FF00 vs. Vatrer's Nordic UART
    packs, see the protocol notes), then the name prefix; where several drivers share
    a service (VictronConnect: SmartSolar, Phoenix), the name prefix picks among them.
    """
    uuids = {u.lower() for u in service_uuids}
    by_uuid = [d for d in DRIVERS.values() if d.service_uuid in uuids]
    by_name = [d for d in DRIVERS.values() if name and name.startswith(d.name_prefixes)]
    for driver in by_uuid:  # one service shared by several families: the name decides
        if driver in by_name:
            return driver.name
    if by_uuid:
        return by_uuid[0].name
    return by_name[0].name if by_name else None
