"""Builds the Sunbox Grafana dashboards (``grafana/dashboards/*.json``) from one description.

Run ``.venv/bin/python grafana/build_dashboards.py`` after editing; the tests check that
the JSON files are what this script writes. Needs the ``sunbox`` package (for the
bucket rule, :mod:`sunbox.storage.pick`) and the standard library.

Conventions (``docs/dashboards.md``):

* Only core panels (stat, timeseries, state-timeline, table, text).
* Time-series queries pick their bucket from the dashboard's range (:data:`PICK_BUCKET`):
  raw for short recent ranges, then the 2 min, 5 min, 30 min and 2 h tiers. A tier holds
  ``x`` (window mean) with ``x_min`` and ``x_max``, and the min/max pair is drawn as a
  band around the mean line.
* Sign convention on graphs: supply positive (PV, battery discharge), consumption
  negative (load, battery charge). The data model's battery current is + = charging,
  so battery power is negated on graphs.
* Devices come from template variables (``battery``, ``charger``, ``device``), so a new
  device appears without editing a dashboard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sunbox.quantities import PROTECTION_BITS
from sunbox.storage import pick

HERE = Path(__file__).parent
OUT = HERE / "dashboards"
DATASOURCE = {"type": "influxdb", "uid": "sunbox-influx"}

#: Flux that chooses the bucket from the range (v.timeRangeStart/Stop come from Grafana).
#: The rule is ``sunbox.storage.pick``'s, shared with ``sunbox web``; raw holds 24 h,
#: the tiers 7 d, 31 d, 366 d and 3660 d.
PICK_BUCKET = pick.flux()

#: The protection bits in words, as the display shows them (one table: sunbox.quantities).
PROTECTION_WORDS = list(PROTECTION_BITS)


def _fields(names: list[str], bands: bool = True) -> str:
    wanted = []
    for name in names:
        wanted.append(name)
        if bands:
            wanted += [f"{name}_min", f"{name}_max"]
    return " or ".join(f'r._field == "{n}"' for n in wanted)


def series(measurement: str, variable: str, names: list[str], negate: bool = False, bands: bool = True) -> str:
    """A time-series query over the picked bucket: mean lines (and min/max bands in tiers)."""
    negation = "\n    |> map(fn: (r) => ({r with _value: -r._value}))" if negate else ""
    return (
        PICK_BUCKET
        + f"""from(bucket: bucket)
    |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
    |> filter(fn: (r) => r._measurement == "{measurement}" and r.device =~ /^${{{variable}:regex}}$/)
    |> filter(fn: (r) => {_fields(names, bands)})
    |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false){negation}
    |> map(fn: (r) => ({{r with _field: r.device + " " + r._field}}))
"""
    )


def latest(measurement: str, variable: str, field: str, negate: bool = False, scale: float = 1.0) -> str:
    """The newest raw value of one field per device (for stat panels)."""
    expression = "-r._value" if negate else "r._value"
    if scale != 1.0:
        expression = f"({expression}) * {scale}"
    return f"""from(bucket: "sunbox_raw")
    |> range(start: -1h)
    |> filter(fn: (r) => r._measurement == "{measurement}" and r.device =~ /^${{{variable}:regex}}$/)
    |> filter(fn: (r) => r._field == "{field}")
    |> last()
    |> map(fn: (r) => ({{_time: r._time, device: r.device, _value: {expression}}}))
    |> group(columns: ["device"])
"""


def alarms_query() -> str:
    flags = ", ".join(f'{{m: {1 << i}, n: "{word}"}}' for i, word in enumerate(PROTECTION_WORDS))
    return f"""import "array"
import "strings"
import "experimental/bitwise"

flags = [{flags}]
words = (bits) => {{
    names = array.map(arr: array.filter(arr: flags, fn: (x) => bitwise.sand(a: bits, b: x.m) != 0), fn: (x) => x.n)
    return if length(arr: names) == 0 then "OK" else strings.joinStr(arr: names, v: ", ")
}}

from(bucket: "sunbox_raw")
    |> range(start: -1h)
    |> filter(fn: (r) => r._measurement == "battery" and r.device =~ /^${{battery:regex}}$/)
    |> filter(fn: (r) => r._field == "protection_bits")
    |> last()
    |> map(fn: (r) => ({{device: r.device, protection: words(bits: r._value)}}))
    |> group()
