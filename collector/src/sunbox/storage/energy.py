"""Energy counted once: watt-hours per device and hour, from the raw readings' power.

Issue 31. InfluxDB task ``sunbox_energy`` (rendered here, created by ``sunbox influx
apply``) runs every hour and writes, per device and per hour, into the energy bucket
(``StorageLayout.energy_bucket``, 10 years):

* measurement: the device's kind, ``battery``, ``bank``, ``charger`` or ``inverter``;
  tags ``device`` and ``kind`` as in the raw bucket; time: the hour's start;
* ``in_wh``: energy in (a battery's or bank's ``power`` > 0, charging; a charger's
  ``charge_power``, its PV yield as delivered to the battery; an inverter/charger's
  ``ac_in_power`` > 0, what it takes from shore power or a generator);
* ``out_wh``: energy out (a battery's or bank's ``power`` < 0, discharging; an
  inverter's ``ac_in_power`` < 0, fed back to its AC input);
* ``covered_s``: the seconds of the hour that readings cover.

Each reading's power is taken as holding since the reading before it (a right-hand
Riemann sum over the raw readings, 5 s apart by default): a sign change counts on both
sides, to within one poll interval. An interval between two readings longer than
``energy_max_gap`` (2 min) is a **gap**: it counts no energy and no coverage, so a period
that readings do not cover says so (``covered_s``) instead of showing less energy as if
it were real.

Each run recomputes the newest hour it has written and every hour since (a backlog that
drained into raw after it ran is counted), from at most ``catchup`` back; rerunning an
hour rewrites the same points. The display reads the stored hours and counts the hours
the task has not reached yet from raw with the same Flux (:func:`integrate`), so a day
is whole up to now.

The sum is Sunbox's own, not a device counter: the BMV's H17/H18 and the chargers' daily
yield count the same energy in the device, but only some devices keep them, with their
own resolution and reset rules; one rule for every device keeps banks and their packs
comparable.
"""

from __future__ import annotations

from string import Template

#: (measurement, field) of the power each kind's energy is counted from
POWER_SOURCES: tuple[tuple[str, str], ...] = (
    ("battery", "power"),
    ("bank", "power"),
    ("charger", "charge_power"),
    ("inverter", "ac_in_power"),
)
#: the measurements (device kinds) the task writes
KINDS: tuple[str, ...] = tuple(dict.fromkeys(m for m, _ in POWER_SOURCES))
#: the fields the task writes per device and hour
FIELDS = ("in_wh", "out_wh", "covered_s")


def _power_predicate() -> str:
    return " or ".join(f'(r._measurement == "{m}" and r._field == "{f}")' for m, f in POWER_SOURCES)


def integrate(source: str, start: str, stop: str, max_gap_s: int, every: str, extra_filter: str = "") -> str:
    """Flux that sums, per device, ``in_wh``, ``out_wh`` and ``covered_s`` over windows of
    ``every`` (a Flux duration) from ``source``'s readings between ``start`` and
    ``stop`` (Flux time expressions), each window stamped with its start.

    ``extra_filter``: a further Flux predicate on ``r`` (already checked by the caller).
    The result is the union of the three fields' tables, named ``energy``.
    """
    more = f" and ({extra_filter})" if extra_filter else ""
    return Template(
        """power =
    from(bucket: "$source")
        |> range(start: date.sub(d: ${max_gap}s, from: $start), stop: $stop)
        |> filter(fn: (r) => ($predicate)$more)
        |> elapsed(unit: 1ms, columnName: "dt")
        |> filter(fn: (r) => r._time >= $start)
        |> map(fn: (r) => ({r with s: if r.dt <= ${max_gap_ms} then float(v: r.dt) / 1000.0 else 0.0}))
summed = (tables=<-, field, fn) =>
    tables
        |> map(fn: (r) => ({r with _value: fn(r: r)}))
        |> aggregateWindow(every: $every, fn: sum, timeSrc: "_start", createEmpty: false)
        |> set(key: "_field", value: field)
energy =
    union(
        tables: [
            power |> summed(field: "in_wh", fn: (r) => if r._value > 0.0 then r._value * r.s / 3600.0 else 0.0),
            power |> summed(field: "out_wh", fn: (r) => if r._value < 0.0 then -r._value * r.s / 3600.0 else 0.0),
            power |> summed(field: "covered_s", fn: (r) => r.s),
        ],
    )
"""
    ).substitute(
        source=source,
        start=start,
        stop=stop,
        max_gap=max_gap_s,
        max_gap_ms=max_gap_s * 1000,
        predicate=_power_predicate(),
        more=more,
        every=every,
    )


def task_flux(task_name: str, source: str, destination: str, catchup_s: int, max_gap_s: int) -> str:
    """The hourly task's Flux (see the module docstring)."""
    head = Template(
        """import "date"

option task = {name: "$task_name", every: 1h}

stop = date.truncate(t: now(), unit: 1h)
floor = date.truncate(t: date.sub(d: ${catchup}s, from: stop), unit: 1h)
progress =
    from(bucket: "$destination")
        |> range(start: floor, stop: stop)
        |> filter(fn: (r) => r._field == "covered_s")
        |> keep(columns: ["_time"])
        |> group()
        |> sort(columns: ["_time"])
        |> last(column: "_time")
        |> findRecord(fn: (key) => true, idx: 0)
resume = if exists progress._time then progress._time else floor
start = if resume < floor then floor else resume
"""
    ).substitute(task_name=task_name, destination=destination, catchup=catchup_s)
    body = integrate(source, "start", "stop", max_gap_s, "1h")
    return head + body + f'energy |> to(bucket: "{destination}")\n'
