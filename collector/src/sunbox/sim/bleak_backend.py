"""A bleak backend on a bumble host: the production bleak code path without BlueZ.

:class:`BumbleCentral` runs one bumble ``Device`` as the central, on any bumble HCI
transport (an in-process virtual controller, or ``tcp-client:HOST:PORT`` served by
``sunbox sim``). :meth:`BumbleCentral.client_backend` and
:meth:`BumbleCentral.scanner_backend` return classes to pass as ``backend=`` to
``bleak.BleakClient`` / ``bleak.BleakScanner`` (and through bleak-retry-connector's
``establish_connection(**kwargs)``). Everything above bleak - drivers, connection
manager, scanner, publisher - is the production code, unchanged.

This is test and demo infrastructure: the appliance uses BlueZ.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bumble import hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.pairing import PairingConfig, PairingDelegate

LOG = logging.getLogger(__name__)

_PROPERTY_NAMES = (
    (0x01, "broadcast"),
    (0x02, "read"),
    (0x04, "write-without-response"),
    (0x08, "write"),
    (0x10, "notify"),
    (0x20, "indicate"),
    (0x40, "authenticated-signed-writes"),
    (0x80, "extended-properties"),
)


class _PasskeyDelegate(PairingDelegate):  # type: ignore[misc]
    """Answers a passkey request with the configured passkey (keyboard-only central)."""

    def __init__(self, passkey: int) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY)
        self._passkey = passkey

    async def get_number(self) -> int | None:
        return self._passkey


class BumbleCentral:
    """One bumble host used as a BLE central by the bleak backend classes it creates."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.passkeys: dict[str, int] = {}
        self._scanners: set[BumbleScanner] = set()
        self._scanning_active: bool | None = None
        self._connect_lock = asyncio.Lock()
        self._transport: Any = None
        device.on("advertisement", self._on_advertisement)

    @classmethod
    async def open(cls, transport: str, address: str = "F0:F1:F2:F3:F4:F5") -> BumbleCentral:
        """Open a bumble HCI transport (e.g. ``tcp-client:127.0.0.1:9001``) and power on."""
        from bumble.transport import open_transport

        hci_transport = await open_transport(transport)
        device = Device.with_hci("sunbox", hci.Address(address), hci_transport.source, hci_transport.sink)
        central = cls(device)
        central._transport = hci_transport
        await device.power_on()
        return central

    async def close(self) -> None:
        """Close the transport opened by :meth:`open` (no-op otherwise)."""
        if self._transport is not None:
            await self._transport.close()

    # --- scanning -----------------------------------------------------------------

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for scanner in list(self._scanners):
            scanner._on_advertisement(advertisement)

    async def _update_scanning(self) -> None:
        wanted: bool | None = None
        if self._scanners:
            wanted = any(s.active for s in self._scanners)
        if wanted == self._scanning_active:
            return
        if self._scanning_active is not None:
            await self.device.stop_scanning()
        if wanted is not None:
            await self.device.start_scanning(
                active=wanted, filter_duplicates=False, own_address_type=hci.OwnAddressType.PUBLIC
            )
        self._scanning_active = wanted

    async def add_scanner(self, scanner: BumbleScanner) -> None:
        self._scanners.add(scanner)
        await self._update_scanning()

    async def remove_scanner(self, scanner: BumbleScanner) -> None:
        self._scanners.discard(scanner)
        await self._update_scanning()

    # --- backend classes ----------------------------------------------------------

    def client_backend(self) -> type[BumbleClient]:
        """A :class:`BumbleClient` subclass bound to this central."""
        return type("BumbleClient", (BumbleClient,), {"central": self})

    def scanner_backend(self) -> type[BumbleScanner]:
        """A :class:`BumbleScanner` subclass bound to this central."""
        return type("BumbleScanner", (BumbleScanner,), {"central": self})

    async def power_cycle(self) -> None:
        """Drop every connection and restart the host, like an adapter power-cycle."""
        for connection in list(self.device.connections.values()):
            try:
                await asyncio.wait_for(connection.disconnect(), 5)
            except (TimeoutError, Exception):  # noqa: BLE001 - best effort, logged
                LOG.warning("power-cycle: disconnect of %s failed", connection.peer_address)
        self._scanning_active = None
        await self._update_scanning()


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend fed by a :class:`BumbleCentral`'s advertisement reports."""

    central: ClassVar[BumbleCentral]

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.active = scanning_mode != "passive"

    async def start(self) -> None:
        self.seen_devices = {}
        await self.central.add_scanner(self)

    async def stop(self) -> None:
        await self.central.remove_scanner(self)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        data = advertisement.data
        uuids = [
            _uuid_text(u)
            for ad_type in (
                AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            )
            for u in (data.get(ad_type) or [])
        ]
        manufacturer: dict[int, bytes] = {}
        raw_mfr = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, raw=True)
        if isinstance(raw_mfr, bytes) and len(raw_mfr) >= 2:
            manufacturer[int.from_bytes(raw_mfr[:2], "little")] = raw_mfr[2:]
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
        address = str(advertisement.address).split("/")[0].upper()
        adv = AdvertisementData(
            local_name=name if isinstance(name, str) else None,
            manufacturer_data=manufacturer,
            service_data={},
            service_uuids=uuids,
            tx_power=None,
            rssi=advertisement.rssi,
            platform_data=(advertisement,),
        )
        device = self.create_or_update_device(address, address, adv.local_name, {"bumble": True}, adv)
        if self.is_allowed_uuid(uuids):
            self.call_detection_callbacks(device, adv)


