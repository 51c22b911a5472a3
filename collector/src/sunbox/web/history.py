"""History and daily energy for ``sunbox web``, from InfluxDB with the read-only token.

No Flux from a browser ever reaches InfluxDB: a request names a :data:`QUANTITIES` key,
a range and optionally a device id (checked against the device-id rule), and the query
is built here. The bucket comes from the one shared rule,
:func:`sunbox.storage.pick.pick`; the window is the bucket's resolution or coarser, so
that no series has more than ``max_points`` points.

Signs follow the dashboards (``docs/dashboards.md``): on History, supply is positive
(PV, battery discharge) and consumption negative (battery charge), so battery power is
negated; the Now page shows directions in words and arrows instead.

Energy (:meth:`History.energy`): Wh per hour (last 24 h), day (last 7 or 30), month (last
12) or year (last 10) of battery charge and discharge, solar (the chargers' yield, in all
and per charger), AC in (an inverter/charger's input: shore power, a generator) and load
(solar + AC in − charged + discharged: every consumer, DC and AC, with the conversion
losses), summed over the banks and the batteries in no bank (a bank's packs and meter
are counted once, through the bank: ``docs/banks.md``). The hours come from the energy
bucket the hourly task writes from full-resolution power (:mod:`sunbox.storage.energy`);
the hours it has not written yet are counted from raw with the same Flux. Every period
of the range is in the answer: one without readings is a gap (``null``), one that
readings cover only in part says how much (``coverage``).

Alarm markers (:meth:`History.alarm_events`): the alarm engine's raised, acknowledged
and cleared events in the chart's range (the events bucket,
:data:`sunbox.storage.pick.EVENTS_BUCKET`), the newest :data:`MAX_EVENTS`; the chart
draws each at its time.

Queries go to InfluxDB's HTTP API (``POST /api/v2/query``, CSV without annotations)
through aiohttp, which the display already runs on, rather than through
``influxdb-client``: that library's generated API models cost the display about 20 MB
of its 60 MB memory budget, for one endpoint and a CSV table.
"""

from __future__ import annotations

import bisect
import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from sunbox import quantities
from sunbox.storage import energy, layout, pick
from sunbox.topics import QUALIFIED_DEVICE_PATTERN

from .config import WebInfluxConfig

LOG = logging.getLogger(__name__)


class HistoryError(ValueError):
    """A request the History API refuses; ``str()`` says why (HTTP 400)."""


class StorageUnavailable(RuntimeError):
    """InfluxDB did not answer (HTTP 503, "storage unavailable" on the page)."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """A chartable quantity: measurement, field, label, and whether History negates it;
    its unit is the table of quantities' (:mod:`sunbox.quantities`)."""

    measurement: str
    field: str
    label: str
    negate: bool = False

    @property
    def unit(self) -> str:
        return quantities.QUANTITIES[self.field].unit or ""


QUANTITIES: dict[str, Quantity] = {
    "soc": Quantity("battery", "soc", "State of charge"),
    "battery_power": Quantity("battery", "power", "Battery power (+ discharge, − charge)", negate=True),
    "solar_power": Quantity("charger", "charge_power", "Solar charge power"),
    "pv_voltage": Quantity("charger", "pv_voltage", "PV voltage"),
    "voltage": Quantity("battery", "voltage", "Battery voltage"),
    "current": Quantity("battery", "current", "Battery current (+ charge)"),
    "cell_delta": Quantity("battery", "cell_voltage_delta", "Cell spread"),
}

#: Named ranges (the page's buttons), seconds back from now.
RANGES: dict[str, int] = {
    "1h": 3600,
    "24h": 86_400,
    "7d": 7 * 86_400,
    "30d": 30 * 86_400,
    "1y": 365 * 86_400,
    "10y": 3650 * 86_400,
}
MIN_SPAN_S = 60
MAX_SPAN_S = 3660 * 86_400


def window_for(step: pick.Step, span_s: float, max_points: int) -> int:
    """Window length in s: the bucket's resolution, or coarser so a series has <= max_points."""
    base = max(step.window_s, 1)
    needed = math.ceil(span_s / max_points)
    return max(base, math.ceil(needed / base) * base)


