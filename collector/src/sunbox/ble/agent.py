"""A BlueZ pairing agent answering each configured device's BLE passkey (dbus-fast).

bleak has no pairing agent. Devices that need passkey pairing (a SmartSolar, default
000000; newer JBD firmware) ask BlueZ for a passkey during ``Device1.Pair()``. BlueZ
asks the default agent, through ``org.bluez.Agent1.RequestPasskey(device)``.

This agent registers with ``org.bluez.AgentManager1`` as the default agent, with
capability ``KeyboardOnly``. It returns the configured passkey for configured
addresses and rejects every other device with ``org.bluez.Error.Rejected``, so nobody
else can pair with the appliance through it. It also rejects pairing without a passkey
(``RequestAuthorization``) and every service authorization (``AuthorizeService``: a HID
keyboard or an audio profile), from configured devices too. The interface is BlueZ's
``doc/org.bluez.Agent.rst`` (``doc/agent-api.txt`` before 5.70).

Note: this module does not use ``from __future__ import annotations``, because dbus-fast
reads D-Bus signatures from the annotations.
"""

import logging
import re
from typing import Any

from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, method

LOG = logging.getLogger(__name__)

AGENT_PATH = "/org/sunbox/agent"
CAPABILITY = "KeyboardOnly"
_DEVICE_PATH = re.compile(r"/dev_([0-9A-F]{2}(?:_[0-9A-F]{2}){5})$", re.IGNORECASE)


def address_of(device_path: str) -> str | None:
    """``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`` -> ``AA:BB:CC:DD:EE:FF`` (None if not a device)."""
    match = _DEVICE_PATH.search(device_path)
    return None if match is None else match.group(1).replace("_", ":").upper()


class PasskeyAgent(ServiceInterface):  # type: ignore[misc]
    """``org.bluez.Agent1`` for the configured ``{MAC: passkey}``."""

    def __init__(self, passkeys: dict[str, int]) -> None:
        super().__init__("org.bluez.Agent1")
        self.passkeys = {address.upper(): passkey for address, passkey in passkeys.items()}
        self.requests: list[tuple[str, str]] = []

    def _known(self, device: str, what: str) -> str:
        address = address_of(device)
        self.requests.append((what, device))
        if address is None or address not in self.passkeys:
            LOG.warning("pairing agent: rejected %s from %s (not configured)", what, device)
            raise DBusError("org.bluez.Error.Rejected", f"{device} is not a configured device")
        return address

    @method()
    def Release(self) -> None:
        LOG.info("pairing agent released by BlueZ")

    @method()
    def RequestPasskey(self, device: "o") -> "u":  # type: ignore[name-defined] # noqa: F821
        address = self._known(device, "passkey")
        LOG.info("pairing agent: passkey for %s", address)
        return self.passkeys[address]

    @method()
    def DisplayPasskey(self, device: "o", passkey: "u", entered: "q") -> None:  # type: ignore[name-defined] # noqa: F821
        return None

    @method()
    def RequestConfirmation(self, device: "o", passkey: "u") -> None:  # type: ignore[name-defined] # noqa: F821
        address = self._known(device, "confirmation")
        if passkey != self.passkeys[address]:
            raise DBusError("org.bluez.Error.Rejected", f"passkey {passkey:06d} is not the configured one")

    @method()
    def RequestAuthorization(self, device: "o") -> None:  # type: ignore[name-defined] # noqa: F821
        # "Just Works" pairing started by the other side: Sunbox pairs only by passkey,
        # and only when it asks, so this is never one of ours
        LOG.warning("pairing agent: refused pairing without a passkey from %s", address_of(device) or device)
        raise DBusError("org.bluez.Error.Rejected", "pairing without a passkey is refused")

    @method()
    def AuthorizeService(self, device: "o", uuid: "s") -> None:  # type: ignore[name-defined] # noqa: F821
        # a device asking to use a profile of the Pi (HID keyboard, audio, serial): the
        # collector is a central that reads GATT and needs none of them, even from its own devices
        LOG.warning("pairing agent: refused service %s to %s", uuid, address_of(device) or device)
        raise DBusError("org.bluez.Error.Rejected", f"service {uuid} is not offered")

    @method()
    def RequestPinCode(self, device: "o") -> "s":  # type: ignore[name-defined] # noqa: F821
        self._known(device, "pin code")
        raise DBusError("org.bluez.Error.Rejected", "legacy PIN pairing is not used")

    @method()
    def DisplayPinCode(self, device: "o", pincode: "s") -> None:  # type: ignore[name-defined] # noqa: F821
        return None

    @method()
    def Cancel(self) -> None:
        LOG.info("pairing agent: BlueZ cancelled a request")


async def register(bus: Any, passkeys: dict[str, int], path: str = AGENT_PATH) -> PasskeyAgent:
    """Export the agent on ``bus`` (a connected dbus-fast ``MessageBus`` to the system bus)
    and make it BlueZ's default agent.

    Raises:
        dbus_fast.errors.DBusError: BlueZ refused (e.g. another agent at this path).
    """
    agent = PasskeyAgent(passkeys)
    bus.export(path, agent)
    introspection = await bus.introspect("org.bluez", "/org/bluez")
    manager = bus.get_proxy_object("org.bluez", "/org/bluez", introspection).get_interface("org.bluez.AgentManager1")
    await manager.call_register_agent(path, CAPABILITY)
    await manager.call_request_default_agent(path)
    LOG.info("pairing agent registered for %d device(s)", len(agent.passkeys))
    return agent