"""


def charger_alarms_query() -> str:
    return """from(bucket: "sunbox_raw")
    |> range(start: -1h)
    |> filter(fn: (r) => r.device =~ /^${charger:regex}$/ and (r._field == "alarm_bits" or r._field == "error_code"))
    |> last()
    |> map(fn: (r) => ({device: r.device, _field: r._field, _value: float(v: r._value)}))
    |> group()
    |> pivot(rowKey: ["device"], columnKey: ["_field"], valueColumn: "_value")
"""


def staleness_query() -> str:
    return """import "influxdata/influxdb/schema"

from(bucket: "sunbox_raw")
    |> range(start: -24h)
    |> filter(fn: (r) => r._measurement == "health" and r.device =~ /^${device:regex}$/)
    |> filter(fn: (r) => r._field == "last_reading_ms")
    |> last()
    |> map(fn: (r) => ({
        _time: r._time, device: r.device, _value: (float(v: int(v: now())) / 1000000.0 - r._value) / 1000.0,
    }))
    |> group(columns: ["device"])
"""


def energy_query(days: int = 30) -> str:
    """kWh per day over the last ``days`` (issue 31): the energy task's hourly Wh
    (``sunbox_energy``, :mod:`sunbox.storage.energy`) summed per local day, banks and the
    batteries in no bank counted once (the members a bank names in its newest reading are
    left out), chargers as solar, an inverter/charger's AC input as AC in. Days in the
    dashboard's own time zone (Grafana passes none to Flux: UTC days)."""
    return f"""import "strings"
banked =
    from(bucket: "{pick.RULE[0].bucket}")
        |> range(start: -1d)
        |> filter(fn: (r) => r._measurement == "bank" and (r._field == "packs" or r._field == "meter"))
        |> last()
        |> group()
        |> findColumn(fn: (key) => true, column: "_value")
members = strings.split(v: strings.joinStr(arr: banked, v: ","), t: ",")
from(bucket: "{pick.ENERGY_BUCKET}")
    |> range(start: -{days}d)
    |> filter(fn: (r) => (r._measurement == "battery" or r._measurement == "bank" or r._measurement == "charger"
        or r._measurement == "inverter") and (r._field == "in_wh" or r._field == "out_wh"))
    |> filter(fn: (r) => r._measurement != "battery" or not contains(value: r.device, set: members))
    |> filter(fn: (r) => (r._measurement != "charger" and r._measurement != "inverter") or r._field == "in_wh")
    |> map(fn: (r) => ({{
        _time: r._time,
        _value: r._value / 1000.0,
        _field:
            if r._measurement == "charger" then "solar"
            else if r._measurement == "inverter" then "AC in"
            else if r._field == "in_wh" then "into battery"
            else "out of battery",
    }}))
    |> group(columns: ["_field"])
    |> aggregateWindow(every: 1d, fn: sum, createEmpty: false)
"""


def health_series(field: str) -> str:
    fn = "last" if field in ("reconnects", "errors_total") else "mean"
    return (
        PICK_BUCKET
        + f"""from(bucket: bucket)
    |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
    |> filter(fn: (r) => r._measurement == "health" and r.device =~ /^${{device:regex}}$/)
    |> filter(fn: (r) => r._field == "{field}")
    |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)
    |> map(fn: (r) => ({{r with _field: r.device}}))
"""
    )


def connected_query() -> str:
    return (
        PICK_BUCKET
        + """from(bucket: bucket)
    |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
    |> filter(fn: (r) => r._measurement == "health" and r.device =~ /^${device:regex}$/)
    |> filter(fn: (r) => r._field == "connected")
    |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)
    |> map(fn: (r) => ({_time: r._time, _field: r.device, _value: if r._value then 1 else 0}))
    |> group(columns: ["_field"])
"""
    )


def gaps_query() -> str:
    return """from(bucket: "sunbox_2m")
    |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
    |> filter(fn: (r) => r._measurement == "sunbox_tier" and r._field == "raw_values")
    |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: true)
    |> fill(value: 0)
    |> map(fn: (r) => ({r with _field: "raw values per window (0 = gap)"}))
"""