def _time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def series_flux(
    quantity: Quantity,
    bucket: str,
    start_s: float,
    stop_s: float,
    every_s: int,
    device: str | None,
    tail_s: float | None = None,
) -> str:
    """Mean, min and max per window of one quantity, per device (pure; inputs already checked).

    Each of the three is a whole ``from |> range |> filter |> aggregateWindow`` chain, so
    InfluxDB pushes the range, the filter and the window aggregate down to storage (a
    shared ``data`` variable would make it read every field of the measurement).

    With ``tail_s`` (a window boundary between start and stop), a tier is read up to it
    and the raw bucket from it on, with the same windows: the tier's task has not written
    its newest windows yet (:attr:`sunbox.storage.pick.Step.lag_s`).
    """
    raw_bucket = pick.RULE[0].bucket
    device_test = f' and r.device == "{device}"' if device else ""

    def chains(source: str, start: float, stop: float, suffix: str) -> list[tuple[str, str]]:
        raw = source == raw_bucket
        low, high = (quantity.field, quantity.field) if raw else (f"{quantity.field}_min", f"{quantity.field}_max")
        out = []
        for name, field, fn in (("mean", quantity.field, "mean"), ("min", low, "min"), ("max", high, "max")):
            out.append(
                (
                    f"series_{name}{suffix}",
                    f"""series_{name}{suffix} = from(bucket: "{source}")
    |> range(start: {_time(start)}, stop: {_time(stop)})
    |> filter(fn: (r) => r._measurement == "{quantity.measurement}" and r._field == "{field}"{device_test})
    |> aggregateWindow(every: {every_s}s, fn: {fn}, createEmpty: false)
    |> set(key: "_field", value: "{name}")""",
                )
            )
        return out

    parts = chains(bucket, start_s, stop_s if tail_s is None else tail_s, "")
    if tail_s is not None and bucket != raw_bucket:
        parts += chains(raw_bucket, tail_s, stop_s, "_tail")
    names = ", ".join(name for name, _ in parts)
    return (
        "\n".join(text for _, text in parts)
        + f"""
union(tables: [{names}])
    |> keep(columns: ["_time", "_value", "_field", "device"])
"""
    )


#: the energy task's gap rule, for the hours the display counts from raw itself
ENERGY_MAX_GAP_S = layout.StorageLayout().energy_max_gap

#: Most alarm events a History answer carries (the newest in the range).
MAX_EVENTS = 200


def events_flux(start_s: float, stop_s: float, device: str | None) -> str:
    """The alarm events in a range, newest first (pure; ``device`` already checked)."""
    device_test = f' and r.device == "{device}"' if device else ""
    return f"""from(bucket: "{pick.EVENTS_BUCKET}")
    |> range(start: {_time(start_s)}, stop: {_time(stop_s + 1)})
    |> filter(fn: (r) => r._measurement == "alarm" and r._field == "text"{device_test})
    |> group()
    |> sort(columns: ["_time"], desc: true)
    |> limit(n: {MAX_EVENTS})
    |> keep(columns: ["_time", "_value", "rule", "device", "severity", "event"])
"""


#: Gaps on the Health page: windows of this length without any reading, over GAP_SPAN_S.
GAP_WINDOW_S = 600
GAP_SPAN_S = 86_400


def gaps_flux(now_s: float) -> str:
    """Per device: how many 10-minute windows of the last 24 h hold no reading at all."""
    return f"""from(bucket: "{pick.RULE[0].bucket}")
    |> range(start: {_time(now_s - GAP_SPAN_S)}, stop: {_time(now_s)})
    |> filter(fn: (r) => r._measurement != "health" and r._measurement != "sunbox_tier")
    |> map(fn: (r) => ({{_time: r._time, _start: r._start, _stop: r._stop, device: r.device, _value: 1}}))
    |> group(columns: ["device"])
    |> aggregateWindow(every: {GAP_WINDOW_S}s, fn: count, createEmpty: true)
    |> filter(fn: (r) => r._value == 0)
    |> count()
    |> keep(columns: ["device", "_value"])
"""


