"""A bumble ``LocalLink`` that carries LE ACL data from the address the connection uses.

bumble 0.0.236 ``LocalLink.send_acl_data`` always sends LE ACL data from the sender's
*random* address, while a connection made with the public address is keyed by the
public one: the receiver logs "no connection for <random address>" and GATT never
starts (found in the virtual-Pi spike, ``shared/spikes/virtual-pi-ble/README.md``).
This subclass looks the connection up and uses its own address instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bumble import core, hci
from bumble.link import LocalLink

if TYPE_CHECKING:
    from bumble.controller import Controller


class SimLink(LocalLink):  # type: ignore[misc]
    """LocalLink with the LE source-address fix; otherwise unchanged."""

    def send_acl_data(
        self,
        sender_controller: Controller,
        destination_address: hci.Address,
        transport: core.PhysicalTransport,
        data: bytes,
    ) -> None:
        if transport != core.PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        source = sender_controller.random_address
        for connection in sender_controller.le_connections.values():
            if connection.peer_address == destination_address:
                source = connection.self_address
                break
        destination = self.find_le_controller(destination_address)
        if destination is not None:
            asyncio.get_running_loop().call_soon(destination.on_link_acl_data, source, transport, data)
