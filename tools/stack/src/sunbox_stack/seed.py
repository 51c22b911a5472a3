"""Seed a test InfluxDB with 23 h of raw readings and years of tier data.

Shared by the dashboards' tests (``grafana/tests``) and the display's
(``collector/tests/test_web*.py``): the default layout is applied (org ``sunbox``), three
devices (``bat1``, ``bat2`` batteries and ``mppt`` charger, from the captured JBD and
LiTime frames) get one raw reading a minute for 23 h, and every tier gets windows back
to its retention (at most 10 years) with mean, ``_min`` and ``_max`` fields. The
energy bucket gets each device's Wh for every hour of the last 400 days (a day with
nothing 3 days ago, a half-covered day 5 days ago) and one point a day before that, back
10 years (:func:`energy_points`); the alarm events' bucket gets :data:`ALARM_EVENTS`: a
low SOC on ``bat1`` raised, acknowledged and cleared 3 h ago, and one raised and cleared
a year ago.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from sunbox.model import Health
from sunbox.protocols import jbd, litime
from sunbox.storage import influx_setup, layout
from sunbox.storage.points import is_measured, parse_alarm_event, parse_message

from .servers import InfluxDB

FIXTURES = Path(__file__).resolve().parents[4] / "collector" / "tests" / "fixtures" / "devices.json"
DAY = 86_400
DEVICES = [("bat1", "battery"), ("bat2", "battery"), ("mppt", "charger"), ("bank1", "bank")]
#: the devices with energy points: the bank's would count twice in the energy views' figures
ENERGY_DEVICES = [d for d in DEVICES if d[1] != "bank"]


def measurements(kind: str) -> tuple[str, ...]:
    """The measurements a seeded device writes: its kind's, and health (a bank has none)."""
    return (kind,) if kind == "bank" else (kind, "health")


#: (what, seconds before the seed) of the seeded alarm events, all of soc-low on bat1
ALARM_EVENTS = [
    ("raised", 3 * 3600),
    ("acked", 3 * 3600 - 300),
    ("cleared", 2 * 3600),
    ("raised", 365 * DAY),
    ("cleared", 365 * DAY - 3600),
]


#: days ago with no energy at all, and with only their first 12 hours
ENERGY_GAP_DAY, ENERGY_HALF_DAY = 3, 5


