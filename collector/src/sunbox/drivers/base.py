"""The small base class every BLE device driver implements.

A driver knows one device family's GATT layout and protocol. The connection manager
opens the link, then calls :meth:`Driver.setup` once per connection and
:meth:`Driver.poll` every interval; drivers never connect or disconnect themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from bleak import BleakClient

from sunbox.ble.device import AuthenticationError, PairingRequired
from sunbox.ble.gatt import GattLink
from sunbox.config import DeviceConfig
from sunbox.model import Kind

__all__ = ["AuthenticationError", "Driver", "PairingRequired"]


class Driver(ABC):
    """One device family (it implements :class:`sunbox.ble.device.DeviceProtocol`).
    Subclasses set the class attributes and the two coroutines."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    service_uuid: ClassVar[str]
    write_uuid: ClassVar[str]
    notify_uuid: ClassVar[str]
    #: advertised name prefixes that identify the family (for ``sunbox scan``)
    name_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.static: dict[str, Any] = {}

    @property
    def skipped_bytes(self) -> int:
        """Bytes of garbage skipped while reassembling frames (for health)."""
        return 0

    def make_link(self, client: BleakClient, timeout: float) -> GattLink:
        return GattLink(client, self.write_uuid, self.notify_uuid, timeout)

    async def setup(self, link: GattLink) -> None:
        """Once per connection: authenticate and read static data into :attr:`static`.

        Raises:
            AuthenticationError, FrameError, LinkTimeout.
        """

    @abstractmethod
    async def poll(self, link: GattLink) -> dict[str, Any]:
        """Read the device once; return data-model values (static ones included).

        Raises:
            FrameError: a bad frame (the reading is discarded, nothing is published).
            LinkTimeout: the device did not answer.
        """
