"""The storage layout on the real InfluxDB: buckets, tokens, tasks, and the tiers' values.

The downsampling script is run through the query API with ``now`` overridden, at the
times the task scheduler would run it, with a stretch of several hours where it does not
run (InfluxDB down) while the raw backlog arrives in two parts. Every tier is then
compared with a reference computed in Python from the same raw points.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from sunbox.storage import influx_setup, layout
from sunbox.storage.points import FLAG_FIELDS, LAST_FIELDS, RawPoint, parse_message
from sunbox_stack.servers import InfluxDB

# one worker keeps this module's fixtures (tools/test.sh runs pytest-xdist)
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("tiers")]

HOUR = 3_600_000
STEP_MS = 10_000
LAYOUT = layout.parse(
    {
        "org": "tiers",
        "raw_retention": "96h",  # the synthetic data lies 50 h back, out of reach of the live tasks
        "catchup": "23h",
    }
)


@pytest.fixture(scope="module")
def applied(influxdb: InfluxDB) -> influx_setup.ApplyResult:
    template = layout.find_template().read_text()
    return influx_setup.apply(influxdb.url, influxdb.token, LAYOUT, template)


@pytest.fixture(scope="module")
def client(influxdb: InfluxDB) -> Iterator[InfluxDBClient]:
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=LAYOUT.org, timeout=60_000) as c:
        yield c


def synthetic(base: int, hours: int) -> list[RawPoint]:
    """3 devices + a health series every 10 s, with a device gap and an all-devices gap."""
    rng = random.Random(7)
    points = []
    for t in range(base, base + hours * HOUR, STEP_MS):
        rel = t - base
        pi_off = 3 * HOUR <= rel < 3 * HOUR + 30 * 60_000
        if pi_off:
            continue
        for device in ("bat1", "bat2"):
            if device == "bat2" and HOUR <= rel < HOUR + 40 * 60_000:
                continue
            body = {
                "device_id": device,
                "kind": "battery",
                "time_ms": t + rng.randrange(0, 900),
                "voltage": 13.0 + rng.random(),
                "current": rng.uniform(-20, 20),
                "soc": rng.uniform(20, 100),
                "cycles": 100 + rel // HOUR,
                "cell_voltages": [3.2 + rng.random() / 10 for _ in range(4)],
                "protection_bits": 1 << rng.randrange(0, 4) if rng.random() < 0.05 else 0,
                "charge_fet_on": rng.random() < 0.9,
                "model": "SP04S034",
            }
            points.append(parse_message(f"sunbox/{device}/state", json.dumps(body).encode(), t + HOUR))
        body = {
            "device_id": "mppt",
            "kind": "charger",
            "time_ms": t,
            "pv_voltage": rng.uniform(0, 40),
            "charge_power": rng.uniform(0, 400),
            "charge_state": rng.choice(["bulk", "absorption", "float"]),
            "yield_today": float(rel // 1000),
            "alarm_bits": rng.choice([0, 0, 0, 2, 8]),
            "load_on": True,
        }
        points.append(parse_message("sunbox/mppt/state", json.dumps(body).encode(), t + HOUR))
        if rel % 30_000 == 0:
            body = {
                "device_id": "bat1",
                "kind": "health",
                "time_ms": t,
                "rssi": rng.randrange(-90, -50),
                "connected": True,
                "reconnects": rel // (2 * HOUR),
            }
            points.append(parse_message("sunbox/bat1/health", json.dumps(body).encode(), t + HOUR))
    return points


def reference(points: list[RawPoint], every_ms: int, stop_ms: int) -> dict[tuple[str, str, str, int], Any]:
    """What a tier must hold: keyed by (measurement, device, field, window start ms)."""
    groups: dict[tuple[str, str, str, int], list[tuple[int, Any]]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for p in points:
        window = p.time_ms - p.time_ms % every_ms
        if window + every_ms > stop_ms:
            continue
        for name, value in p.fields.items():
            groups[(p.measurement, p.device, name, window)].append((p.time_ms, value))
            counts[window] += 1
    out: dict[tuple[str, str, str, int], Any] = {}
    for (measurement, device, name, window), items in groups.items():
        values = [v for _, v in sorted(items, key=lambda tv: tv[0])]
        if name in FLAG_FIELDS:
            acc = 0
            for v in values:
                acc |= v
            out[(measurement, device, name, window)] = acc
        elif name in LAST_FIELDS or not isinstance(values[0], float):
            out[(measurement, device, name, window)] = values[-1]
        else:
            out[(measurement, device, name, window)] = math.fsum(values) / len(values)
            out[(measurement, device, name + "_min", window)] = min(values)
            out[(measurement, device, name + "_max", window)] = max(values)
    for window, count in counts.items():
        out[("sunbox_tier", "", "raw_values", window)] = count
    return out


def tier_contents(
    client: InfluxDBClient, bucket: str, start_ms: int, stop_ms: int
) -> dict[tuple[str, str, str, int], Any]:
    start, stop = start_ms * 1_000_000, stop_ms * 1_000_000
    query = f'from(bucket: "{bucket}") |> range(start: time(v: {start}), stop: time(v: {stop}))'
    out: dict[tuple[str, str, str, int], Any] = {}
    for table in client.query_api().query(query):
        for record in table.records:
            key = (
                record.get_measurement(),
                record.values.get("device") or "",
                record.get_field(),
                int(record.get_time().timestamp() * 1000),
            )
            assert key not in out, f"window written twice: {key}"
            out[key] = record.get_value()
    return out


def run_script(influxdb: InfluxDB, script: str, now_ms: int) -> None:
    now = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    response = requests.post(
        f"{influxdb.url}/api/v2/query",
        params={"org": LAYOUT.org},
        headers={"Authorization": f"Token {influxdb.token}"},
        json={"query": script, "now": now, "dialect": {"annotations": []}},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:500]


def write(client: InfluxDBClient, points: list[RawPoint]) -> None:
    api = client.write_api(write_options=SYNCHRONOUS)
    for i in range(0, len(points), 5000):
        api.write(
            LAYOUT.raw_bucket, record=[p.to_record() for p in points[i : i + 5000]], write_precision=WritePrecision.MS
        )


def test_tiers_match_a_python_reference_after_a_gap(
    influxdb: InfluxDB, applied: influx_setup.ApplyResult, client: InfluxDBClient
) -> None:
    base = (int(time.time() * 1000) - 50 * HOUR) // (2 * HOUR) * (2 * HOUR)
    end = base + 6 * HOUR
    points = synthetic(base, 6)
    template = layout.find_template().read_text()
    scripts = {tier.name: layout.render_task(LAYOUT, tier, template) for tier in LAYOUT.tiers}

    # up to +2 h: data arrives and the tasks run on their schedule (run_every, longer
    # than the window for the fine tiers: each run fills every window since the last)
    assert any(tier.run_every_s > tier.every for tier in LAYOUT.tiers)
    write(client, [p for p in points if p.time_ms < base + 2 * HOUR])
    for tier in LAYOUT.tiers:
        run_every = tier.run_every_s * 1000
        for now in range(base + run_every, base + 2 * HOUR + 1, run_every):
            run_script(influxdb, scripts[tier.name], now + 1000)
    # +2 h .. +5 h: InfluxDB is down; at +5 h it is back, the backlog drains, the tasks
    # catch up while only part of it has arrived, then run again once it is complete
    write(client, [p for p in points if base + 2 * HOUR <= p.time_ms < base + 3 * HOUR + 50 * 60_000])
    for tier in LAYOUT.tiers:
        run_script(influxdb, scripts[tier.name], base + 5 * HOUR + 60_000)
    write(client, [p for p in points if p.time_ms >= base + 3 * HOUR + 50 * 60_000])
    for tier in LAYOUT.tiers:
        run_script(influxdb, scripts[tier.name], end + 5000)

    for tier in LAYOUT.tiers:
        every = tier.every * 1000
        want = reference(points, every, end)
        have = tier_contents(client, LAYOUT.bucket_of(tier), base - HOUR, end + HOUR)
        assert set(have) == set(want), (
            f"tier {tier.name}: missing {sorted(set(want) - set(have))[:5]}, extra {sorted(set(have) - set(want))[:5]}"
        )
        for key, expected in want.items():
            if isinstance(expected, float):
                assert have[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), (tier.name, key)
            else:
                assert have[key] == expected, (tier.name, key)
        windows = {k[3] for k in want if k[0] == "sunbox_tier"}
        gap = {
            w for w in range(base, end, every) if base + 3 * HOUR <= w and w + every <= base + 3 * HOUR + 30 * 60_000
        }
        assert not windows & gap, "a window inside the all-devices gap was written"
        assert len(windows) >= (6 * HOUR - 30 * 60_000) // every - 1

    # rerunning windows writes the same points (idempotent)
    before = {t.name: tier_contents(client, LAYOUT.bucket_of(t), base - HOUR, end + HOUR) for t in LAYOUT.tiers}
    for tier in LAYOUT.tiers:
        run_script(influxdb, scripts[tier.name], base + 4 * HOUR + 1000)
        run_script(influxdb, scripts[tier.name], end + 5000)
    after = {t.name: tier_contents(client, LAYOUT.bucket_of(t), base - HOUR, end + HOUR) for t in LAYOUT.tiers}
    assert after == before


def power_profile(t_s: float) -> float:
    """Battery power (W, + charging) of the energy test: a 40-minute swing between
    charging and discharging, so windows hold sign changes."""
    return 800 * math.sin(2 * math.pi * t_s / 2400) + 150


def exact_energy(start_s: float, stop_s: float) -> tuple[float, float]:
    """The integral of the profile's positive and negative parts, in Wh (0.1 s steps)."""
    pos = neg = 0.0
    step = 0.1
    t = start_s + step / 2
    while t < stop_s:
        p = power_profile(t)
        pos, neg = (pos + p * step, neg) if p > 0 else (pos, neg - p * step)
        t += step
    return pos / 3600, neg / 3600