#: The earliest moment a History request may name (Unix seconds): 2000-01-01. Nothing
#: Sunbox stores is older, and it keeps every instant inside what Flux's time literals
#: and ``time.gmtime`` can write.
EARLIEST_S = 946_684_800


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HistoryError(f"{name}: must be Unix seconds, not {text[:40]!r}") from None
    if not math.isfinite(value):
        raise HistoryError(f"{name}: must be a finite number of Unix seconds")
    return value


def parse_range(range_name: str | None, start: str | None, stop: str | None, now_s: float) -> tuple[float, float]:
    """``(start_s, stop_s)`` from a named range or explicit Unix seconds.

    ``start`` and ``stop`` must lie between :data:`EARLIEST_S` and a day from now; the
    span between ``MIN_SPAN_S`` and ``MAX_SPAN_S``; ``stop`` defaults to now and is cut
    to now.

    Raises:
        HistoryError: naming the parameter: unknown range, range given with start or
            stop, numbers that are not finite Unix seconds or out of bounds, a span out
            of bounds.
    """
    if range_name is not None:
        if start is not None or stop is not None:
            raise HistoryError("range: give range, or start (and optionally stop), not both")
        if range_name not in RANGES:
            raise HistoryError(f"range: must be one of {', '.join(RANGES)}")
        return now_s - RANGES[range_name], now_s
    if start is None:
        if stop is not None:
            raise HistoryError("start: required with stop")
        raise HistoryError("range: give range, or start (and optionally stop) in Unix seconds")
    start_s = _seconds("start", start)
    stop_s = _seconds("stop", stop) if stop is not None else now_s
    latest = now_s + 86_400
    for name, value in (("start", start_s), ("stop", stop_s)):
        if not EARLIEST_S <= value <= latest:
            raise HistoryError(f"{name}: must be between {EARLIEST_S} (2000-01-01) and a day from now")
    if not MIN_SPAN_S <= stop_s - start_s <= MAX_SPAN_S:
        raise HistoryError(f"stop: the span must be between {MIN_SPAN_S} s and {MAX_SPAN_S // 86_400} days")
    stop_s = min(stop_s, now_s)
    if stop_s - start_s < MIN_SPAN_S:
        raise HistoryError("start: must be at least a minute before now")
    return start_s, stop_s


