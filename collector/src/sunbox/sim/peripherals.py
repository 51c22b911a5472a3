"""bumble virtual peripherals speaking the real JBD and LiTime protocols.

Each simulator is a bumble ``Device`` on its own virtual controller on a shared
:class:`~sunbox.sim.link.SimLink`. Answers start from real captured frames (sources in
``collector/tests/fixtures/devices.json``) and add slow, plausible dynamics.

Fault knobs, settable at any time (tests flip them): ``silent`` (stop answering),
``garbage`` (answer random bytes), ``corrupt`` (flip a bit in the next answers),
:meth:`SimPeripheral.drop_links` (drop the link from the device side),
``accept_connections``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from bumble import hci
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.keys import JsonKeyStore
from bumble.pairing import PairingConfig, PairingDelegate

from sunbox.aio import raise_if_cancelled
from sunbox.protocols import jbd, litime
from sunbox.protocols.errors import FrameError

from .controller import HostController, open_vhci
from .link import SimLink

LOG = logging.getLogger(__name__)

JBD_SERVICE = "0000ff00-0000-1000-8000-00805f9b34fb"
JBD_NOTIFY = "0000ff01-0000-1000-8000-00805f9b34fb"
JBD_WRITE = "0000ff02-0000-1000-8000-00805f9b34fb"
LITIME_SERVICE = "0000ffe0-0000-1000-8000-00805f9b34fb"
LITIME_CHAR = "0000ffe1-0000-1000-8000-00805f9b34fb"
BLUETOOTH_BASE_UUID = "-0000-1000-8000-00805f9b34fb"

#: syssi/esphome-jbd-bms docs/ffaa-auth-flow/communications2.txt (after auth, discharging)
JBD_BASIC_CAPTURE = bytes.fromhex("dd03001d0536ffcb4ff253340001309b00000000000044600304030bb70bbf0bb9f84c77")
#: same source
JBD_CELLS_CAPTURE = bytes.fromhex("dd0400080d070d060d080d08ffa777")
#: syssi docs/pdus/JBD-SP04S034-L4S-200A-B-U.txt
JBD_MODEL_CAPTURE = bytes.fromhex("dd0500194a42442d53503034533033342d4c34532d323030412d422d55fa0877")
#: mavenius/litime_mppt_esphome litime_solar_mppt.h comment (BT-LTMPPT4860)
LITIME_STATUS_CAPTURE = bytes.fromhex(
    "0103260064008f05c900d31bff008f000200000321036804ba0000800400000003000017e000000000a884"
)


class _DisplayPasskey(PairingDelegate):  # type: ignore[misc]
    """Peripheral side of passkey entry: 'displays' a fixed passkey."""

    def __init__(self, passkey: int) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY)
        self._passkey = passkey

    async def generate_passkey(self) -> int:
        return self._passkey

    async def display_number(self, number: int, digits: int) -> None:
        return None


class SimPeripheral:
    """Common plumbing: controller, GATT notify helper, advertising and fault knobs."""

    service_uuid = ""

    def __init__(self, link: SimLink, address: str, name: str, seed: int = 1) -> None:
        self.address = address.upper()
        self.name = name
        self.controller = Controller(name, link=link, public_address=self.address)
        self.device = Device.with_hci(name, hci.Address(self.address), self.controller, self.controller)
        self.random = random.Random(seed)
        self.silent = False
        self.garbage = False
        self.corrupt = 0
        self.accept_connections = True
        self.writes: list[bytes] = []
        self.started_at = time.monotonic()
        self._notify_char: Characteristic | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.device.on("connection", self._on_connection)

    def _on_connection(self, connection: Connection) -> None:
        if not self.accept_connections:
            self._spawn(connection.disconnect())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _advertising_data(self) -> bytes:
        """Flags, the name and, for a 16-bit service UUID, that UUID (128-bit ones are left out)."""
        fields = [
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
        ]
        if self.service_uuid.startswith("0000") and self.service_uuid.endswith(BLUETOOTH_BASE_UUID):
            uuid16 = bytes.fromhex(self.service_uuid[4:8])[::-1]
            fields.append((AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, uuid16))
        return bytes(AdvertisingData(fields))

    def keep_bonds_in(self, path: Path) -> None:
        """Keep this device's bonds in the JSON file ``path`` (bumble ``JsonKeyStore``, one
        namespace per device address) instead of in memory, so a restarted simulator still
        knows the central it paired with, as a real device does across a power cut.
        Call before :meth:`start`."""
        self.device.keystore = JsonKeyStore(self.address, str(path))

    async def start(self) -> None:
        """Power on and advertise (connectable, public address)."""
        await self.device.power_on()
        await self.device.start_advertising(
            auto_restart=True,
            own_address_type=hci.OwnAddressType.PUBLIC,
            advertising_data=self._advertising_data(),
            advertising_interval_min=100,
            advertising_interval_max=100,
        )

    async def drop_links(self) -> None:
        """Drop every open link from the peripheral side."""
        for connection in list(self.device.connections.values()):
            try:
                await asyncio.wait_for(connection.disconnect(), 5)
            except Exception:
                LOG.debug("sim drop failed", exc_info=True)

    async def send(self, connection: Connection, frame: bytes) -> None:
        """Notify ``frame`` in MTU-3 sized chunks, applying the fault knobs."""
        if self.silent or self._notify_char is None:
            return
        if self.garbage:
            frame = bytes(self.random.getrandbits(8) for _ in range(len(frame)))
        elif self.corrupt:
            self.corrupt -= 1
            data = bytearray(frame)
            data[len(data) // 2] ^= 0x10
            frame = bytes(data)
        size = max(20, connection.att_mtu - 3)
        for i in range(0, len(frame), size):
            await self.device.notify_subscriber(connection, self._notify_char, frame[i : i + size])

    def _on_write(self, connection: Connection, value: bytes) -> None:
        self.writes.append(bytes(value))
        self._spawn(self.handle_write(connection, bytes(value)))

    async def handle_write(self, connection: Connection, value: bytes) -> None:
        raise NotImplementedError


class JbdSimulator(SimPeripheral):
    """A JBD BMS: service FF00, notify FF01, write FF02.

    ``password`` (6 chars) enables the FF AA handshake: until it succeeds the BLE
    module ignores ``DD A5`` requests. ``passkey`` emulates newer firmware: until the
    link is paired and encrypted every written frame is echoed back (syssi issue #245).
    ``capacity_ah`` and ``soc`` make a pack of another size and charge than the capture's
    (nominal capacity, remaining = ``soc`` % of it, and the RSOC byte).
    """

    service_uuid = JBD_SERVICE

    def __init__(
        self,
        link: SimLink,
        address: str = "A4:C1:37:00:00:01",
        name: str = "DWCK00309J-SIM",
        password: str | None = None,
        passkey: int | None = None,
        seed: int = 1,
        capacity_ah: float | None = None,
        soc: int | None = None,
    ) -> None:
        super().__init__(link, address, name, seed)
        self.password = password.encode() if password else None
        self.passkey = passkey
        self.authenticated: set[int] = set()
        self._random_byte: dict[int, int] = {}
        self._basic = jbd.parse_frame(JBD_BASIC_CAPTURE).data
        if capacity_ah is not None:  # a pack of another size: nominal and remaining (10 mAh), RSOC
            basic = bytearray(self._basic)
            rsoc = basic[19] if soc is None else soc
            basic[4:6] = round(capacity_ah * rsoc).to_bytes(2, "big")
            basic[6:8] = round(capacity_ah * 100).to_bytes(2, "big")
            basic[19] = rsoc
            self._basic = bytes(basic)
        cells_data = jbd.parse_frame(JBD_CELLS_CAPTURE).data
        self._cells = [int.from_bytes(cells_data[i : i + 2], "big") for i in range(0, len(cells_data), 2)]
        self._model = jbd.parse_frame(JBD_MODEL_CAPTURE).data
        self.requests = 0
        notify = Characteristic(
            JBD_NOTIFY,
            Characteristic.Properties.NOTIFY | Characteristic.Properties.READ,
            Characteristic.READABLE,
            b"",
        )
        write = Characteristic(
            JBD_WRITE,
            Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.WRITE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        self._notify_char = notify
        self.device.add_service(Service(JBD_SERVICE, [notify, write]))
        if passkey is not None:
            delegate = _DisplayPasskey(passkey)
            self.device.pairing_config_factory = lambda _c: PairingConfig(
                sc=True, mitm=True, bonding=True, delegate=delegate
            )

    def basic_info(self) -> bytes:
        """Register 0x03 data: the capture with a slowly varying current and voltage."""
        t = time.monotonic() - self.started_at
        data = bytearray(self._basic)
        current = int(-53 + 400 * math.sin(t / 60))  # 10 mA units, +4 A .. -4.5 A
        voltage = int(1334 + current / 40)
        data[0:2] = voltage.to_bytes(2, "big")
        data[2:4] = current.to_bytes(2, "big", signed=True)
        return bytes(data)

    def cell_data(self) -> bytes:
        t = time.monotonic() - self.started_at
        return b"".join(int(v + 3 * math.sin(t / 45 + i)).to_bytes(2, "big") for i, v in enumerate(self._cells))

    async def handle_write(self, connection: Connection, value: bytes) -> None:
        if self.passkey is not None and not connection.is_encrypted:
            await self.send(connection, value)  # newer firmware: echo until paired
            return
        if value.startswith(jbd.FFAA_START):
            await self._handle_ffaa(connection, value)
            return
        if self.password is not None and connection.handle not in self.authenticated:
            return  # the BLE module drops requests before the handshake
        if len(value) != 7 or value[:2] != bytes((jbd.START, jbd.READ)):
            return
        self.requests += 1
        register = value[2]
        if register == jbd.REG_BASIC_INFO:
            await self.send(connection, jbd.encode_response(register, self.basic_info()))
        elif register == jbd.REG_CELL_VOLTAGES:
            await self.send(connection, jbd.encode_response(register, self.cell_data()))
        elif register == jbd.REG_MODEL:
            await self.send(connection, jbd.encode_response(register, self._model))
        else:
            await self.send(connection, jbd.encode_response(register, b"", status=0x80))

    async def _handle_ffaa(self, connection: Connection, value: bytes) -> None:
        try:
            command, data = jbd.parse_ffaa(value)
        except FrameError:
            return
        handle = connection.handle
        if command == jbd.FFAA_APP_KEY:
            ok = data == jbd.APP_KEY
            code = (
                jbd.APP_KEY_REJECTED if not ok else (jbd.APP_KEY_ACCEPTED if self.password else jbd.APP_KEY_NO_PASSWORD)
            )
            if ok and not self.password:
                self.authenticated.add(handle)
            await self.send(connection, jbd.ffaa_frame(command, bytes((code,))))
        elif command == jbd.FFAA_GET_RANDOM:
            rnd = self.random.randrange(256)
            self._random_byte[handle] = rnd
            await self.send(connection, jbd.ffaa_frame(command, bytes((rnd,))))
        elif command in (jbd.FFAA_USER_PASSWORD, jbd.FFAA_ROOT_PASSWORD):
            pending = self._random_byte.pop(handle, None)
            mac = jbd.mac_bytes(self.address)
            expected = self.password if command == jbd.FFAA_USER_PASSWORD else jbd.ROOT_PASSWORD
            ok = (
                pending is not None
                and expected is not None
                and jbd.deobfuscate_password(mac, data, pending) == expected
            )
            if ok and command == jbd.FFAA_ROOT_PASSWORD:
                self.authenticated.add(handle)
            await self.send(connection, jbd.ffaa_frame(command, bytes((0 if ok else 1,))))


class LiTimeSimulator(SimPeripheral):
    """A LiTime MPPT: service FFE0, characteristic FFE1 (write + notify), Modbus slave 1."""

    service_uuid = LITIME_SERVICE

    def __init__(
        self,
        link: SimLink,
        address: str = "C8:47:80:00:00:02",
        name: str = "BT-LTMPPT4860-SIM",
        seed: int = 2,
    ) -> None:
        super().__init__(link, address, name, seed)
        self._status = bytearray(litime.parse_response(LITIME_STATUS_CAPTURE, litime.READ_HOLDING))
        self.load_on = bool(self._status[24] & 0x80)
        self.requests = 0
        char = Characteristic(
            LITIME_CHAR,
            Characteristic.Properties.NOTIFY
            | Characteristic.Properties.WRITE_WITHOUT_RESPONSE
            | Characteristic.Properties.WRITE,
            Characteristic.READABLE | Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        self._notify_char = char
        self.device.add_service(Service(LITIME_SERVICE, [char]))

    def status_block(self) -> bytes:
        """The captured status block with PV/charge values following a slow cycle."""
        t = time.monotonic() - self.started_at
        data = bytearray(self._status)
        current = max(0, int(1481 + 300 * math.sin(t / 90)))  # 0.01 A
        voltage = int.from_bytes(data[2:4], "big")
        data[4:6] = current.to_bytes(2, "big")
        data[6:8] = int(voltage * current / 1000).to_bytes(2, "big")
        data[24] = 0x80 if self.load_on else 0x00
        return bytes(data)

    @staticmethod
    def device_info() -> bytes:
        model = b"LT-MPPT-4860-SIM".ljust(16, b"\x00")
        return bytes((60, 20, 48, 12)) + model + (112).to_bytes(2, "big")

    async def handle_write(self, connection: Connection, value: bytes) -> None:
        if len(value) != 8 or value[0] != litime.SLAVE_ID:
            return
        if litime.crc16_modbus(value[:-2]) != int.from_bytes(value[-2:], "little"):
            return
        self.requests += 1
        function = value[1]
        register = int.from_bytes(value[2:4], "big")
        argument = int.from_bytes(value[4:6], "big")
        if function == litime.READ_HOLDING:
            if register == litime.STATUS_START and argument == litime.STATUS_COUNT:
                await self.send(connection, litime.read_response(self.status_block()))
            elif register == litime.DEVICE_INFO_START and argument == litime.DEVICE_INFO_COUNT:
                await self.send(connection, litime.read_response(self.device_info()))
            else:
                await self.send(connection, litime.exception_response(function, 2))
        elif function == litime.WRITE_SINGLE and register == litime.LOAD_REGISTER:
            self.load_on = bool(argument)
            await self.send(connection, value)
        else:
            await self.send(connection, litime.exception_response(function, 1))


class SimWorld:
    """A set of simulated peripherals and one central-side controller on one link.

    ``host_controller`` is the controller a central host attaches to: in-process via
    :meth:`central` or through a bumble transport with :meth:`serve`.
    """

    def __init__(self, central_address: str = "F0:F1:F2:F3:F4:F5", keystore: Path | None = None) -> None:
        self.link = SimLink()
        self.central_address = central_address
        self.keystore = keystore
        self.peripherals: list[SimPeripheral] = []
        self.host_controller: HostController | None = None

    def add(self, peripheral: SimPeripheral) -> SimPeripheral:
        self.peripherals.append(peripheral)
        return peripheral

    async def start(self) -> None:
        for peripheral in self.peripherals:
            if self.keystore is not None:
                peripheral.keep_bonds_in(self.keystore)
            await peripheral.start()

    async def central(self) -> Any:
        """An in-process :class:`~sunbox.sim.bleak_backend.BumbleCentral` on this link."""
        from .bleak_backend import BumbleCentral

        controller = HostController("central", link=self.link, public_address=self.central_address)
        self.host_controller = controller
        device = Device.with_hci("sunbox", hci.Address(self.central_address), controller, controller)
        central = BumbleCentral(device)
        await device.power_on()
        return central

    async def serve(self, transport_spec: str, wedged: list[str] | None = None) -> Any:
        """Attach the central controller to a bumble transport (e.g. ``tcp-server:_:9001``)
        or to ``vhci[:<path>]`` (:func:`~sunbox.sim.controller.open_vhci`, which keeps
        ``hci0`` while the kernel has it powered down) so a host in another process or
        the kernel drives it. ``wedged``: peer addresses whose connections wedge the
        kernel's link (:class:`~sunbox.sim.controller.HostController`)."""
        from bumble.transport import open_transport

        if transport_spec == "vhci" or transport_spec.startswith("vhci:"):
            transport = await open_vhci(transport_spec.partition(":")[2] or "/dev/vhci")
        else:
            transport = await open_transport(transport_spec)
        self.host_controller = HostController(
            "central",
            host_source=transport.source,
            host_sink=transport.sink,
            link=self.link,
            public_address=self.central_address,
        )
        self.host_controller.wedged.update(wedged or [])
        return transport


class VictronAdvertiser(SimPeripheral):
    """A Victron product sending encrypted Instant Readout adverts (manufacturer data 0x02E1).

    ``template`` is a captured advert (the bytes after the company id) whose header
    (record 0x10, product id, record type) is kept; ``plaintext`` is the decrypted record
    sent with a fresh nonce every ``interval`` s, encrypted with AES-128-CTR as the
    Victron "Extra manufacturer data" document describes (pycryptodome).
    """

    def __init__(
        self,
        link: SimLink,
        address: str,
        key: bytes,
        template: bytes,
        plaintext: bytes,
        interval: float = 0.2,
        name: str = "SmartSolar HQ2242SIM",
    ) -> None:
        super().__init__(link, address, name)
        self.key = key
        self.template = template
        self.plaintext = plaintext
        self.interval = interval
        self.nonce = int.from_bytes(template[5:7], "little")
        self.sent = 0

    def advert(self) -> bytes:
        from Crypto.Cipher import AES
        from Crypto.Util import Counter

        counter = Counter.new(128, initial_value=self.nonce, little_endian=True)
        ciphertext = AES.new(self.key, AES.MODE_CTR, counter=counter).encrypt(self.plaintext)
        return self.template[:5] + self.nonce.to_bytes(2, "little") + self.key[:1] + ciphertext

    def _advertising_data(self) -> bytes:
        return bytes(
            AdvertisingData(
                [
                    (AdvertisingData.FLAGS, bytes([0x06])),
                    (AdvertisingData.MANUFACTURER_SPECIFIC_DATA, b"\xe1\x02" + self.advert()),
                ]
            )
        )

    async def start(self) -> None:
        await super().start()
        self._spawn(self._rotate())

    async def _rotate(self) -> None:
        while True:
            # bumble can take a cancellation that lands inside stop/start_advertising
            # without raising it; the loop would then outlive its event loop's shutdown
            # (a test's teardown hung on it for 300 s).
            raise_if_cancelled()
            await asyncio.sleep(self.interval)
            self.nonce = (self.nonce + 1) & 0xFFFF
            await self.device.stop_advertising()
            await self.device.start_advertising(
                auto_restart=True,
                own_address_type=hci.OwnAddressType.PUBLIC,
                advertising_data=self._advertising_data(),
                advertising_interval_min=50,
                advertising_interval_max=50,
            )
            self.sent += 1


class SmartSolarSimulator(SimPeripheral):
    """A Victron SmartSolar speaking the VictronConnect GATT protocol (service 306b0001).

    Needs passkey pairing: until the link is encrypted, writes are ignored. The product's
    default passkey is 000000, but bumble's SMP asserts a truthy passkey, so the simulator
    needs another one (see the tests). A GET is answered with VALUE messages, split across notifications of
    306b0003 and 306b0004 at odd byte counts, so clients must reassemble. An unknown
    VREG gets the status ``09 <if> <vreg> 01``. Without a keep-alive (SET of VREG 0x0093)
    for ``keepalive_timeout`` s after the last one, the device drops the link. That is
    the product's behaviour (ve_regs.h, VE_REG_CONNECTION_KEEP_ALIVE).
    """

    service_uuid = "306b0001-b081-4037-83dc-e59fcc3cdfd0"

    def __init__(
        self,
        link: SimLink,
        address: str = "F9:3E:4C:00:00:09",
        name: str = "SmartSolar HQ2242SIM",
        passkey: int = 147258,
        keepalive_timeout: float = 10.0,
    ) -> None:
        super().__init__(link, address, name)
        from sunbox.protocols import vreg

        self._vreg = vreg
        self.keepalive_timeout = keepalive_timeout
        self.keepalives = 0
        self.gets = 0
        self.ignored_unpaired = 0
        self._deadline: dict[int, float] = {}
        self.values: dict[int, bytes] = self.initial_values()
        self.control_char = Characteristic(
            vreg.CONTROL,
            Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        self.commands_char = Characteristic(
            vreg.COMMANDS,
            Characteristic.Properties.WRITE
            | Characteristic.Properties.WRITE_WITHOUT_RESPONSE
            | Characteristic.Properties.NOTIFY,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        self.stream_char = Characteristic(vreg.STREAM, Characteristic.Properties.NOTIFY, Characteristic.READABLE, b"")
        self.device.add_service(Service(self.service_uuid, [self.control_char, self.commands_char, self.stream_char]))
        delegate = _DisplayPasskey(passkey)
        self.device.pairing_config_factory = lambda _c: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=delegate
        )

    def initial_values(self) -> dict[int, bytes]:
        """The VREG values this device answers with (little-endian, as carried)."""
        return {
            0xED8D: (1345).to_bytes(2, "little", signed=True),  # battery 13.45 V
            0xED8F: (52).to_bytes(2, "little", signed=True),  # 5.2 A
            0xED8E: (70).to_bytes(2, "little", signed=True),  # 70 W
            0xEDBB: bytes.fromhex("630e"),  # PV 36.83 V (birdie1/victron issue 16)
            0xEDBC: (7150).to_bytes(4, "little"),  # PV 71.50 W
            0xEDBD: (19).to_bytes(2, "little"),  # PV 1.9 A
            0xEDAD: (3).to_bytes(2, "little"),  # load 0.3 A
            0xEDD3: (42).to_bytes(2, "little"),  # yield today 0.42 kWh
            0xEDDA: b"\x00",
            0xEDDB: (2315).to_bytes(2, "little", signed=True),  # 23.15 degC
            0x0201: b"\x03",  # bulk
        }

    def _on_connection(self, connection: Connection) -> None:
        super()._on_connection(connection)
        self._deadline[connection.handle] = time.monotonic() + self.keepalive_timeout
        self._spawn(self._watchdog(connection))

    async def _watchdog(self, connection: Connection) -> None:
        while connection.handle in self.device.connections:
            if time.monotonic() > self._deadline.get(connection.handle, 0):
                LOG.info("sim SmartSolar: no keep-alive, dropping the link")
                try:
                    await asyncio.wait_for(connection.disconnect(), 5)
                except Exception:
                    LOG.debug("sim drop failed", exc_info=True)
                return
            await asyncio.sleep(0.1)

    async def _notify_split(self, connection: Connection, data: bytes) -> None:
        if self.silent:
            return
        chars = (self.commands_char, self.stream_char)
        for index, start in enumerate(range(0, len(data), 7)):
            await self.device.notify_subscriber(connection, chars[index % 2], data[start : start + 7])

    async def handle_write(self, connection: Connection, value: bytes) -> None:
        vreg = self._vreg
        if not connection.is_encrypted:
            self.ignored_unpaired += 1
            return
        messages = []
        remaining = value
        while remaining:
            try:
                message, used = vreg.parse_one(remaining)
            except (FrameError, vreg.IncompleteMessage):
                break
            messages.append(message)
            remaining = remaining[used:]
        reply = b""
        for message in messages:
            if message.kind == vreg.SET and message.vreg == vreg.KEEP_ALIVE and isinstance(message.value, bytes):
                self.keepalives += 1
                timeout = int.from_bytes(message.value, "little") / 1000
                self._deadline[connection.handle] = time.monotonic() + min(timeout, self.keepalive_timeout)
            elif message.kind == vreg.GET and isinstance(message.value, list):
                self.gets += 1
                for register in message.value:
                    if register in self.values:
                        reply += vreg.encode_value(register, self.values[register], message.interface)
                    else:
                        reply += bytes([vreg.STATUS, message.interface]) + vreg.cbor2.dumps(register) + b"\x01"
        if reply:
            await self._notify_split(connection, reply)


class PhoenixSimulator(SmartSolarSimulator):
    """A Phoenix inverter on the same VictronConnect GATT protocol as the SmartSolar.

    Battery and AC-output voltage are the raw bytes of a real Phoenix's notifications
    (Olen/VictronConnect ``phoenix.py``: ``08 03 19 ed 8d 42 35 05`` and
    ``08 03 19 22 00 42 dc 59``); the rest are plausible values for a 12 V 375 VA unit.
    """

    def __init__(self, link: SimLink, address: str = "F9:3E:4C:00:00:0A", name: str = "Phoenix Inverter SIM") -> None:
        super().__init__(link, address, name)

    def initial_values(self) -> dict[int, bytes]:
        return {
            0xED8D: bytes.fromhex("3505"),  # battery 13.33 V (capture)
            0x2200: bytes.fromhex("dc59"),  # AC out 230.04 V (capture)
            0x2201: (12).to_bytes(2, "little", signed=True),  # 1.2 A
            0x2204: (251).to_bytes(4, "little", signed=True),  # 251 W
            0x2205: (276).to_bytes(4, "little", signed=True),  # 276 VA
            0x2208: (5000).to_bytes(2, "little"),  # 50.00 Hz
            0x2202: bytes((230,)),  # nominal 230 V
            0x2203: (300).to_bytes(2, "little", signed=True),  # rated 300 W
            0x0200: b"\x02",  # mode: on
            0x0201: b"\x09",  # state: inverting
            0x031C: bytes(2),
            0x031E: bytes(2),
            0x0207: bytes(4),
            0x0120: (86_400).to_bytes(4, "little"),  # up one day
        }
