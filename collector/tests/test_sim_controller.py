"""The simulator's central controller answers HCI as Linux expects (sunbox.sim.controller).

These drive the controller with the HCI commands Linux sends (kernel
net/bluetooth/hci_sync.c: LE event mask with Enhanced Connection Complete, LE Create
Connection, its Cancel after the connect timeout, HCI_Reset on power-on) and read the
events back as bytes, parsed by bumble's HCI layer. The kernel itself meets this
controller in the BLE virtual Pi (tools/vpi/vpi.py ble-test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from bumble import hci

from sunbox.sim.controller import ENHANCED_CONNECTION_COMPLETE_BIT, HostController
from sunbox.sim.peripherals import LiTimeSimulator, SimWorld

LITIME = "C8:47:80:00:00:02"
ABSENT = "C8:47:80:00:00:99"


class Host:
    """The host side of the HCI: commands in, events parsed and kept."""

    def __init__(self) -> None:
        self.events: list[hci.HCI_Event] = []
        self.arrived = asyncio.Event()

    def on_packet(self, packet: bytes) -> None:
        parsed = hci.HCI_Packet.from_bytes(packet)
        assert isinstance(parsed, hci.HCI_Event)
        self.events.append(parsed)
        self.arrived.set()

    async def wait_for(self, kind: type[hci.HCI_Event], timeout: float = 5.0) -> hci.HCI_Event:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        self.events.remove(event)
                        return event
                self.arrived.clear()
                await self.arrived.wait()

    async def command_result(self, opcode: int, timeout: float = 5.0) -> int:
        """The status of the next Command Complete for ``opcode`` (events go out on the loop)."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if isinstance(event, hci.HCI_Command_Complete_Event) and event.command_opcode == opcode:
                        self.events.remove(event)
                        status: int = event.return_parameters.status
                        return status
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def rig() -> AsyncIterator[tuple[HostController, Host, LiTimeSimulator]]:
    world = SimWorld()
    litime = world.add(LiTimeSimulator(world.link, LITIME))
    host = Host()
    controller = HostController("central", link=world.link, public_address=world.central_address)
    controller.host = host
    await world.start()
    yield controller, host, litime  # type: ignore[misc]


def set_le_event_mask(controller: HostController, mask: int) -> None:
    controller.on_hci_packet(hci.HCI_LE_Set_Event_Mask_Command(le_event_mask=mask.to_bytes(8, "little")))


def create_connection(controller: HostController, address: str) -> None:
    controller.on_hci_packet(
        hci.HCI_LE_Create_Connection_Command(
            le_scan_interval=96,
            le_scan_window=96,
            initiator_filter_policy=0,
            peer_address_type=hci.Address.PUBLIC_DEVICE_ADDRESS,
            peer_address=hci.Address(address, hci.Address.PUBLIC_DEVICE_ADDRESS),
            own_address_type=hci.OwnAddressType.PUBLIC,
            connection_interval_min=24,
            connection_interval_max=40,
            max_latency=0,
            supervision_timeout=42,
            min_ce_length=0,
            max_ce_length=0,
        )
    )


async def test_linux_gets_the_enhanced_connection_complete_it_enabled(rig: tuple) -> None:
    controller, host, _ = rig
    set_le_event_mask(controller, 0x1F | ENHANCED_CONNECTION_COMPLETE_BIT)
    create_connection(controller, LITIME)
    event = await host.wait_for(hci.HCI_LE_Enhanced_Connection_Complete_Event)
    assert event.status == hci.HCI_ErrorCode.SUCCESS
    assert event.peer_address.to_string(False) == LITIME
    assert not any(isinstance(e, hci.HCI_LE_Connection_Complete_Event) for e in host.events)


async def test_a_host_that_did_not_enable_it_gets_the_legacy_event(rig: tuple) -> None:
    controller, host, _ = rig
    set_le_event_mask(controller, 0x1F)
    create_connection(controller, LITIME)
    event = await host.wait_for(hci.HCI_LE_Connection_Complete_Event)
    assert event.status == hci.HCI_ErrorCode.SUCCESS


async def test_cancel_ends_a_pending_connection_with_an_event_and_is_refused_when_none_is(rig: tuple) -> None:
    controller, host, _ = rig
    set_le_event_mask(controller, 0x1F | ENHANCED_CONNECTION_COMPLETE_BIT)
    cancel = hci.HCI_LE_Create_Connection_Cancel_Command()
    controller.on_hci_packet(cancel)
    assert await host.command_result(cancel.op_code) == hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR
    host.events.clear()

    create_connection(controller, ABSENT)  # nobody advertises there: stays pending
    await asyncio.sleep(0.3)
    controller.on_hci_packet(cancel)
    assert await host.command_result(cancel.op_code) == hci.HCI_ErrorCode.SUCCESS
    event = await host.wait_for(hci.HCI_LE_Enhanced_Connection_Complete_Event)
    assert event.status == hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR
    # the controller is free for the next connection
    create_connection(controller, LITIME)
    assert (await host.wait_for(hci.HCI_LE_Enhanced_Connection_Complete_Event)).status == hci.HCI_ErrorCode.SUCCESS


async def test_reset_drops_every_link_and_the_peer_sees_it_go(rig: tuple) -> None:
    controller, host, litime = rig
    set_le_event_mask(controller, 0x1F | ENHANCED_CONNECTION_COMPLETE_BIT)
    create_connection(controller, LITIME)
    await host.wait_for(hci.HCI_LE_Enhanced_Connection_Complete_Event)
    async with asyncio.timeout(5):
        while not litime.device.connections:
            await asyncio.sleep(0.05)
    host.events.clear()

    controller.on_hci_packet(hci.HCI_Reset_Command())
    assert await host.command_result(hci.HCI_RESET_COMMAND) == hci.HCI_ErrorCode.SUCCESS
    assert controller.links_dropped_by_reset == 1
    assert not controller.le_connections
    assert not any(isinstance(e, hci.HCI_Disconnection_Complete_Event) for e in host.events)
    async with asyncio.timeout(5):
        while litime.device.connections:
            await asyncio.sleep(0.05)
    # after the reset the host connects again (the event mask is set again, as Linux does)
    set_le_event_mask(controller, 0x1F | ENHANCED_CONNECTION_COMPLETE_BIT)
    create_connection(controller, LITIME)
    assert (await host.wait_for(hci.HCI_LE_Enhanced_Connection_Complete_Event)).status == hci.HCI_ErrorCode.SUCCESS


async def test_a_wedged_address_gets_the_stock_answers_that_wedge_linux(rig: tuple) -> None:
    controller, host, _ = rig
    controller.wedged = {LITIME.lower()}
    set_le_event_mask(controller, 0x1F | ENHANCED_CONNECTION_COMPLETE_BIT)
    create_connection(controller, LITIME)
    event = await host.wait_for(hci.HCI_LE_Connection_Complete_Event)  # not the event Linux waits for
    assert event.status == hci.HCI_ErrorCode.SUCCESS
    cancel = hci.HCI_LE_Create_Connection_Cancel_Command()
    controller.on_hci_packet(cancel)  # the kernel's, after its connect timeout
    assert await host.command_result(cancel.op_code) == hci.HCI_ErrorCode.SUCCESS