def energy_points(now_ms: int) -> list[dict[str, Any]]:
    """Hourly energy (sunbox.storage.energy's fields) for ``bat1``, ``bat2`` and ``mppt``
    up to the last complete hour: batteries charge 300 Wh an hour by day and give 200 Wh by
    night, the charger yields 400 Wh an hour by day (UTC 08-17); daily points further back."""
    hour_ms = 3_600_000
    last = now_ms // hour_ms * hour_ms - hour_ms
    out: list[dict[str, Any]] = []

    def point(device: str, kind: str, t: int, in_wh: float, out_wh: float, covered_s: float) -> dict[str, Any]:
        fields = {"in_wh": in_wh, "out_wh": out_wh, "covered_s": covered_s}
        return {"measurement": kind, "tags": {"device": device, "kind": kind}, "fields": fields, "time": t}

    for h in range(400 * 24):
        t = last - h * hour_ms
        days_ago = last // 86_400_000 - t // 86_400_000
        if days_ago == ENERGY_GAP_DAY or (days_ago == ENERGY_HALF_DAY and (t // hour_ms) % 24 >= 12):
            continue
        day = 8 <= (t // hour_ms) % 24 < 18
        for device, kind in ENERGY_DEVICES:
            if kind == "charger":
                out.append(point(device, kind, t, 400.0 if day else 0.0, 0.0, 3600.0))
            else:
                out.append(point(device, kind, t, 300.0 if day else 0.0, 0.0 if day else 200.0, 3600.0))
    first_daily = last - 400 * 24 * hour_ms
    for d in range(1, 3650 - 400):
        t = first_daily - d * 86_400_000
        for device, kind in ENERGY_DEVICES:
            if kind == "charger":
                out.append(point(device, kind, t, 4000.0, 0.0, 86_400.0))
            else:
                out.append(point(device, kind, t, 3000.0, 2800.0, 86_400.0))
    return out


def alarm_events(now_ms: int) -> list[dict[str, Any]]:
    """:data:`ALARM_EVENTS` as the engine would publish them, validated as the writer does."""
    out = []
    for what, ago in ALARM_EVENTS:
        alarm = {"rule": "soc-low", "device": "bat1", "severity": "warning", "text": "SOC below 20 %", "value": 19.5}
        body = json.dumps({"what": what, "time_ms": now_ms - ago * 1000, "alarm": alarm}).encode()
        out.append(parse_alarm_event(body, now_ms).to_record())
    return out


def samples() -> dict[str, dict[str, Any]]:
    data = json.loads(FIXTURES.read_text())
    battery: dict[str, Any] = {}
    for frame in data["jbd"][:3]:
        battery.update(jbd.decode(bytes.fromhex(frame["hex"])))
    cells = battery["cell_voltages"]  # derived as the JBD driver does
    battery |= {
        "cell_voltage_min": min(cells),
        "cell_voltage_max": max(cells),
        "cell_voltage_delta": max(cells) - min(cells),
    }
    charger: dict[str, Any] = {}
    for frame in data["litime_mppt"]:
        charger.update(litime.decode(bytes.fromhex(frame["hex"])))
    health = Health("x", connected=True, rssi=-70, poll_latency_ms=2.0).snapshot(0).values
    # a bank as sunbox.banks publishes it; its packs are no seeded device, so nothing
    # the seed holds is a bank member (the energy views count every seeded battery)
    bank = {
        "soc": 81.0, "voltage": 13.3, "current": -3.8, "power": -50.5, "capacity_nominal": 380.0,
        "capacity_remaining": 307.8, "packs_fresh": 2, "packs_total": 2, "partial": False,
        "packs": "seed-pack-1,seed-pack-2", "cell_voltage_min": 3.30, "cell_voltage_max": 3.34,
    }  # fmt: skip
    return {"battery": battery, "charger": charger, "bank": bank, "health": health}


def tier_fields(fields: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if not is_measured(name):
            out[name] = value
        else:
            mean = value * (1 + rng.uniform(-0.02, 0.02))
            out[name], out[f"{name}_min"], out[f"{name}_max"] = mean, mean * 0.98, mean * 1.02
    return out


def seed_history(influxdb: InfluxDB) -> str:
    """Seed ``influxdb`` (see the module docstring); return the read-only dashboards token."""
    result = influx_setup.apply(influxdb.url, influxdb.token, layout.parse(None), layout.find_template().read_text())
    now_ms = int(time.time() * 1000)
    rng = random.Random(5)
    measured = samples()
    raw = []
    for t in range(now_ms - 23 * 3_600_000, now_ms - 5000, 60_000):
        for device, kind in DEVICES:
            for measurement in measurements(kind):
                values = dict(measured[measurement])
                if measurement == "health":
                    values["last_reading_ms"] = t
                body = json.dumps({"device_id": device, "kind": measurement, "time_ms": t, **values}).encode()
                topic = f"sunbox/{device}/{'health' if measurement == 'health' else 'state'}"
                raw.append(parse_message(topic, body, now_ms).to_record())
    tiers: dict[str, list[dict[str, Any]]] = {}
    spacing = {"2m": 600_000, "5m": 3_600_000, "30m": 6 * 3_600_000, "2h": 2 * 86_400_000}
    default = layout.parse(None)
    for tier in default.tiers:
        every = tier.every * 1000
        points = []
        first = now_ms - min(tier.retention, 3650 * DAY) * 1000 + every
        for window in range(first - first % every, now_ms - every, spacing[tier.name]):
            for device, kind in DEVICES:
                for measurement in measurements(kind):
                    topic = f"sunbox/{device}/{'health' if measurement == 'health' else 'state'}"
                    body = json.dumps(
                        {"device_id": device, "kind": measurement, "time_ms": now_ms, **measured[measurement]}
                    ).encode()
                    points.append(
                        {
                            "measurement": measurement,
                            "tags": {"device": device, "kind": measurement},
                            "fields": tier_fields(parse_message(topic, body, now_ms).fields, rng),
                            "time": window,
                        }
                    )
            points.append({"measurement": "sunbox_tier", "fields": {"raw_values": 300}, "time": window})
        tiers[default.bucket_of(tier)] = points
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org="sunbox", timeout=120_000) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        api.write("sunbox_raw", record=raw, write_precision=WritePrecision.MS)
        for bucket, points in tiers.items():
            api.write(bucket, record=points, write_precision=WritePrecision.MS)
        api.write(default.events_bucket, record=alarm_events(now_ms), write_precision=WritePrecision.MS)
        api.write(default.energy_bucket, record=energy_points(now_ms), write_precision=WritePrecision.MS)
    return str(result.tokens["dashboards"])