def energy_contents(client: InfluxDBClient, start_ms: int, stop_ms: int) -> dict[tuple[str, str, int], float]:
    query = (
        f'from(bucket: "{LAYOUT.energy_bucket}") |> range(start: {start_ms // 1000}, stop: {stop_ms // 1000})'
        ' |> filter(fn: (r) => r.device == "en-bat" or r.device == "en-mppt" or r.device == "en-multi")'
    )
    out: dict[tuple[str, str, int], float] = {}
    for table in client.query_api().query(query):
        for record in table.records:
            key = (record.values["device"], record.get_field(), int(record.get_time().timestamp() * 1000))
            out[key] = record.get_value()
    return out


def test_energy_per_hour_is_the_integral_of_power_and_a_gap_is_not_energy(
    influxdb: InfluxDB, applied: influx_setup.ApplyResult, client: InfluxDBClient
) -> None:
    """Issue 31: the hourly energy task (sunbox.storage.energy) on a day of readings 5 s
    apart, charging and discharging in turn, with 20 minutes without a reading: each
    hour's Wh in and out, and the day's, within 1 % of the exact integral over the time
    readings cover, the gap counted as neither energy nor coverage; a charger's PV yield;
    the task run on its schedule, then after a stretch it missed; rerun, the same."""
    base = (int(time.time() * 1000) - 72 * HOUR) // HOUR * HOUR
    gap = (base + 2 * HOUR + 10 * 60_000, base + 2 * HOUR + 30 * 60_000)
    points = []
    for k in range(24 * 3600 // 5):
        t = base + k * 5000
        if gap[0] < t < gap[1]:
            continue
        offset = (t - base) / 1000
        body = {"device_id": "en-bat", "kind": "battery", "time_ms": t, "power": power_profile(offset)}
        points.append(parse_message("sunbox/en-bat/state", json.dumps(body).encode(), t + 1000))
        body = {"device_id": "en-mppt", "kind": "charger", "time_ms": t, "charge_power": 300.0}
        points.append(parse_message("sunbox/en-mppt/state", json.dumps(body).encode(), t + 1000))
        body = {"device_id": "en-multi", "kind": "inverter", "time_ms": t, "ac_in_power": 200.0}
        points.append(parse_message("sunbox/en-multi/state", json.dumps(body).encode(), t + 1000))
    write(client, points)
    script = LAYOUT.energy_task_flux()
    for h in range(1, 13):  # every hour for 12 hours, then nothing until the day is over
        run_script(influxdb, script, base + h * HOUR + 1000)
    run_script(influxdb, script, base + 24 * HOUR + 1000)
    have = energy_contents(client, base - HOUR, base + 25 * HOUR)
    assert {k[2] for k in have} == {base + h * HOUR for h in range(24)}, sorted(have)
    errors = []
    day_in = day_out = 0.0
    for h in range(24):
        start, stop = base + h * HOUR, base + (h + 1) * HOUR
        covered = [(start, stop)]
        if start < gap[0] < stop:  # the gap, and the reading after it (its interval is the gap)
            covered = [(start, gap[0] // 5000 * 5000), (gap[1] // 5000 * 5000 + 5000, stop)]
        pos = neg = 0.0
        for a, b in covered:
            p, n = exact_energy((a - base) / 1000, (b - base) / 1000)
            pos, neg = pos + p, neg + n
        seconds = sum(b - a for a, b in covered) / 1000 - (5 if h == 0 else 0)  # the first reading has no interval
        errors += [have[("en-bat", "in_wh", start)] / pos - 1, have[("en-bat", "out_wh", start)] / neg - 1]
        day_in, day_out = day_in + pos, day_out + neg
        assert have[("en-bat", "in_wh", start)] == pytest.approx(pos, rel=0.01), h
        assert have[("en-bat", "out_wh", start)] == pytest.approx(neg, rel=0.01), h
        assert have[("en-bat", "covered_s", start)] == pytest.approx(seconds, abs=5.5), h
        assert have[("en-mppt", "in_wh", start)] == pytest.approx(300 * seconds / 3600, abs=300 * 5.5 / 3600), h
        assert have[("en-mppt", "out_wh", start)] == 0
        # a Multi's AC input (shore power, a generator)
        assert have[("en-multi", "in_wh", start)] == pytest.approx(200 * seconds / 3600, abs=200 * 5.5 / 3600), h
    assert 1190 < 3600 - have[("en-bat", "covered_s", base + 2 * HOUR)] < 1215, "the 20 minutes are not covered"
    total = sum(v for k, v in have.items() if k[:2] == ("en-bat", "in_wh"))
    out = sum(v for k, v in have.items() if k[:2] == ("en-bat", "out_wh"))
    assert total == pytest.approx(day_in, rel=0.01) and out == pytest.approx(day_out, rel=0.01)
    worst = max(abs(e) for e in errors)
    print(
        f"energy task: a day, Wh in {total:.1f} (exact {day_in:.1f}), out {out:.1f} (exact {day_out:.1f}); "
        f"the worst hour off the exact integral by {worst:.3%}"
    )
    run_script(influxdb, script, base + 24 * HOUR + 1000)
    assert energy_contents(client, base - HOUR, base + 25 * HOUR) == have


def test_apply_is_idempotent_and_the_tasks_run(influxdb: InfluxDB, applied: influx_setup.ApplyResult) -> None:
    assert set(applied.task_ids) == {f"sunbox_downsample_{t.name}" for t in LAYOUT.tiers} | {"sunbox_energy"}
    template = layout.find_template().read_text()
    again = influx_setup.apply(influxdb.url, influxdb.token, LAYOUT, template)
    assert not again.changed, again.changes
    assert again.tokens == applied.tokens
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, timeout=30_000) as c:
        tasks = c.tasks_api()
        users = {u.id: u.name for u in c.users_api().find_users(limit=100).users}
        runs = {}
        for name, task_id in applied.task_ids.items():
            task = tasks.find_task_by_id(task_id)
            assert task.status == "active" and users[task.owner_id] == influx_setup.TASKS_USER
            tier = next((t for t in LAYOUT.tiers if LAYOUT.task_name(t) == name), None)
            every = layout.flux_duration(tier.run_every_s) if tier else "1h"
            assert "offset" not in (task.offset or "") and task.every == every
            runs[name] = tasks.run_manually(task_id).id
        deadline = time.monotonic() + 60
        for name, run_id in runs.items():
            status = "scheduled"
            while status in ("scheduled", "started", "unknown"):
                assert time.monotonic() < deadline, f"{name} run still {status}"
                time.sleep(0.2)
                try:
                    status = tasks.get_run(applied.task_ids[name], run_id).status
                except ApiException as exc:  # between finishing and being logged a run is briefly not found
                    assert exc.status == 404, exc
                    status = "unknown"
            if status != "success":  # the run's log, for the message only (fetching it may itself 404)
                try:
                    logs = [entry.message for entry in tasks.get_run_logs(applied.task_ids[name], run_id)]
                except ApiException as exc:
                    logs = [f"no log: {exc.status}"]
                raise AssertionError(f"{name} run {status}: {logs}")


def test_apply_takes_the_operator_token_on_stdin_and_prints_the_tokens(
    influxdb: InfluxDB, applied: influx_setup.ApplyResult, tmp_path: Path
) -> None:
    """How the influxdb role calls it (issue 16): no token in argv or the environment, no file left."""
    env = {k: v for k, v in os.environ.items() if k != "INFLUX_TOKEN"}
    same = tmp_path / "storage.yaml"
    same.write_text(json.dumps({"org": "tiers", "raw_retention": "96h", "catchup": "23h"}))  # LAYOUT's
    command = [sys.executable, "-m", "sunbox.cli", "influx", "apply", "--url", influxdb.url, "-c", str(same)]
    result = subprocess.run(
        [*command, "--token-file", "-", "--tokens-out", "-"],
        input=influxdb.token + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["changed"] is False and summary["tokens"] == applied.tokens
    wrong = subprocess.run(
        [*command, "--token-file", "-"], input="not-the-token", capture_output=True, text=True, env=env, timeout=120
    )
    assert wrong.returncode != 0 and "not-the-token" not in wrong.stderr + wrong.stdout


def test_a_changed_layout_updates_in_place(influxdb: InfluxDB, applied: influx_setup.ApplyResult) -> None:
    template = layout.find_template().read_text()
    changed = layout.parse(
        {"org": LAYOUT.org, "raw_retention": "96h", "tiers": [{"name": "2m", "every": "2m", "retention": "14d"}]}
    )
    result = influx_setup.apply(influxdb.url, influxdb.token, changed, template)
    assert "set retention of bucket sunbox_2m to 1209600 s (shards None)" in result.changes
    assert any("deleted task sunbox_downsample_2h" in c for c in result.changes)
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, timeout=30_000) as c:
        assert c.buckets_api().find_bucket_by_name("sunbox_2h") is not None, "a tier's data is never deleted"
    restored = influx_setup.apply(influxdb.url, influxdb.token, LAYOUT, template)
    assert restored.changed and restored.tokens["writer"] == applied.tokens["writer"]


def test_tokens_are_least_privilege(influxdb: InfluxDB, applied: influx_setup.ApplyResult) -> None:
    line = f"battery,device=t,kind=battery voltage=13.1 {int(time.time() * 1000)}"

    def post_write(token: str, bucket: str) -> int:
        return requests.post(
            f"{influxdb.url}/api/v2/write",
            params={"org": LAYOUT.org, "bucket": bucket, "precision": "ms"},
            headers={"Authorization": f"Token {token}"},
            data=line,
            timeout=10,
        ).status_code

    def post_query(token: str, bucket: str) -> int:
        return requests.post(
            f"{influxdb.url}/api/v2/query",
            params={"org": LAYOUT.org},
            headers={"Authorization": f"Token {token}"},
            json={"query": f'from(bucket: "{bucket}") |> range(start: -1h) |> limit(n: 1)'},
            timeout=10,
        ).status_code

    current = influx_setup.apply(influxdb.url, influxdb.token, LAYOUT, layout.find_template().read_text())
    writer, dashboards = current.tokens["writer"], current.tokens["dashboards"]
    assert post_write(writer, LAYOUT.raw_bucket) == 204
    assert post_write(writer, LAYOUT.events_bucket) == 204  # the alarm events
    assert post_write(writer, "sunbox_2m") in (401, 403, 404)
    assert post_query(writer, LAYOUT.raw_bucket) in (401, 403, 404)
    for bucket in LAYOUT.buckets():
        assert post_query(dashboards, bucket) == 200
    assert post_write(dashboards, LAYOUT.raw_bucket) in (401, 403, 404)
