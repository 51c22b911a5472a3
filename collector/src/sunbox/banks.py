"""Battery banks: parallel packs and their meter read as one battery (issue 31).

A bank is configured (:class:`sunbox.config.BankConfig`) as its packs and, optionally,
one meter (a BMV, SmartShunt, Lynx or Venus OS battery). :func:`compute_bank` is the one
implementation of a bank's quantities; :class:`BankAggregator` keeps each member's newest
reading and publishes the bank as a device of its own (``kind: bank``) on
``sunbox/<bank id>/state``, so that the writer stores it, the tiers downsample it and
Home Assistant gets it like any device.

Rules (``docs/banks.md``):

* ``current`` and ``power`` (A, W; + = into the bank): the meter's when it is fresh,
  else the sum over the fresh packs. ``voltage``: the meter's, else the mean of the
  fresh packs' (parallel packs share one voltage).
* ``soc`` (%): the meter's when fresh, else Σ ``capacity_remaining`` / Σ
  ``capacity_nominal`` over the fresh packs that report both (capacity-weighted: a
  100 Ah pack at 50 % and a 280 Ah pack at 90 % make 79.5 %, not 70 %).
* ``capacity_remaining`` / ``capacity_nominal`` (Ah): sums over the fresh packs.
* ``time_to_go`` (s, discharging) and ``time_to_full`` (s, charging): the meter's
  time to go when it has one, else from the capacities and the bank's current.
* lowest and highest cell of the bank, with the pack (``cell_voltage_min_pack``) and
  the 1-based cell number (``cell_voltage_min_cell``) that hold it; their difference
  ``cell_voltage_delta``.
* ``temperature_min`` / ``temperature_max`` (°C) over every fresh pack's sensors.
* ``soc_spread`` (%): highest minus lowest pack SOC.
* ``protection_bits``: the OR of the fresh packs' (JBD bit numbers).
* ``packs_fresh`` of ``packs_total``; ``partial`` is true when a pack is missing, and
  then SOC and capacities cover only the packs counted. ``meter_fresh`` says whether
  the meter's values were used (None without a meter). ``packs`` (the member ids, comma
  separated) and ``meter`` name the members, for the display.

A member is fresh while its newest reading is younger than ``stale_after_s``. A member
that is stale never disappears silently: it is counted out in ``packs_fresh``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sunbox.config import BankConfig
from sunbox.model import Reading, now_ms

#: below this current (A) a bank is idle: no time to go or to full
IDLE_A = 0.05


def _num(value: Any) -> float | None:
    """A finite number, or None (bools, text, NaN and missing values are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _cells(values: Mapping[str, Any]) -> list[tuple[int, float]]:
    """``(1-based cell number, volts)`` of a pack's known cells."""
    cells = values.get("cell_voltages")
    if not isinstance(cells, list):
        return []
    return [(i + 1, v) for i, raw in enumerate(cells) if (v := _num(raw)) is not None]


def _temperatures(values: Mapping[str, Any]) -> list[float]:
    raw = values.get("temperatures")
    out = [v for t in raw if (v := _num(t)) is not None] if isinstance(raw, list) else []
    if (t := _num(values.get("battery_temperature"))) is not None:
        out.append(t)
    return out


def compute_bank(
    bank: BankConfig,
    members: Mapping[str, Reading],
    time_ms: int,
) -> Reading:
    """The bank's reading at ``time_ms`` from its members' newest readings.

    ``members`` maps a member's device id to its newest reading of kind ``battery``
    (readings of another kind, or older than ``bank.stale_after_s``, count as missing).
    Never raises on odd member values: a value that is not a finite number is left out.
    """
    stale_ms = bank.stale_after_s * 1000

    def fresh(device_id: str | None) -> Mapping[str, Any] | None:
        reading = members.get(device_id) if device_id is not None else None
        if reading is None or reading.kind != "battery" or time_ms - reading.time_ms > stale_ms:
            return None
        return reading.values

    packs = {p: v for p in bank.packs if (v := fresh(p)) is not None}
    meter = fresh(bank.meter)

    # the meter is the authority for what it measures; the packs fill in the rest
    voltages = [_num(v.get("voltage")) for v in packs.values()]
    known_volts = [v for v in voltages if v is not None]
    pack_voltage = sum(known_volts) / len(known_volts) if known_volts else None
    pack_current = _sum([_num(v.get("current")) for v in packs.values()])
    pack_power = _sum([_num(v.get("power")) for v in packs.values()])
    weighted = [
        (r, n)
        for v in packs.values()
        if (r := _num(v.get("capacity_remaining"))) is not None and (n := _num(v.get("capacity_nominal"))) and n > 0
    ]
    remaining = sum(r for r, _ in weighted) if weighted else None
    nominal = sum(n for _, n in weighted) if weighted else None
    pack_soc = 100.0 * remaining / nominal if remaining is not None and nominal else None

    def meter_or(key: str, fallback: float | None) -> float | None:
        if meter is not None and (value := _num(meter.get(key))) is not None:
            return value
        return fallback

    voltage = meter_or("voltage", pack_voltage)
    current = meter_or("current", pack_current)
    power = meter_or("power", pack_power)
    if meter is not None and _num(meter.get("power")) is None and current is not None and voltage is not None:
        power = current * voltage
    soc = meter_or("soc", pack_soc)

    time_to_go = time_to_full = None
    if current is not None and current < -IDLE_A:
        time_to_go = meter_or("time_to_go", None)
        if time_to_go is None and remaining is not None:
            time_to_go = remaining / -current * 3600.0
    elif current is not None and current > IDLE_A and remaining is not None and nominal is not None:
        time_to_full = max(0.0, nominal - remaining) / current * 3600.0

    lows = [(v, pack, n) for pack, values in packs.items() for n, v in _cells(values)]
    low = min(lows, default=None)
    high = max(lows, default=None)
    temps = [t for values in packs.values() for t in _temperatures(values)]
    socs = [s for v in packs.values() if (s := _num(v.get("soc"))) is not None]
    bits = [int(b) for v in packs.values() if (b := _num(v.get("protection_bits"))) is not None]

    values: dict[str, Any] = {
        "voltage": voltage,
        "current": current,
        "power": power,
        "soc": soc,
        "capacity_remaining": remaining,
        "capacity_nominal": nominal,
        "time_to_go": time_to_go,
        "time_to_full": time_to_full,
        "cell_voltage_min": low[0] if low else None,
        "cell_voltage_min_pack": low[1] if low else None,
        "cell_voltage_min_cell": low[2] if low else None,
        "cell_voltage_max": high[0] if high else None,
        "cell_voltage_max_pack": high[1] if high else None,
        "cell_voltage_max_cell": high[2] if high else None,
        "cell_voltage_delta": round(high[0] - low[0], 4) if low and high else None,
        "temperature_min": min(temps, default=None),
        "temperature_max": max(temps, default=None),
        "soc_spread": max(socs) - min(socs) if len(socs) > 1 else None,
        "protection_bits": _or(bits),
        "packs_fresh": len(packs),
        "packs_total": len(bank.packs),
        "partial": len(packs) < len(bank.packs),
        "meter_fresh": None if bank.meter is None else meter is not None,
        "packs": ",".join(bank.packs),
        "meter": bank.meter,
        "model": "Sunbox bank",
    }
    return Reading(device_id=bank.id, kind="bank", time_ms=time_ms, values=values)


def _or(bits: list[int]) -> int | None:
    if not bits:
        return None
    out = 0
    for b in bits:
        out |= b
    return out


@dataclass
class _Bank:
    config: BankConfig
    members: dict[str, Reading]
    last_ms: int = 0


class BankAggregator:
    """Keeps each bank member's newest reading and publishes every bank.

    :meth:`observe` is fed every reading the collector publishes (others are ignored);
    :meth:`tick` publishes each bank whose ``interval_s`` has passed and that has heard
    from at least one member. Thread-unsafe: call both from the collector's event loop.
    """

    def __init__(self, banks: list[BankConfig], publish: Callable[[Reading], None]) -> None:
        self._banks = [_Bank(b, {}) for b in banks]
        self._of: dict[str, list[_Bank]] = {}
        for bank in self._banks:
            for member in [*bank.config.packs, *([bank.config.meter] if bank.config.meter else [])]:
                self._of.setdefault(member, []).append(bank)
        self._publish = publish

    def observe(self, reading: Reading) -> None:
        """Remember ``reading`` when it is a member's newest."""
        for bank in self._of.get(reading.device_id, ()):
            old = bank.members.get(reading.device_id)
            if reading.kind == "battery" and (old is None or reading.time_ms >= old.time_ms):
                bank.members[reading.device_id] = reading

    def tick(self, time_ms: int | None = None) -> list[Reading]:
        """Publish (and return) the banks that are due at ``time_ms`` (default now)."""
        now = now_ms() if time_ms is None else time_ms
        out = []
        for bank in self._banks:
            if not bank.members or now - bank.last_ms < bank.config.interval_s * 1000:
                continue
            bank.last_ms = now
            reading = compute_bank(bank.config, bank.members, now)
            self._publish(reading)
            out.append(reading)
        return out