class BumbleClient(BaseBleakClient):
    """bleak client backend over a :class:`BumbleCentral` (LE only)."""

    central: ClassVar[BumbleCentral]

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
        )
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscriptions: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return int(self._connection.att_mtu) if self._connection else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool = False, **kwargs: Any) -> None:
        timeout = kwargs.get("timeout", self._timeout)
        async with self.central._connect_lock:
            try:
                connection = await self.central.device.connect(
                    hci.Address(self.address, hci.Address.PUBLIC_DEVICE_ADDRESS),
                    own_address_type=hci.OwnAddressType.PUBLIC,
                    timeout=timeout,
                )
            except TimeoutError as exc:
                raise BleakDeviceNotFoundError(
                    self.address, f"Device with address {self.address} was not found"
                ) from exc
            except Exception as exc:
                raise BleakError(f"bumble connect to {self.address} failed: {exc}") from exc
        self._connection = connection
        connection.on("disconnection", self._on_disconnection)
        peer = Peer(connection)
        self._peer = peer
        try:
            await asyncio.wait_for(self._discover(peer), timeout)
            if pair:
                await self.pair()
        except BaseException:
            await self.disconnect()
            raise

    async def _discover(self, peer: Peer) -> None:
        await peer.discover_services()
        collection = BleakGATTServiceCollection()
        for proxy in peer.services:
            await proxy.discover_characteristics()
            service = BleakGATTService(proxy, proxy.handle, _uuid_text(proxy.uuid))
            collection.add_service(service)
            for char_proxy in proxy.characteristics:
                await peer.discover_descriptors(char_proxy)
                properties = [name for bit, name in _PROPERTY_NAMES if char_proxy.properties & bit]
                characteristic = BleakGATTCharacteristic(
                    char_proxy,
                    char_proxy.handle,
                    _uuid_text(char_proxy.uuid),
                    properties,  # type: ignore[arg-type]
                    lambda: self.mtu_size - 3,
                    service,
                )
                collection.add_characteristic(characteristic)
                for desc_proxy in char_proxy.descriptors:
                    descriptor = BleakGATTDescriptor(
                        desc_proxy, desc_proxy.handle, _uuid_text(desc_proxy.type), characteristic
                    )
                    collection.add_descriptor(descriptor)
        self.services = collection

    def _on_disconnection(self, reason: int) -> None:
        self._connection = None
        self._peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.disconnect()
        except Exception as exc:  # noqa: BLE001 - already gone is fine
            LOG.debug("bumble disconnect: %s", exc)
        self._connection = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        if self._connection is None:
            raise BleakError("not connected")
        passkey = kwargs.get("passkey", self.central.passkeys.get(self.address.upper(), 0))
        delegate = _PasskeyDelegate(int(passkey))
        self.central.device.pairing_config_factory = lambda _c: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=delegate
        )
        try:
            await self._connection.pair()
        except Exception as exc:
            raise BleakError(f"org.bluez.Error.AuthenticationFailed: {exc}") from exc

    async def unpair(self) -> None:
        await self.disconnect()

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        self._require_peer()
        return bytearray(await characteristic.obj.read_value())

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, **kwargs: Any) -> bytearray:
        self._require_peer()
        return bytearray(await descriptor.obj.read_value())

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        self._require_peer()
        await characteristic.obj.write_value(bytes(data), with_response=response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        self._require_peer()
        await descriptor.obj.write_value(bytes(data), with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        peer = self._require_peer()

        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        self._subscriptions[characteristic.handle] = subscriber
        await peer.subscribe(characteristic.obj, subscriber)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require_peer()
        subscriber = self._subscriptions.pop(characteristic.handle, None)
        await peer.unsubscribe(characteristic.obj, subscriber)


def _uuid_text(uuid: Any) -> str:
    """A bumble UUID as bleak's lower-case 128-bit text form."""
    h = bytes(uuid.to_bytes(force_128=True))[::-1].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