def cells_query() -> str:
    return (
        PICK_BUCKET
        + """from(bucket: bucket)
    |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
    |> filter(fn: (r) => r._measurement == "battery" and r.device =~ /^${battery:regex}$/)
    |> filter(fn: (r) => r._field =~ /^cell_voltage_[0-9]+$/)
    |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)
    |> map(fn: (r) => ({r with _field: r.device + " cell " + strings.trimPrefix(v: r._field, prefix: "cell_voltage_")}))
"""
    ).replace(PICK_BUCKET, 'import "strings"\n\n' + PICK_BUCKET, 1)


def balancing_query() -> str:
    return (
        PICK_BUCKET
        + """from(bucket: bucket)
    |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
    |> filter(fn: (r) => r._measurement == "battery" and r.device =~ /^${battery:regex}$/)
    |> filter(fn: (r) => r._field == "balance_bits")
    |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)
    |> map(fn: (r) => ({_time: r._time, _field: r.device + " balancing cells (bitmask)", _value: r._value}))
    |> group(columns: ["_field"])
"""
    )


# --- panels -------------------------------------------------------------------------------


class Layout:
    """Hands out panel ids and grid positions."""

    def __init__(self) -> None:
        self.next_id = 1

    def panel(self, kind: str, title: str, x: int, y: int, w: int, h: int, **extra: Any) -> dict[str, Any]:
        panel = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "datasource": DATASOURCE,
        }
        self.next_id += 1
        panel.update(extra)
        return panel


def _targets(*queries: str) -> list[dict[str, Any]]:
    return [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "query": q} for i, q in enumerate(queries)]


def stat(
    layout: Layout,
    title: str,
    pos: tuple[int, int, int, int],
    query: str,
    unit: str,
    decimals: int = 1,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> dict[str, Any]:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    return layout.panel(
        "stat",
        title,
        *pos,
        targets=_targets(query),
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
            "colorMode": "background" if thresholds else "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        fieldConfig={
            "defaults": {
                "unit": unit,
                "decimals": decimals,
                "displayName": "${__field.labels.device}",
                "thresholds": {"mode": "absolute", "steps": steps},
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
    )


def timeseries(
    layout: Layout, title: str, pos: tuple[int, int, int, int], queries: list[str], unit: str, description: str = ""
) -> dict[str, Any]:
    bands = [
        {
            "matcher": {"id": "byRegexp", "options": ".*_max$"},
            "properties": [
                {"id": "custom.fillBelowTo", "value": "${__field.name}"},
                {"id": "custom.lineWidth", "value": 0},
                {"id": "custom.fillOpacity", "value": 20},
            ],
        },
        {
            "matcher": {"id": "byRegexp", "options": ".*_min$"},
            "properties": [
                {"id": "custom.lineWidth", "value": 0},
                {"id": "custom.hideFrom", "value": {"legend": True, "tooltip": False, "viz": False}},
            ],
        },
    ]
    return layout.panel(
        "timeseries",
        title,
        *pos,
        description=description,
        targets=_targets(*queries),
        fieldConfig={
            "defaults": {"unit": unit, "custom": {"lineWidth": 2, "fillOpacity": 0, "spanNulls": False}},
            "overrides": bands,
        },
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    )


def table(layout: Layout, title: str, pos: tuple[int, int, int, int], query: str) -> dict[str, Any]:
    return layout.panel(
        "table",
        title,
        *pos,
        targets=_targets(query),
        options={"showHeader": True},
        fieldConfig={"defaults": {}, "overrides": []},
    )


def text(layout: Layout, pos: tuple[int, int, int, int], content: str) -> dict[str, Any]:
    panel = layout.panel("text", "", *pos, options={"mode": "markdown", "content": content})
    panel.pop("datasource")
    return panel


SIGNS = "**Signs:** supply + (PV, battery discharge) · consumption − (load, battery charge)"


def variable(name: str, label: str, measurement: str | None) -> dict[str, Any]:
    predicate = f'r._measurement == "{measurement}"' if measurement else 'r._measurement != "sunbox_tier"'
    query = f"""import "influxdata/influxdb/schema"

union(tables: [
    schema.tagValues(bucket: "sunbox_raw", tag: "device", predicate: (r) => {predicate}, start: -24h),
    schema.tagValues(bucket: "sunbox_2m", tag: "device", predicate: (r) => {predicate}, start: -7d),
])
    |> unique()
"""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


VARIABLES = [
    variable("battery", "Battery", "battery"),
    variable("bank", "Bank", "bank"),
    variable("charger", "Charger", "charger"),
    variable("device", "Device", None),
]


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], time_from: str, refresh: str, tags: list[str]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["sunbox", *tags],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m"]},
        "templating": {"list": VARIABLES},
        "annotations": {"list": []},
        "links": [
            {"title": name, "type": "link", "url": f"/d/{link_uid}"}
            for name, link_uid in (
                ("Now", "sunbox-now"),
                ("History", "sunbox-history"),
                ("Cells", "sunbox-cells"),
                ("Health", "sunbox-health"),
                ("Overview", "sunbox-overview"),
            )
        ],
        "panels": panels,
    }


