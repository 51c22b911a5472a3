"""Victron SmartSolar, Phoenix and other Smart products over the VictronConnect GATT protocol.

Service 306b0001-b081-4037-83dc-e59fcc3cdfd0. Commands are written to 306b0003.
Answers and the stream arrive on 306b0003 and 306b0004 and share one reassembly
buffer (:class:`sunbox.protocols.vreg.VregAssembler`). The device needs BLE passkey
pairing first (default 000000; ``passkey`` in the config).

Per connection: pair, then the init sequence from a VictronConnect trace, which
enables the values. Source: ``tRackIT-Systems/pysmartsolar`` ``smartsolar/__init__.py``,
``docs/protocols.md`` section 4.1. Per poll: a keep-alive (SET of VREG 0x0093, so the
device does not drop the link), then a GET of every VREG of the driver's family in
:data:`sunbox.protocols.vreg_registers.FAMILIES` (a SmartSolar reads the solar-charger
registers, a Phoenix inverter the AC-output ones). The answers are collected until each
VREG has answered or said it does not know it. This is unofficial, reverse-engineered
protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from bleak import BleakClient

from sunbox.aio import within
from sunbox.ble.gatt import GattLink, LinkTimeout
from sunbox.model import Kind
from sunbox.protocols import vreg
from sunbox.protocols.errors import FrameError
from sunbox.protocols.vedirect import DEVICE_STATES
from sunbox.protocols.vreg_registers import FAMILIES

from .base import AuthenticationError, Driver

#: written to 306b0002 and 306b0003 after pairing (pysmartsolar, from a BT trace)
INIT_CONTROL = (bytes.fromhex("fa80ff"), bytes.fromhex("f980"))
INIT_COMMANDS = (bytes.fromhex("01"), bytes.fromhex("0300"), bytes.fromhex("03010303"))


class VregLink(GattLink):
    """A :class:`GattLink` listening on both 306b0003 and 306b0004, one message stream."""

    def __init__(self, client: BleakClient, timeout: float) -> None:
        super().__init__(client, vreg.COMMANDS, vreg.COMMANDS, timeout, write_with_response=True)
        self.assembler = vreg.VregAssembler()
        self.messages: asyncio.Queue[vreg.Message] = asyncio.Queue()

    async def start(self) -> None:
        for uuid in (vreg.COMMANDS, vreg.STREAM):
            await within(self.client.start_notify(uuid, self._on_chunk), self.timeout)

    def _on_chunk(self, _characteristic: object, data: bytearray) -> None:
        for message in self.assembler.feed(bytes(data)):
            self.messages.put_nowait(message)

    async def write_to(self, uuid: str, payload: bytes) -> None:
        await within(self.client.write_gatt_char(uuid, payload, response=True), self.timeout)


class SmartSolarDriver(Driver):
    """A SmartSolar / BlueSolar MPPT (``charger`` readings)."""

    name = "smartsolar"
    kind: ClassVar[Kind] = "charger"
    #: key of :data:`~sunbox.protocols.vreg_registers.FAMILIES`: which VREGs, which names
    family = "solar_charger"
    service_uuid = vreg.SERVICE
    write_uuid = vreg.COMMANDS
    notify_uuid = vreg.COMMANDS
    name_prefixes = ("SmartSolar",)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._link: VregLink | None = None

    @property
    def skipped_bytes(self) -> int:
        return 0 if self._link is None else self._link.assembler.skipped

    def make_link(self, client: BleakClient, timeout: float) -> GattLink:
        self._link = VregLink(client, timeout)
        return self._link

    def _keepalive_ms(self) -> int:
        return int(max(10_000, 3 * self.config.poll_interval_s * 1000))

    async def setup(self, link: GattLink) -> None:
        assert isinstance(link, VregLink)
        try:
            await link.client.pair()
        except Exception as exc:  # bleak raises BleakError; bumble its own pairing errors
            raise AuthenticationError(f"passkey pairing failed: {exc}") from exc
        for payload in INIT_CONTROL:
            await link.write_to(vreg.CONTROL, payload)
        for payload in INIT_COMMANDS:
            await link.write_to(vreg.COMMANDS, payload)
        await link.write_to(vreg.COMMANDS, vreg.keep_alive(self._keepalive_ms()))

    async def poll(self, link: GattLink) -> dict[str, Any]:
        assert isinstance(link, VregLink)
        while not link.messages.empty():
            link.messages.get_nowait()
        await link.write_to(vreg.COMMANDS, vreg.keep_alive(self._keepalive_ms()))
        names = FAMILIES[self.family]
        wanted = set(names)
        for register in sorted(wanted):
            await link.write_to(vreg.COMMANDS, vreg.encode_get(register))
        values: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + link.timeout
        while wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if values:
                    break  # a partial answer: publish what came, the rest is None
                raise LinkTimeout("no VREG answer")
            try:
                message = await within(link.messages.get(), remaining)
            except TimeoutError:
                continue
            if message.vreg not in wanted:
                continue
            if message.kind == vreg.STATUS:
                wanted.discard(message.vreg)
                values.setdefault(names[message.vreg], None)
                continue
            named = vreg.value_of(message, names)  # raises FrameError on a malformed value
            if named is not None:
                wanted.discard(message.vreg)
                values[named[0]] = named[1]
        for register in wanted:
            values.setdefault(names[register], None)
        if not any(v is not None for v in values.values()):
            raise FrameError("the device answered no VREG")
        for code_name, text_name in (("charge_state_code", "charge_state"), ("device_state_code", "device_state")):
            code = values.get(code_name)
            if code is not None:
                values[text_name] = DEVICE_STATES.get(code, f"unknown_{code}")
        return values


class PhoenixDriver(SmartSolarDriver):
    """A Phoenix inverter (``inverter`` readings: AC output, device state and mode).

    Same VictronConnect GATT protocol and pairing as the SmartSolar (Olen/VictronConnect
    ``phoenix.py`` reads a Phoenix over the same service and init sequence).
    """

    name = "phoenix"
    kind: ClassVar[Kind] = "inverter"
    family = "inverter"
    name_prefixes = ("Phoenix",)
