"""Forget bleak's cached GATT services of one device, keeping BlueZ's device and bond.

BlueZ 5.66 can set ``ServicesResolved`` before it has exported every GATT object of a
first connection (seen in the BLE virtual Pi: the LiTime's FFE0 service arrived 140 ms
after it; issue 35). bleak builds the device's service collection at that moment and
caches it in its BlueZ manager (``bleak/backends/bluezdbus/manager.py``,
``BlueZManager._services_cache``), and bleak-retry-connector's ``establish_connection``
reuses any cached collection on every later connect, so the missing characteristic
stays missing until BlueZ removes the device.

bleak-retry-connector's own ``clear_cache(address)`` removes the device from BlueZ
(``RemoveDevice``), which also deletes a bond: a bonded SmartSolar or passkey JBD
would have to pair again. This drops only bleak's entry; bleak then rebuilds it from
BlueZ's objects on the next connect. It reads a private attribute of bleak (3.x): if a
later bleak renames it, nothing is cleared and the call says so (False, logged).
"""

from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)


async def forget_services(adapter: str, address: str) -> bool:
    """Drop bleak's cached services for ``address`` on ``adapter``. True when an entry
    was dropped; False when there was none or bleak's cache could not be reached (no
    BlueZ, another bleak)."""
    from bleak_retry_connector.bluez import address_to_bluez_path

    try:
        from bleak.backends.bluezdbus.manager import get_global_bluez_manager

        manager = await get_global_bluez_manager()
    except Exception as exc:  # noqa: BLE001 - no BlueZ here: nothing to forget
        LOG.debug("no BlueZ manager to clear services from: %s", exc)
        return False
    cache = getattr(manager, "_services_cache", None)
    if not isinstance(cache, dict):
        LOG.warning("bleak's services cache not found (bleak changed?); %s keeps its cached services", address)
        return False
    return cache.pop(address_to_bluez_path(address, adapter), None) is not None