STALE = [(None, "green"), (60, "orange"), (300, "red")]
SOC = [(None, "red"), (20, "orange"), (40, "green")]


def now_dashboard() -> dict[str, Any]:
    """The kiosk's home: 800x480, readable from a metre away (grid 24 columns, ~15 rows)."""
    lay = Layout()
    panels = [
        stat(lay, "State of charge", (0, 0, 8, 5), latest("battery", "battery", "soc"), "percent", 0, SOC),
        stat(lay, "Battery power", (8, 0, 8, 5), latest("battery", "battery", "power", negate=True), "watt", 0),
        stat(lay, "PV power", (16, 0, 8, 5), latest("charger", "charger", "charge_power"), "watt", 0),
        stat(lay, "Voltage", (0, 5, 6, 3), latest("battery", "battery", "voltage"), "volt", 2),
        stat(lay, "Current", (6, 5, 6, 3), latest("battery", "battery", "current", negate=True), "amp", 1),
        stat(lay, "Load", (12, 5, 6, 3), latest("charger", "charger", "load_power", negate=True), "watt", 0),
        stat(
            lay,
            "Cell spread",
            (18, 5, 6, 3),
            latest("battery", "battery", "cell_voltage_delta", scale=1000.0),
            "mvolt",
            0,
            [(None, "green"), (30, "orange"), (80, "red")],
        ),
        stat(lay, "Temperature", (0, 8, 6, 3), latest("battery", "battery", "temperature_01"), "celsius", 0),
        stat(lay, "Controller", (6, 8, 6, 3), latest("charger", "charger", "controller_temperature"), "celsius", 0),
        stat(lay, "Last reading", (12, 8, 12, 3), staleness_query(), "s", 0, STALE),
        table(lay, "Battery protection", (0, 11, 12, 4), alarms_query()),
        table(lay, "Charger alarms", (12, 11, 12, 3), charger_alarms_query()),
        text(lay, (12, 14, 12, 1), SIGNS),
    ]
    return dashboard("sunbox-now", "Sunbox: Now", panels, "now-1h", "10s", ["kiosk"])


def history_panels(lay: Layout, width: int, height: int) -> list[dict[str, Any]]:
    half = width // 2
    return [
        timeseries(lay, "State of charge", (0, 0, half, height), [series("battery", "battery", ["soc"])], "percent"),
        timeseries(
            lay,
            "Battery power (discharge +, charge −)",
            (half, 0, half, height),
            [series("battery", "battery", ["power"], negate=True)],
            "watt",
            SIGNS,
        ),
        timeseries(
            lay,
            "PV and charge power",
            (0, height, half, height),
            [series("charger", "charger", ["pv_power", "charge_power"])],
            "watt",
            SIGNS,
        ),
        timeseries(
            lay,
            "Load (consumption −)",
            (half, height, half, height),
            [series("charger", "charger", ["load_power"], negate=True)],
            "watt",
            SIGNS,
        ),
        timeseries(
            lay,
            "Battery voltage",
            (0, 2 * height, half, height),
            [series("battery", "battery", ["voltage"]), series("charger", "charger", ["pv_voltage"])],
            "volt",
        ),
        timeseries(
            lay,
            "Temperatures",
            (half, 2 * height, half, height),
            [
                series("battery", "battery", ["temperature_01", "temperature_02"]),
                series("charger", "charger", ["controller_temperature"]),
            ],
            "celsius",
        ),
    ]


