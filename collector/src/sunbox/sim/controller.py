"""The central-side virtual controller that Linux's Bluetooth stack believes.

bumble 0.0.236's ``Controller`` answers a host well enough for bumble's own host, but not
for Linux (traced with btmon and ``bluetoothd -d`` in the BLE virtual Pi, kernel 6.1,
BlueZ 5.66; issue 35):

* It advertises LL Privacy and extended advertising, so Linux enables and waits for
  *LE Enhanced Connection Complete* after each connect (``use_enhanced_conn_complete``
  in the kernel's ``net/bluetooth/hci_sync.c``), but bumble sends the legacy *LE
  Connection Complete*. The kernel brings the link up, times out after its connect
  timeout, sends *LE Create Connection Cancel* and marks the live link cancelled; the
  later *Disconnect* is never sent to the controller, bluetoothd's MGMT queue stalls
  behind it, and ``Adapter1.Powered`` never completes.
* *LE Create Connection Cancel* is answered with success whatever the state, and the
  pending connection stays pending (Core spec v5.4, Vol 4, Part E, 7.8.13: with none in
  progress the answer is Command Disallowed; with one, Command Complete then a
  connection complete event with status Unknown Connection Identifier).
* *HCI_Reset* keeps every link, scan and advertising state (spec 7.3.2: a reset puts the
  controller back to its initial state; the links are gone, the peers see their
  supervision timeout).

It also reports every advertisement at the same RSSI (-50 dBm). A real radio never
does. BlueZ emits ``PropertiesChanged`` for a device it already knows only when
something changed, and for RSSI only by at least 8 dB (``RSSI_THRESHOLD`` in BlueZ's
``src/device.c``), so a collector started after BlueZ had met a device (bonded, or seen
by an earlier run) never heard of it again: "not seen for 30 s" (issue 35).
:class:`HostController` reports RSSI with a radio's spread, -64 to -50 dBm.

:class:`HostController` fixes those. ``wedged`` is the fault switch: a peer
address put in it gets bumble's original answers again (the legacy event, a Cancel
accepted with no event), which reproduces the wedge on demand.

:func:`open_vhci` is a ``/dev/vhci`` transport that keeps ``hci0`` while the host has
the adapter powered down or rfkill-blocked. The kernel refuses frames from the
controller then (``hci_recv_frame`` returns ``ENXIO``); bumble's file transport takes
that write error as fatal and closes the file, which unregisters ``hci0``. Here such
frames are dropped and counted, as a real controller's would be lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import random
from typing import Any

from bumble import hci, ll
from bumble.controller import Controller
from bumble.transport.common import StreamPacketSource, Transport

LOG = logging.getLogger(__name__)

#: LE event mask bit of LE Enhanced Connection Complete (subevent 0x0A: bit 0x0A - 1)
ENHANCED_CONNECTION_COMPLETE_BIT = 1 << (0x0A - 1)
#: vhci's vendor packet type and the controller type "primary" (drivers/bluetooth/hci_vhci.c)
VHCI_VENDOR_PKT = 0xFF
VHCI_PRIMARY = 0x00


class HostController(Controller):  # type: ignore[misc]
    """A bumble ``Controller`` with Linux's expectations met (see the module docstring).

    ``wedged``: peer addresses (text such as ``"A4:C1:37:00:00:01"``, any case, any
    address type) whose next connections wedge the kernel's link as bumble's stock
    controller does. ``resets`` counts HCI_Reset
    commands; ``links_dropped_by_reset`` the links they dropped.
    """

    #: spread of the reported RSSI below bumble's -50 dBm, in dB (more than BlueZ's 8 dB threshold)
    rssi_jitter_db = 14

    def __init__(self, *args: Any, seed: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = random.Random(seed)
        self.wedged: set[str] = set()
        self.resets = 0
        self.links_dropped_by_reset = 0
        self._last_connected_wedged = False

    def _enhanced(self) -> bool:
        return bool(self.le_event_mask & ENHANCED_CONNECTION_COMPLETE_BIT)

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if isinstance(packet, hci.HCI_LE_Connection_Complete_Event) and packet.role == hci.Role.CENTRAL:
            wedged = packet.peer_address.to_string(False).upper() in {a.upper() for a in self.wedged}
            self._last_connected_wedged = wedged
            if wedged:
                LOG.warning("sim controller: %s wedged: legacy connection complete", packet.peer_address)
            elif self._enhanced():
                packet = enhanced(packet)
        elif isinstance(packet, hci.HCI_LE_Advertising_Report_Event | hci.HCI_LE_Extended_Advertising_Report_Event):
            packet = type(packet)([self._jittered(report) for report in packet.reports])
        super().send_hci_packet(packet)

    def _jittered(self, report: Any) -> Any:
        return dataclasses.replace(report, rssi=report.rssi + self._rng.randint(-self.rssi_jitter_db, 0))

    def on_hci_le_create_connection_cancel_command(self, command: hci.HCI_Command) -> hci.HCI_StatusReturnParameters:
        pending: Any = self.pending_le_connection  # type: ignore[has-type]
        if pending is None:
            if self._last_connected_wedged:
                # bumble's stock answer: the kernel goes on to mark its live link cancelled
                return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # after the Command Complete that the return value becomes
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_reset_command(self, command: hci.HCI_Command) -> hci.HCI_StatusReturnParameters:
        self.resets += 1
        for connection in list(self.le_connections.values()):
            # the peer's controller sees the link go (as a supervision timeout); the host
            # that sent the reset gets no event for it
            connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR))
            self.links_dropped_by_reset += 1
        self.le_connections.clear()
        self.pending_le_connection = None
        self.le_scan_enable = False
        self.le_event_mask = 0
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        result: hci.HCI_StatusReturnParameters = super().on_hci_reset_command(command)
        return result


def enhanced(packet: hci.HCI_LE_Connection_Complete_Event) -> hci.HCI_LE_Enhanced_Connection_Complete_Event:
    """The same connection as LE Enhanced Connection Complete (no resolvable private
    addresses: the simulated links use public addresses)."""
    return hci.HCI_LE_Enhanced_Connection_Complete_Event(
        status=packet.status,
        connection_handle=packet.connection_handle,
        role=packet.role,
        peer_address_type=packet.peer_address_type,
        peer_address=packet.peer_address,
        local_resolvable_private_address=hci.Address.ANY_RANDOM,
        peer_resolvable_private_address=hci.Address.ANY_RANDOM,
        connection_interval=packet.connection_interval,
        peripheral_latency=packet.peripheral_latency,
        supervision_timeout=packet.supervision_timeout,
        central_clock_accuracy=packet.central_clock_accuracy,
    )


class _VhciSink:
    """Writes controller-to-host frames to ``/dev/vhci``; frames the kernel refuses while
    the adapter is down are dropped and counted (``dropped``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dropped = 0

    def on_packet(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.EAGAIN, errno.ENODEV):
                raise
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                LOG.info("vhci: %d frames dropped while the host has the adapter down", self.dropped)


class VhciTransport(Transport):  # type: ignore[misc]
    """``/dev/vhci`` opened non-blocking, read through the event loop."""

    def __init__(self, fd: int, source: StreamPacketSource, sink: _VhciSink) -> None:
        super().__init__(source, sink)
        self.fd = fd

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def open_vhci(path: str = "/dev/vhci") -> VhciTransport:
    """Open ``path`` and register a primary controller; ``hci<N>`` appears when the
    kernel has read the vendor packet. Raises ``OSError`` when the device cannot be opened
    (no ``hci_vhci`` module, no permission)."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    source = StreamPacketSource()
    sink = _VhciSink(fd)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data and data[0] == VHCI_VENDOR_PKT:
            if len(data) == 4:
                LOG.info("vhci: registered as hci%d", data[2] << 8 | data[3])
            return
        if data:
            source.data_received(data)

    asyncio.get_running_loop().add_reader(fd, readable)
    sink.on_packet(bytes([VHCI_VENDOR_PKT, VHCI_PRIMARY]))
    return VhciTransport(fd, source, sink)
