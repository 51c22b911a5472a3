"""Per-adapter coordination: serialised connection setup, backoff, power-cycle escalation.

Escalation: when ``power_cycle_after`` connection attempts in a row have failed (any
device on this adapter; a success resets the count), the adapter is power-cycled, at
most once per ``power_cycle_min_interval_s``. On BlueZ this sets
``org.bluez.Adapter1.Powered`` false then true over D-Bus (dbus-fast, already a bleak
dependency); the workaround for BlueZ keeping a dead link "connected"
(bluez/bluez#947, #932; see ``docs/ble.md``).
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
    ) -> None:
        self.name = name
        self.connect_lock = asyncio.Lock()
        self._power_cycle = power_cycle
        self._after = power_cycle_after
        self._min_interval = min_interval_s
        self._failures = 0
        self._last_cycle: float | None = None
        self.power_cycles = 0

    def report_success(self) -> None:
        self._failures = 0

    async def report_failure(self) -> bool:
        """Count a failed connection; power-cycle if due. Returns True if it cycled."""
        self._failures += 1
        if self._power_cycle is None or self._failures < self._after:
            return False
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
        self.power_cycles += 1
        LOG.warning("%s: power-cycling the adapter after repeated connection failures", self.name)
        try:
            await within(self._power_cycle(), 30)
        except Exception as exc:  # noqa: BLE001 - logged, the links keep retrying
            LOG.error("%s: power-cycle failed: %s", self.name, exc)
        return True


def bluez_power_cycle(adapter: str) -> PowerCycle:
    """A coroutine factory that power-cycles a BlueZ adapter through D-Bus."""

    async def cycle() -> None:
        from dbus_fast import BusType, Variant
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            path = f"/org/bluez/{adapter}"
            introspection = await bus.introspect("org.bluez", path)
            proxy = bus.get_proxy_object("org.bluez", path, introspection)
            props = proxy.get_interface("org.freedesktop.DBus.Properties")
            await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", False))  # type: ignore[attr-defined]
            await asyncio.sleep(2)
            await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", True))  # type: ignore[attr-defined]
        finally:
            bus.disconnect()

    return cycle
