"""The BlueZ pairing agent over a real D-Bus daemon (a private bus).

A stand-in for BlueZ's ``AgentManager1`` records the registration, then calls the agent's
``org.bluez.Agent1`` methods over D-Bus the way bluetoothd does during ``Pair()``. There is
no kernel Bluetooth here, so bluetoothd itself cannot run; the agent is exercised against
the real BlueZ in the virtual-Pi run.
"""

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, method

from sunbox.ble import agent

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="dbus-daemon is not installed")


class FakeAgentManager(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.bluez.AgentManager1")
        self.calls: list[tuple[str, str, str]] = []

    @method()  # type: ignore[misc]
    def RegisterAgent(self, path: "o", capability: "s") -> None:  # type: ignore[name-defined] # noqa: F821
        self.calls.append(("RegisterAgent", path, capability))

    @method()  # type: ignore[misc]
    def RequestDefaultAgent(self, path: "o") -> None:  # type: ignore[name-defined] # noqa: F821
        self.calls.append(("RequestDefaultAgent", path, ""))


@pytest.fixture
async def bus_address(tmp_path: Path) -> AsyncIterator[str]:
    address = f"unix:path={tmp_path}/bus"
    config = tmp_path / "bus.conf"
    config.write_text(
        "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
        " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>"
        f"<busconfig><type>session</type><listen>{address}</listen>"
        "<policy context='default'><allow send_destination='*' eavesdrop='true'/>"
        "<allow eavesdrop='true'/><allow own='*'/><allow user='*'/></policy></busconfig>"
    )
    daemon = await asyncio.create_subprocess_exec("dbus-daemon", "--nofork", f"--config-file={config}")
    for _ in range(100):
        if (tmp_path / "bus").exists():
            break
        await asyncio.sleep(0.05)
    try:
        yield address
    finally:
        daemon.terminate()
        await asyncio.wait_for(daemon.wait(), 5)


async def test_agent_registers_and_answers_only_configured_devices(bus_address: str) -> None:
    bluez = await MessageBus(bus_address=bus_address).connect()
    manager = FakeAgentManager()
    bluez.export("/org/bluez", manager)
    await bluez.request_name("org.bluez")
    sunbox = await MessageBus(bus_address=bus_address).connect()
    try:
        passkeys = {"F9:3E:4C:00:00:09": 0, "a4:c1:37:00:00:01": 123456}
        await agent.register(sunbox, passkeys)
        assert manager.calls == [
            ("RegisterAgent", agent.AGENT_PATH, "KeyboardOnly"),
            ("RequestDefaultAgent", agent.AGENT_PATH, ""),
        ]
        # bluetoothd calls the agent during Pair()
        introspection = await bluez.introspect(sunbox.unique_name, agent.AGENT_PATH)
        proxy = bluez.get_proxy_object(sunbox.unique_name, agent.AGENT_PATH, introspection)
        agent1 = proxy.get_interface("org.bluez.Agent1")
        assert await agent1.call_request_passkey("/org/bluez/hci0/dev_F9_3E_4C_00_00_09") == 0
        assert await agent1.call_request_passkey("/org/bluez/hci0/dev_A4_C1_37_00_00_01") == 123456
        with pytest.raises(DBusError, match="not a configured device") as refused:
            await agent1.call_request_passkey("/org/bluez/hci0/dev_11_22_33_44_55_66")
        assert refused.value.type == "org.bluez.Error.Rejected"
        await agent1.call_request_confirmation("/org/bluez/hci0/dev_A4_C1_37_00_00_01", 123456)
        with pytest.raises(DBusError, match="not the configured one"):
            await agent1.call_request_confirmation("/org/bluez/hci0/dev_A4_C1_37_00_00_01", 111111)
        with pytest.raises(DBusError):
            await agent1.call_request_authorization("/org/bluez/hci0/dev_11_22_33_44_55_66")
        # issue 16, finding 11: no Just-Works pairing and no service (HID, audio), even for a configured device
        with pytest.raises(DBusError, match="without a passkey"):
            await agent1.call_request_authorization("/org/bluez/hci0/dev_A4_C1_37_00_00_01")
        hid = "00001124-0000-1000-8000-00805f9b34fb"
        with pytest.raises(DBusError, match="not offered") as service:
            await agent1.call_authorize_service("/org/bluez/hci0/dev_A4_C1_37_00_00_01", hid)
        assert service.value.type == "org.bluez.Error.Rejected"
        await agent1.call_cancel()
    finally:
        sunbox.disconnect()
        bluez.disconnect()


def test_device_paths() -> None:
    assert agent.address_of("/org/bluez/hci0/dev_F9_3E_4C_00_00_09") == "F9:3E:4C:00:00:09"
    assert agent.address_of("/org/bluez/hci1/dev_a4_c1_37_00_00_01") == "A4:C1:37:00:00:01"
    assert agent.address_of("/org/bluez/hci0") is None
