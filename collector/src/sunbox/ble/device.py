"""What the connection manager (:mod:`sunbox.ble.link`) needs from a device driver, and
the errors a driver raises that the link treats apart.

Drivers (:mod:`sunbox.drivers`) sit above the BLE layer and implement
:class:`DeviceProtocol` by subclassing :class:`sunbox.drivers.base.Driver`; the link
depends only on this module, so no arrow points up from ``ble`` to ``drivers``.
"""

from __future__ import annotations

from typing import Any, Protocol

from bleak import BleakClient

from sunbox.model import Kind

from .gatt import GattLink


class AuthenticationError(Exception):
    """The device refused our credentials (wrong password or passkey)."""


class PairingRequired(AuthenticationError):
    """The device echoes requests: it needs BLE passkey pairing first (newer JBD firmware)."""


class DeviceProtocol(Protocol):
    """One connected device's protocol, as the link drives it: a GATT link per
    connection, :meth:`setup` once on it, then :meth:`poll` every interval."""

    @property
    def kind(self) -> Kind:
        """The data-model kind of its readings (battery, charger, ...)."""
        ...

    @property
    def skipped_bytes(self) -> int:
        """Bytes of garbage skipped while reassembling frames (for health)."""
        ...

    def make_link(self, client: BleakClient, timeout: float) -> GattLink: ...

    async def setup(self, link: GattLink) -> None:
        """Authenticate and read static data. Raises AuthenticationError, FrameError, LinkTimeout."""
        ...

    async def poll(self, link: GattLink) -> dict[str, Any]:
        """One reading's values. Raises FrameError (nothing is published) or LinkTimeout."""
        ...
