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
from sunbox.ble.kernel_recovery import RecoveryError, request, rfkill_event


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
    with pytest.raises(RecoveryError, match="not one of mgmt, rfkill"):
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
