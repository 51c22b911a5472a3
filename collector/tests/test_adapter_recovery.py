"""The adapter recovery ladder (sunbox.ble.adapter) and its privileged helper's protocol
(sunbox.ble.kernel_recovery, `sunbox adapter-recovery serve`).

The rungs' effect on a real kernel and BlueZ is proven in the BLE virtual Pi
(tools/vpi/vpi.py ble-test, docs/virtual-pi.md); here: the helper as its own process on
a real Unix socket refuses what it must refuse and reports a failed rung, and the
ladder climbs past a rung that hangs or fails.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sunbox.ble.adapter import AdapterSupervisor
from sunbox.ble.kernel_recovery import RecoveryError, parent_device, rebind, request, rfkill_event


@pytest.fixture
def helper(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "recovery.sock"
    env = {**os.environ, "PATH": "/nonexistent"}  # no btmgmt: the mgmt rung must fail cleanly
    process = subprocess.Popen(
        [sys.executable, "-m", "sunbox.cli", "adapter-recovery", "serve", "--socket", str(path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    yield path
    process.terminate()
    process.wait(10)


async def test_the_helper_refuses_what_is_not_an_adapter_or_a_rung(helper: Path) -> None:
    assert oct((await asyncio.to_thread(helper.stat)).st_mode & 0o777) == "0o600"
    with pytest.raises(RecoveryError, match="not hci<N>"):
        await request(helper, "eth0", "mgmt")
    with pytest.raises(RecoveryError, match="not hci<N>"):
        await request(helper, "hci0; reboot", "mgmt")
    with pytest.raises(RecoveryError, match="not one of mgmt, rfkill, rebind"):
        await request(helper, "hci0", "usb")
    # a rung that cannot run says why, and the helper keeps answering
    with pytest.raises(RecoveryError, match="btmgmt"):
        await request(helper, "hci0", "mgmt")
    with pytest.raises(RecoveryError, match="rfkill"):
        await request(helper, "hci97", "rfkill")


def test_the_rfkill_event_is_the_kernels_struct() -> None:
    # include/uapi/linux/rfkill.h: __u32 idx; __u8 type, op, soft, hard (8 bytes, native order)
    assert rfkill_event(3, True) == struct.pack("=IBBBB", 3, 2, 2, 1, 0)
    assert len(rfkill_event(0, False)) == 8 and rfkill_event(0, False)[6] == 0


async def test_the_ladder_climbs_past_a_hanging_and_a_failing_rung() -> None:
    calls: list[str] = []

    async def hangs() -> None:  # bluetoothd stuck behind a Disconnect
        calls.append("dbus")
        await asyncio.sleep(3600)

    async def fails() -> None:
        calls.append("mgmt")
        raise RecoveryError("btmgmt power off: exit 1")

    async def works() -> None:
        calls.append("rfkill")

    supervisor = AdapterSupervisor(
        "hci0", hangs, 2, 0, [("mgmt", fails, 1.0), ("rfkill", works, 1.0)], power_cycle_timeout_s=0.5
    )
    assert not await supervisor.report_failure()  # 1 of 2
    started = time.monotonic()
    assert await supervisor.report_failure()
    assert calls == ["dbus", "mgmt", "rfkill"] and time.monotonic() - started < 5
    assert supervisor.recoveries == {"rfkill": 1} and supervisor.rung_failures == 2


async def test_a_stuck_disconnect_recovers_at_once_from_the_kernel_rung() -> None:
    """bluetoothd sends one management command at a time: behind a stuck Disconnect a
    D-Bus power-off only queues (docs/virtual-pi.md), so the ladder starts at the kernel."""
    calls: list[str] = []

    async def dbus() -> None:
        calls.append("dbus")

    async def mgmt() -> None:
        calls.append("mgmt")

    supervisor = AdapterSupervisor("hci0", dbus, 6, 0, [("mgmt", mgmt, 1.0)])
    assert await supervisor.report_stuck_disconnect("battery")
    assert calls == ["mgmt"] and supervisor.recoveries == {"mgmt": 1} and supervisor.power_cycles == 1
    # the count of failed connections starts over after it
    assert not await supervisor.report_failure()
    # with no helper there is only the D-Bus rung, and it is tried
    alone = AdapterSupervisor("hci0", dbus, 6, 0)
    assert await alone.report_stuck_disconnect("battery") and calls == ["mgmt", "dbus"]
    # with no way to recover at all, nothing is claimed
    assert not await AdapterSupervisor("hci0", None, 6, 0).report_stuck_disconnect("battery")


async def test_a_stuck_disconnect_held_back_by_the_rate_limit_escalates_at_the_next_failure() -> None:
    calls: list[str] = []

    async def dbus() -> None:
        calls.append("dbus")

    async def mgmt() -> None:
        calls.append("mgmt")

    supervisor = AdapterSupervisor("hci0", dbus, 6, 0.3, [("mgmt", mgmt, 1.0)])
    assert not await supervisor.report_failure()  # 1 of 6: no reason yet
    assert await supervisor.report_stuck_disconnect("battery") and calls == ["mgmt"]
    # a second one within the rate limit: held back, remembered
    assert not await supervisor.report_stuck_disconnect("mppt") and calls == ["mgmt"]
    assert not await supervisor.report_failure()
    await asyncio.sleep(0.35)
    # past the limit, the first failed connection escalates, from the kernel rung again
    assert await supervisor.report_failure() and calls == ["mgmt", "mgmt"]
    # held back again, then a good connection in between: the sign is cleared
    assert not await supervisor.report_stuck_disconnect("mppt")
    supervisor.report_success()
    await asyncio.sleep(0.35)
    assert not await supervisor.report_failure() and calls == ["mgmt", "mgmt"]


async def test_failed_connections_to_devices_not_heard_escalate_sooner() -> None:
    """A device BlueZ neither signals nor connects (seen after a collector restart in the
    BLE virtual Pi): two such failures in a row recover the adapter, where failures to
    devices that are heard wait for the full count."""
    calls: list[str] = []

    async def dbus() -> None:
        calls.append("dbus")

    supervisor = AdapterSupervisor("hci0", dbus, 6, 0, power_cycle_after_unheard=2)
    assert not await supervisor.report_failure(unheard=True)
    assert await supervisor.report_failure(unheard=True) and calls == ["dbus"]
    # a heard failure in between starts the unheard count over; the full count still holds
    assert not await supervisor.report_failure(unheard=True)
    assert not await supervisor.report_failure(unheard=False)
    assert not await supervisor.report_failure(unheard=True)
    assert calls == ["dbus"]
    supervisor.report_success()
    for _ in range(5):
        assert not await supervisor.report_failure()
    assert await supervisor.report_failure() and calls == ["dbus", "dbus"]


async def test_the_rebind_rung_unbinds_and_binds_the_parent_device_and_waits_for_the_adapter(tmp_path: Path) -> None:
    """On a sysfs tree shaped like a Pi 5's (hci0's device is the UART's serdev device
    serial0-0, driver hci_uart_bcm): the device's name goes to unbind, then to bind, and
    the rung waits for hci0 to be registered again. The kernel's side of it only a real
    Pi shows (docs/ble.md)."""
    driver = tmp_path / "bus/serial/drivers/hci_uart_bcm"
    device = tmp_path / "devices/platform/serial0/serial0-0"
    driver.mkdir(parents=True)
    device.mkdir(parents=True)
    (device / "driver").symlink_to(driver)
    classes = tmp_path / "class/bluetooth"
    adapter = classes / "hci0"
    adapter.mkdir(parents=True)
    (adapter / "device").symlink_to(device)
    writes: list[tuple[str, str]] = []
    for name in ("unbind", "bind"):
        (driver / name).write_text("")
    assert parent_device("hci0", classes) == (driver.resolve(), "serial0-0")
    await rebind("hci0", classes, wait_s=1)
    for name in ("unbind", "bind"):
        writes.append((name, (driver / name).read_text()))
    assert writes == [("unbind", "serial0-0"), ("bind", "serial0-0")]
    assert (driver / "unbind").stat().st_mtime_ns <= (driver / "bind").stat().st_mtime_ns


def test_a_virtual_adapter_or_a_driverless_device_has_nothing_to_rebind(tmp_path: Path) -> None:
    (tmp_path / "hci0").mkdir()  # hci_vhci: no parent device
    with pytest.raises(RecoveryError, match="virtual adapter"):
        parent_device("hci0", tmp_path)
    device = tmp_path / "usb1-1.4:1.0"
    device.mkdir()
    (tmp_path / "hci0" / "device").symlink_to(device)
    with pytest.raises(RecoveryError, match="bound to no driver"):
        parent_device("hci0", tmp_path)
