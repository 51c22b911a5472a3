"""Per-adapter coordination: serialised connection setup, backoff, power-cycle escalation.

Escalation: when ``power_cycle_after`` connection attempts in a row have failed (any
device on this adapter; a success resets the count), sooner when
``power_cycle_after_unheard`` of them in a row were to devices the scanner has not heard
since they were last connected (BlueZ not signalling them while it fails to connect:
seen after a collector restart in the BLE virtual Pi, docs/virtual-pi.md), or at once
when a disconnect did not
complete in its bound (the wedge's own sign, bluez/bluez#932), the adapter is recovered, at
most once per ``power_cycle_min_interval_s``, by a ladder of rungs, each bounded: first
``org.bluez.Adapter1.Powered`` false then true over D-Bus (dbus-fast, already a bleak
dependency; the workaround for BlueZ keeping a dead link "connected", bluez/bluez#947,
#932; see ``docs/ble.md``); when that fails or does not answer (bluetoothd stuck behind
a Disconnect that never completes), the kernel-level rungs of
:mod:`sunbox.ble.kernel_recovery` through its privileged helper, until one succeeds.
After a stuck disconnect the ladder starts at the kernel rungs when there are any:
bluetoothd sends one management command at a time, so a D-Bus power-off would only queue
behind the Disconnect that is stuck (traced in the BLE virtual Pi, docs/virtual-pi.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from sunbox.aio import within

LOG = logging.getLogger(__name__)

PowerCycle = Callable[[], Awaitable[None]]
#: a rung of the recovery ladder: (name, action, bound in seconds)
Rung = tuple[str, PowerCycle, float]


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0.5, 1) * min(max, initial * 2**n)``."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return float(base * self._rng.uniform(0.5, 1.0))


class AdapterSupervisor:
    """Shared by every device link on one adapter."""

    def __init__(
        self,
        name: str,
        power_cycle: PowerCycle | None,
        power_cycle_after: int,
        min_interval_s: float,
        ladder: list[Rung] | None = None,
        power_cycle_timeout_s: float = 30.0,
        power_cycle_after_unheard: int | None = None,
    ) -> None:
        self.name = name
        self.connect_lock = asyncio.Lock()
        self._power_cycle = power_cycle
        #: rungs after the power-cycle, tried in order while the previous one fails
        self._ladder = ladder or []
        self._power_cycle_timeout = power_cycle_timeout_s
        #: recoveries that succeeded, per rung ("dbus" for the power-cycle), and rungs that failed
        self.recoveries: dict[str, int] = {}
        self.rung_failures = 0
        self._after = power_cycle_after
        self._min_interval = min_interval_s
        self._failures = 0
        self._after_unheard = power_cycle_after_unheard or power_cycle_after
        #: failed connections in a row to devices not heard since their last connection
        self._unheard = 0
        #: the device whose disconnect did not complete, since the last good connection
        self._stuck: str | None = None
        self._last_cycle: float | None = None
        self.power_cycles = 0
        self._recovered = asyncio.Event()

    @property
    def recovered(self) -> asyncio.Event:
        """Set when the adapter is next recovered by any rung (a new event after each
        recovery): links resting in their backoff wait on it and retry at once."""
        return self._recovered

    def report_success(self) -> None:
        self._failures = 0
        self._unheard = 0
        self._stuck = None

    async def report_stuck_disconnect(self, device_id: str) -> bool:
        """A disconnect of ``device_id`` that did not complete in its bound: the wedge's own
        sign (bluez/bluez#932, #947: bluetoothd's management queue stuck behind it, so
        pairing and power-off stall too). The adapter is recovered at once, starting at
        the kernel rungs when there are any (still at most once per
        ``power_cycle_min_interval_s``; when that holds it back, the next failed connection
        escalates at once instead). Returns True if it recovered the adapter."""
        self._stuck = device_id
        if self._power_cycle is None and not self._ladder:
            return False
        LOG.warning("%s: %s's disconnect did not complete: BlueZ may be wedged", self.name, device_id)
        return await self._escalate(kernel_first=bool(self._ladder))

    async def report_failure(self, unheard: bool = False) -> bool:
        """Count a failed connection; recover the adapter if due. ``unheard``: the scanner
        has not heard the device since its link was last up (or since the start), so
        BlueZ may be deaf as well as failing to connect. Returns True if it recovered."""
        self._failures += 1
        self._unheard = self._unheard + 1 if unheard else 0
        if self._power_cycle is None and not self._ladder:
            return False
        if self._stuck is not None:
            LOG.warning(
                "%s: a connection failed after %s's disconnect did not complete: BlueZ may be wedged",
                self.name,
                self._stuck,
            )
        elif self._unheard >= self._after_unheard:
            LOG.warning(
                "%s: %d failed connections in a row to devices not heard since: BlueZ may be deaf",
                self.name,
                self._unheard,
            )
        elif self._failures < self._after:
            return False
        return await self._escalate(kernel_first=self._stuck is not None)

    async def _escalate(self, kernel_first: bool) -> bool:
        """Recover the adapter unless the rate limit holds it back. Returns True if it did."""
        now = time.monotonic()
        if self._last_cycle is not None and now - self._last_cycle < self._min_interval:
            LOG.warning(
                "%s: %d failed connections in a row; power-cycle rate-limited (last %.0f s ago)",
                self.name,
                self._failures,
                now - self._last_cycle,
            )
            return False
        self._last_cycle = now
        self._failures = 0
        self._unheard = 0
        self._stuck = None
        self.power_cycles += 1
        LOG.warning("%s: recovering the adapter", self.name)
        await self.recover(kernel_first=kernel_first)
        return True

    async def recover(self, kernel_first: bool = False) -> str | None:
        """Climb the ladder until a rung succeeds: its name, or None when every rung failed
        (logged; the links keep retrying). ``kernel_first`` skips the D-Bus rung when there
        are kernel rungs."""
        rungs: list[Rung] = [("dbus", self._power_cycle, self._power_cycle_timeout)] if self._power_cycle else []
        if kernel_first and self._ladder:
            rungs = []
        for name, action, bound in rungs + self._ladder:
            started = time.monotonic()
            try:
                await within(action(), bound)
            except Exception as exc:  # noqa: BLE001 - logged, the next rung is tried
                self.rung_failures += 1
                LOG.error(
                    "%s: recovery rung %s failed after %.1f s: %s",
                    self.name,
                    name,
                    time.monotonic() - started,
                    exc or type(exc).__name__,
                )
                continue
            self.recoveries[name] = self.recoveries.get(name, 0) + 1
            LOG.warning("%s: recovered by rung %s in %.2f s", self.name, name, time.monotonic() - started)
            self._recovered.set()
            self._recovered = asyncio.Event()
            return name
        return None


def helper_rungs(adapter: str, socket_path: str | None) -> list[Rung]:
    """The kernel-level rungs, run by the privileged helper at ``socket_path``
    (:mod:`sunbox.ble.kernel_recovery`); none without a helper."""
    if not socket_path:
        return []
    from pathlib import Path

    from .kernel_recovery import RUNG_TIMEOUT_S, RUNGS, request

    def rung(name: str) -> PowerCycle:
        async def run() -> None:
            await request(Path(socket_path), adapter, name)
            # a D-Bus power-off that timed out in rung 1 is still queued in bluetoothd and
            # runs once the kernel rung released it: leave the adapter on in BlueZ's eyes
            try:
                await within(bluez_set_powered(adapter, True), 10)
            except Exception as exc:  # noqa: BLE001 - the kernel rung did its work; logged
                LOG.warning("%s: powering on over D-Bus after rung %s: %s", adapter, name, exc or type(exc).__name__)

        return run

    return [(name, rung(name), RUNG_TIMEOUT_S * 2 + 10) for name in RUNGS]


async def bluez_set_powered(adapter: str, powered: bool) -> None:
    """Set ``org.bluez.Adapter1.Powered`` of ``adapter`` over D-Bus."""
    from dbus_fast import BusType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        path = f"/org/bluez/{adapter}"
        introspection = await bus.introspect("org.bluez", path)
        proxy = bus.get_proxy_object("org.bluez", path, introspection)
        props = proxy.get_interface("org.freedesktop.DBus.Properties")
        await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", powered))  # type: ignore[attr-defined]
    finally:
        bus.disconnect()


def bluez_power_cycle(adapter: str) -> PowerCycle:
    """A coroutine factory that power-cycles a BlueZ adapter through D-Bus."""

    async def cycle() -> None:
        await bluez_set_powered(adapter, False)
        await asyncio.sleep(2)
        await bluez_set_powered(adapter, True)

    return cycle