def energy_panel(lay: Layout, pos: tuple[int, int, int, int]) -> dict[str, Any]:
    panel = timeseries(
        lay,
        "Energy per day, last 30 days (kWh; banks counted once)",
        pos,
        [energy_query()],
        "kwatth",
        "From the energy task's hourly Wh (docs/banks.md). A day without readings has no bar.",
    )
    panel["fieldConfig"]["defaults"]["custom"].update({"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1})
    return panel


def bank_panels(lay: Layout, y: int, width: int, height: int) -> list[dict[str, Any]]:
    """Banks (docs/banks.md): parallel packs and their meter as one battery, as
    ``sunbox.banks`` publishes them (measurement ``bank``)."""
    half = width // 2
    return [
        timeseries(
            lay,
            "Bank state of charge (meter's, or capacity-weighted)",
            (0, y, half, height),
            [series("bank", "bank", ["soc"])],
            "percent",
        ),
        timeseries(
            lay,
            "Bank power (discharge +, charge −; counted once)",
            (half, y, half, height),
            [series("bank", "bank", ["power"], negate=True)],
            "watt",
            SIGNS,
        ),
    ]


def history_dashboard() -> dict[str, Any]:
    lay = Layout()
    panels = history_panels(lay, 24, 5)
    panels += bank_panels(lay, 15, 24, 5)
    panels.append(energy_panel(lay, (0, 20, 24, 6)))
    return dashboard("sunbox-history", "Sunbox: History", panels, "now-24h", "1m", ["history"])


def cells_dashboard() -> dict[str, Any]:
    lay = Layout()
    panels = [
        timeseries(lay, "Cell voltages", (0, 0, 24, 8), [cells_query()], "volt"),
        timeseries(
            lay,
            "Cell spread (max − min)",
            (0, 8, 12, 6),
            [series("battery", "battery", ["cell_voltage_delta"])],
            "volt",
        ),
        timeseries(lay, "Balancing", (12, 8, 12, 6), [balancing_query()], "none"),
    ]
    return dashboard("sunbox-cells", "Sunbox: Cells", panels, "now-6h", "30s", ["cells"])


def health_dashboard() -> dict[str, Any]:
    lay = Layout()
    panels = [
        lay.panel(
            "state-timeline",
            "Link state (1 = connected)",
            0,
            0,
            24,
            5,
            targets=_targets(connected_query()),
            options={"showValue": "never", "mergeValues": True},
            fieldConfig={
                "defaults": {
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                    },
                    "color": {"mode": "thresholds"},
                },
                "overrides": [],
            },
        ),
        timeseries(lay, "Reconnects", (0, 5, 12, 5), [health_series("reconnects")], "none"),
        timeseries(lay, "RSSI", (12, 5, 12, 5), [health_series("rssi")], "dBm"),
        timeseries(lay, "Poll latency", (0, 10, 12, 5), [health_series("poll_latency_ms")], "ms"),
        timeseries(lay, "Errors", (12, 10, 12, 5), [health_series("errors_total")], "none"),
        timeseries(lay, "Data gaps (raw values per window, 2 min tier)", (0, 15, 24, 5), [gaps_query()], "none"),
    ]
    return dashboard("sunbox-health", "Sunbox: Health", panels, "now-24h", "1m", ["health"])


def overview_dashboard() -> dict[str, Any]:
    """For LAN browsers: titles, larger panels, the now values above the history."""
    lay = Layout()
    panels: list[dict[str, Any]] = [
        text(lay, (0, 0, 24, 2), "# Sunbox\n" + SIGNS),
        stat(lay, "State of charge", (0, 2, 6, 5), latest("battery", "battery", "soc"), "percent", 0, SOC),
        stat(lay, "Battery power", (6, 2, 6, 5), latest("battery", "battery", "power", negate=True), "watt", 0),
        stat(lay, "PV power", (12, 2, 6, 5), latest("charger", "charger", "charge_power"), "watt", 0),
        stat(lay, "Last reading", (18, 2, 6, 5), staleness_query(), "s", 0, STALE),
    ]
    for panel in history_panels(lay, 24, 9):
        panel["gridPos"]["y"] += 7
        panels.append(panel)
    panels += bank_panels(lay, 7 + 27, 24, 9)
    panels.append(energy_panel(lay, (0, 7 + 36, 24, 8)))
    return dashboard("sunbox-overview", "Sunbox: Overview", panels, "now-7d", "1m", ["lan"])


BUILDERS = {
    "now": now_dashboard,
    "history": history_dashboard,
    "cells": cells_dashboard,
    "health": health_dashboard,
    "overview": overview_dashboard,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in BUILDERS.items()
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, content in render().items():
        (OUT / name).write_text(content)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