def parse_csv(text: str) -> list[dict[str, str]]:
    """Rows of InfluxDB's CSV answer (no annotations; a header per table), as dicts."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or row == [""]:
            header = None
            continue
        if header is None or row == header:
            header = row
            continue
        rows.append(dict(zip(header, row, strict=False)))
    return rows


def _stamp(text: str) -> float:
    """RFC 3339 (InfluxDB's ``_time``) to Unix seconds."""
    return datetime.fromisoformat(text).timestamp()


class History:
    """Runs the queries over HTTP and shapes the JSON."""

    def __init__(self, config: WebInfluxConfig, max_points: int) -> None:
        self.config = config
        self.max_points = max_points
        self._token = config.resolved_token()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, headers={"Authorization": f"Token {self._token}"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def available(self) -> bool:
        """Whether InfluxDB answers its health check (for the Health page)."""
        try:
            async with self._client().get(f"{self.config.url}/health") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _query(self, flux: str) -> list[dict[str, str]]:
        body = {"query": flux, "type": "flux", "dialect": {"header": True, "annotations": []}}
        url = f"{self.config.url}/api/v2/query"
        try:
            async with self._client().post(
                url, params={"org": self.config.org}, json=body, headers={"Accept": "application/csv"}
            ) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StorageUnavailable(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        if response.status != 200:
            raise StorageUnavailable(f"HTTP {response.status}: {text[:200]}")
        return parse_csv(text)

    async def series(
        self, name: str, start_s: float, stop_s: float, device: str | None, now_s: float
    ) -> dict[str, Any]:
        """The JSON of one chart (see ``docs/web.md``).

        Raises:
            HistoryError: unknown quantity or malformed device id.
            StorageUnavailable: InfluxDB did not answer.
        """
        quantity = QUANTITIES.get(name)
        if quantity is None:
            raise HistoryError(f"quantity: must be one of {', '.join(QUANTITIES)}")
        if device is not None and not QUALIFIED_DEVICE_PATTERN.fullmatch(device):
            raise HistoryError("device: is not a device id")
        step = pick.pick(start_s, stop_s, now_s)
        every = window_for(step, stop_s - start_s, self.max_points)
        # a tier's newest windows are not written yet: the end of the range from raw
        boundary = (now_s - step.lag_s) // every * every
        tail = boundary if step.lag_s and start_s < boundary < stop_s else None
        rows = await self._query(series_flux(quantity, step.bucket, start_s, stop_s, every, device, tail))
        by_device: dict[str, dict[str, dict[float, float]]] = {}
        for row in rows:
            if not row.get("_value"):
                continue
            fields = by_device.setdefault(row.get("device", ""), {})
            fields.setdefault(row["_field"], {})[_stamp(row["_time"])] = float(row["_value"])
        sign = -1.0 if quantity.negate else 1.0
        series = []
        for dev in sorted(by_device):
            fields = by_device[dev]
            stamps = sorted(fields.get("mean", {}))
            low, high = fields.get("min", {}), fields.get("max", {})
            if quantity.negate:  # a negated band swaps its edges
                low, high = high, low
            series.append(
                {
                    "device": dev,
                    "t": stamps,
                    "mean": [sign * fields["mean"][t] for t in stamps],
                    "min": [sign * low[t] if t in low else None for t in stamps],
                    "max": [sign * high[t] if t in high else None for t in stamps],
                }
            )
        return {
            "quantity": name,
            "alarms": await self.alarm_events(start_s, stop_s, device),
            "label": quantity.label,
            "unit": quantity.unit,
            "bucket": step.bucket,
            "window_s": every,
            "raw_from": tail,
            "start": start_s,
            "stop": stop_s,
            "series": series,
        }

    async def alarm_events(self, start_s: float, stop_s: float, device: str | None) -> list[dict[str, Any]] | None:
        """The alarm events in the range, oldest first: ``{"t": Unix s, "event": raised |
        acked | cleared, "rule", "device", "severity", "text"}``; None when they could not
        be read (the chart is drawn without its markers; an install whose play has not yet
        created the events bucket)."""
        try:
            rows = await self._query(events_flux(start_s, stop_s, device))
        except StorageUnavailable as exc:
            LOG.warning("alarm events not read: %s", exc)
            return None
        out = [
            {
                "t": _stamp(row["_time"]),
                "event": row.get("event", ""),
                "rule": row.get("rule", ""),
                "device": row.get("device", ""),
                "severity": row.get("severity", ""),
                "text": row.get("_value", ""),
            }
            for row in rows
            if row.get("_time")
        ]
        return sorted(out, key=lambda e: e["t"])

    async def gaps(self, now_s: float) -> dict[str, int]:
        """Device id -> 10-minute windows of the last 24 h without a reading (0 = none missing).

        A device with no reading at all in 24 h is absent from the answer.

        Raises:
            StorageUnavailable: InfluxDB did not answer.
        """
        rows = await self._query(gaps_flux(now_s))
        return {row["device"]: int(row["_value"]) for row in rows if row.get("device") and row.get("_value")}

    async def energy(self, range_name: str, now_s: float, members: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Energy per period over a named range (:data:`ENERGY_RANGES`; see
        :func:`energy_range` for the request's parameters); ``members``: the banks'
        packs and meters, counted through their banks.

        Returns ``{"range", "every", "bucket", "raw_from", "rows": [{"start", "charged",
        "discharged", "solar", "solar_by_charger", "ac_in", "load", "coverage",
        "partial"}]}``: Wh, ``None`` where nothing was read (a gap); ``coverage`` 0-1 of the
        battery side's time; ``partial`` below :data:`PARTIAL_BELOW`.

        Raises:
            HistoryError: unknown range.
            StorageUnavailable: InfluxDB did not answer.
        """
        if range_name not in ENERGY_RANGES:
            raise HistoryError(f"range: must be one of {', '.join(ENERGY_RANGES)}")
        every, count = ENERGY_RANGES[range_name]
        offset = time.localtime(now_s).tm_gmtoff
        starts = period_starts(every, count, now_s, offset)
        left_out = sorted(m for m in members if QUALIFIED_DEVICE_PATTERN.fullmatch(m))
        not_member = " and ".join(f'r.device != "{m}"' for m in left_out)
        newest = await self._query(newest_energy_flux(now_s))
        stored_to = now_s - ENERGY_TAIL_MAX_S
        if newest and newest[0].get("_time"):
            stored_to = max(stored_to, _stamp(newest[0]["_time"]) + 3600)
        stored_to = min(stored_to, now_s)
        rows = await self._query(stored_energy_flux(starts[0], stored_to, every, offset, not_member))
        if stored_to < now_s:
            rows += await self._query(tail_energy_flux(stored_to, now_s, every, offset, not_member))
        return {
            "range": range_name,
            "every": every,
            "bucket": pick.ENERGY_BUCKET,
            "raw_from": stored_to if stored_to < now_s else None,
            "rows": energy_rows(rows, starts, now_s),
        }


#: The energy views: range -> (period, how many)
ENERGY_RANGES: dict[str, tuple[str, int]] = {
    "24h": ("1h", 24),
    "7d": ("1d", 7),
    "30d": ("1d", 30),
    "1y": ("1mo", 12),
    "10y": ("1y", 10),
}
#: the older ``period`` parameter's values, as ranges
ENERGY_ALIASES = {"hours": "24h", "days": "30d", "months": "1y", "years": "10y"}


def energy_range(range_name: str | None, period: str | None) -> str:
    """The energy request's range from ``range`` or the older ``period`` (30 days when
    neither is given).

    Raises:
        HistoryError: both given, or a value that is not one of them, naming the parameter.
    """
    if range_name is not None and period is not None:
        raise HistoryError("range: give range or period, not both")
    if period is not None:
        if period not in ENERGY_ALIASES:
            raise HistoryError(f"period: must be one of {', '.join(ENERGY_ALIASES)}")
        return ENERGY_ALIASES[period]
    if range_name is not None and range_name not in ENERGY_RANGES:
        raise HistoryError(f"range: must be one of {', '.join(ENERGY_RANGES)}")
    return range_name or "30d"


#: a period whose battery side readings cover less than this share of its time is partial
PARTIAL_BELOW = 0.95
#: the most a History request counts from raw (the raw bucket keeps 24 h)
ENERGY_TAIL_MAX_S = 23 * 3600
_BATTERY_SIDE = ("battery", "bank")


def period_starts(every: str, count: int, now_s: float, offset_s: int) -> list[float]:
    """The Unix starts of the last ``count`` periods of ``every`` (``1h``, ``1d``, ``1mo``,
    ``1y``) up to the one holding ``now_s``, in the time zone ``offset_s`` east of UTC."""
    zone = timezone(timedelta(seconds=offset_s))
    now = datetime.fromtimestamp(now_s, zone)
    if every == "1h":
        first = now.replace(minute=0, second=0, microsecond=0)
        return [(first - timedelta(hours=i)).timestamp() for i in reversed(range(count))]
    if every == "1d":
        first = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return [(first - timedelta(days=i)).timestamp() for i in reversed(range(count))]
    out = []
    for i in reversed(range(count)):
        if every == "1mo":
            months = now.year * 12 + now.month - 1 - i
            out.append(datetime(months // 12, months % 12 + 1, 1, tzinfo=zone).timestamp())
        else:
            out.append(datetime(now.year - i, 1, 1, tzinfo=zone).timestamp())
    return out


def _energy_filter(not_member: str) -> str:
    kinds = " or ".join(f'r._measurement == "{m}"' for m in energy.KINDS)
    fields = " or ".join(f'r._field == "{f}"' for f in energy.FIELDS)
    return f"({kinds}) and ({fields})" + (f" and {not_member}" if not_member else "")


def newest_energy_flux(now_s: float) -> str:
    """The newest hour the energy task has written (within the raw bucket's day)."""
    return f"""from(bucket: "{pick.ENERGY_BUCKET}")
    |> range(start: {_time(now_s - ENERGY_TAIL_MAX_S)}, stop: {_time(now_s + 1)})
    |> filter(fn: (r) => r._field == "covered_s")
    |> last()
    |> keep(columns: ["_time"])
    |> group()
    |> sort(columns: ["_time"], desc: true)
    |> limit(n: 1)
"""


def stored_energy_flux(start_s: float, stop_s: float, every: str, offset_s: int, not_member: str) -> str:
    """Per device and period, the stored hours' sums (pushed down to storage: a filter on
    tags and fields, then the window sum)."""
    return f"""import "timezone"
option location = timezone.fixed(offset: {offset_s}s)
from(bucket: "{pick.ENERGY_BUCKET}")
    |> range(start: {_time(start_s)}, stop: {_time(stop_s)})
    |> filter(fn: (r) => {_energy_filter(not_member)})
    |> aggregateWindow(every: {every}, fn: sum, timeSrc: "_start", createEmpty: false)
    |> keep(columns: ["_time", "_value", "_field", "_measurement", "device"])
"""


def tail_energy_flux(start_s: float, stop_s: float, every: str, offset_s: int, not_member: str) -> str:
    """The hours the task has not written yet, from raw with the task's own Flux."""
    body = energy.integrate(pick.RULE[0].bucket, _time(start_s), _time(stop_s), ENERGY_MAX_GAP_S, every, not_member)
    return f"""import "date"
import "timezone"
option location = timezone.fixed(offset: {offset_s}s)
{body}energy |> keep(columns: ["_time", "_value", "_field", "_measurement", "device"])
"""


def energy_rows(rows: list[dict[str, str]], starts: list[float], now_s: float) -> list[dict[str, Any]]:
    """Every period of ``starts``: Wh summed per side, ``None`` where nothing was read.

    ``coverage``: the battery side's covered seconds over the period's time (up to now)
    times the battery-side devices that have readings in that period, so a gap inside a
    period shows, and a device added later does not make the past look partial."""
    sums: list[dict[str, float]] = [{} for _ in starts]
    seen: list[set[str]] = [set() for _ in starts]  # battery-side devices with readings, per period
    chargers: list[dict[str, float]] = [{} for _ in starts]  # PV yield per charger, per period
    for row in rows:
        if not row.get("_value") or not row.get("_time"):
            continue
        i = bisect.bisect_right(starts, _stamp(row["_time"])) - 1
        if i < 0:
            continue
        measurement = row.get("_measurement")
        side = "battery" if measurement in _BATTERY_SIDE else "ac" if measurement == "inverter" else "charger"
        key = f"{side}.{row.get('_field')}"
        sums[i][key] = sums[i].get(key, 0.0) + float(row["_value"])
        if side == "battery" and row.get("_field") == "covered_s" and float(row["_value"]) > 0:
            seen[i].add(row.get("device", ""))
        if side == "charger" and row.get("_field") == "in_wh":
            device = row.get("device", "")
            chargers[i][device] = chargers[i].get(device, 0.0) + float(row["_value"])
    out = []
    for i, start in enumerate(starts):
        values = sums[i]
        stop = starts[i + 1] if i + 1 < len(starts) else now_s
        battery = "battery.covered_s" in values
        solar = values.get("charger.in_wh") if "charger.covered_s" in values else None
        charged = round(values.get("battery.in_wh", 0.0), 1) if battery else None
        discharged = round(values.get("battery.out_wh", 0.0), 1) if battery else None
        ac_in = values.get("ac.in_wh") if "ac.covered_s" in values else None
        expected = max(1, len(seen[i])) * max(1.0, stop - start)
        coverage = min(1.0, values.get("battery.covered_s", 0.0) / expected)
        load = None
        if charged is not None and discharged is not None and (solar is not None or ac_in is not None):
            load = round(max(0.0, (solar or 0.0) + (ac_in or 0.0) - charged + discharged), 1)
        out.append(
            {
                "start": start,
                "charged": charged,
                "discharged": discharged,
                "solar": None if solar is None else round(solar, 1),
                "solar_by_charger": {d: round(wh, 1) for d, wh in sorted(chargers[i].items())},
                "ac_in": None if ac_in is None else round(ac_in, 1),
                "load": load,
                "coverage": round(coverage, 3),
                "partial": battery and coverage < PARTIAL_BELOW,
            }
        )
    return out
