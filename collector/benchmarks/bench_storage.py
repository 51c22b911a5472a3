"""Storage benchmarks on a real Mosquitto and InfluxDB 2 (the test stack's binaries).

Reports:
1. writer throughput and the drain time of a 24 h backlog (3 devices at a 5 s poll plus
   their health every 30 s) that the broker held while the writer was away;
2. the duration of one task run per tier: catching up 23 h, and a normal run;
3. disk used by 10 years of 3 devices at tier resolution (written synthetically, then
   snapshotted and compacted by InfluxDB);
4. query time of a 10-year dashboard range against the 2 h tier;
5. ``backup``: size and duration of ``sunbox backup``'s generation (InfluxDB's backup
   API, checksums, verification) and of its restore into a fresh InfluxDB, after the
   24 h of raw readings and again after the 10 years of tiers, with every bucket's point
   count compared (issue 28).

Run: ``.venv/bin/python collector/benchmarks/bench_storage.py [writer] [tasks] [disk] [backup]``
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import requests
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.protocols import jbd, litime
from sunbox.storage import influx_setup, layout, store_config
from sunbox.storage.points import is_measured, parse_message
from sunbox.storage.writer import Store
from sunbox_stack.servers import InfluxDB, Mosquitto, free_port

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures" / "devices.json"
DAY_MS = 86_400_000


def real_values() -> tuple[dict[str, Any], dict[str, Any]]:
    data = json.loads(FIXTURES.read_text())
    basic = next(v for v in data["jbd"] if v["hex"].startswith("dd03"))
    cells = next(v for v in data["jbd"] if v["hex"].startswith("dd04"))
    battery = jbd.decode(bytes.fromhex(basic["hex"])) | jbd.decode(bytes.fromhex(cells["hex"]))
    charger = litime.decode(bytes.fromhex(max(data["litime_mppt"], key=lambda v: len(v["hex"]))["hex"]))
    return battery, charger


def backlog(now_ms: int) -> list[tuple[str, bytes]]:
    battery, charger = real_values()
    rng = random.Random(1)
    out = []
    start = now_ms - DAY_MS + 60_000
    for t in range(start, now_ms, 5000):
        for device in ("bat1", "bat2"):
            values = dict(battery, voltage=13 + rng.random(), current=rng.uniform(-30, 30), soc=rng.uniform(10, 100))
            out.append((f"sunbox/{device}/state", {"device_id": device, "kind": "battery", "time_ms": t, **values}))
        values = dict(charger, pv_voltage=rng.uniform(0, 40), charge_power=rng.uniform(0, 400))
        out.append(("sunbox/mppt/state", {"device_id": "mppt", "kind": "charger", "time_ms": t, **values}))
        if (t - start) % 30_000 == 0:
            for device in ("bat1", "bat2", "mppt"):
                health = {
                    "device_id": device,
                    "kind": "health",
                    "time_ms": t,
                    "connected": True,
                    "reconnects": 0,
                    "consecutive_errors": 0,
                    "errors_total": 1,
                    "skipped_frames": 0,
                    "rssi": -70,
                    "poll_latency_ms": 40.0,
                    "last_reading_ms": t,
                    "last_error": None,
                }
                out.append((f"sunbox/{device}/health", health))
    return [(topic, json.dumps(body).encode()) for topic, body in out]


def bench_writer(broker: Mosquitto, influx: InfluxDB, token: str, lay: layout.StorageLayout) -> None:
    config = store_config.parse(
        {
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker.port,
                "username": broker.username,
                "password": broker.password,
                "client_id": "bench-store",
            },
            "influx": {"url": influx.url, "org": lay.org, "bucket": lay.raw_bucket, "token": token},
        }
    )
    store = Store(config)  # create the persistent session, then go away
    store.start()
    assert store.wait_connected(10)
    store.stop()
    now = int(time.time() * 1000)
    messages = backlog(now)
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-pub")
    pub.username_pw_set(broker.username, broker.password)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(120)
    pub.disconnect()
    pub.loop_stop()
    fields = sum(len(parse_message(t, p, now).fields) for t, p in messages)
    print(f"backlog: {len(messages)} messages ({fields} field values) held by the broker for 24 h of 3 devices")
    store = Store(config)
    started = time.monotonic()
    store.start()
    while store.stats.written + store.stats.dead_lettered < len(messages):
        time.sleep(0.05)
        if time.monotonic() - started > 600:
            raise SystemExit(f"drain stuck at {store.stats.written}")
    elapsed = time.monotonic() - started
    store.stop()
    print(
        f"writer: drained in {elapsed:.1f} s = {len(messages) / elapsed:,.0f} points/s "
        f"({fields / elapsed:,.0f} field values/s), {store.stats.batches} batches, "
        f"{store.stats.dead_lettered} dead-lettered"
    )


def run_query(influx: InfluxDB, org: str, script: str, now: datetime | None = None) -> float:
    body: dict[str, Any] = {"query": script, "dialect": {"annotations": []}}
    if now is not None:
        body["now"] = now.isoformat().replace("+00:00", "Z")
    started = time.monotonic()
    response = requests.post(
        f"{influx.url}/api/v2/query",
        params={"org": org},
        headers={"Authorization": f"Token {influx.token}"},
        json=body,
        timeout=600,
    )
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        raise SystemExit(f"query failed: {response.status_code} {response.text[:300]}")
    return elapsed


def bench_tasks(influx: InfluxDB, lay: layout.StorageLayout) -> None:
    template = layout.find_template().read_text()
    now = datetime.now(UTC)
    for tier in lay.tiers:
        script = layout.render_task(lay, tier, template)
        catchup = run_query(influx, lay.org, script, now)
        normal = statistics.median(run_query(influx, lay.org, script, now) for _ in range(3))
        print(f"task {lay.task_name(tier)}: catch-up of 23 h {catchup:.2f} s, normal run {normal:.3f} s")


def tier_point(measurement: str, device: str, fields: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if not is_measured(name):
            out[name] = value
        else:
            mean = value * (1 + rng.uniform(-0.02, 0.02))
            out[name] = round(mean, 4)
            out[name + "_min"] = round(mean * 0.98, 4)
            out[name + "_max"] = round(mean * 1.02, 4)
    return {"measurement": measurement, "tags": {"device": device, "kind": measurement}, "fields": out}


def bench_disk_and_query(influx: InfluxDB, lay: layout.StorageLayout, workdir: Path) -> None:
    battery, charger = real_values()
    now = int(time.time() * 1000)
    samples = {
        "battery": parse_message(
            "sunbox/b/state", json.dumps({"device_id": "b", "kind": "battery", "time_ms": now, **battery}).encode(), now
        ).fields,
        "charger": parse_message(
            "sunbox/m/state", json.dumps({"device_id": "m", "kind": "charger", "time_ms": now, **charger}).encode(), now
        ).fields,
        "health": {
            "connected": True,
            "reconnects": 3.0,
            "consecutive_errors": 0.0,
            "errors_total": 5.0,
            "skipped_frames": 0.0,
            "rssi": -70.0,
            "poll_latency_ms": 40.0,
            "last_reading_ms": float(now),
        },
    }
    devices = [("bat1", "battery"), ("bat2", "battery"), ("mppt", "charger")]
    rng = random.Random(2)
    total_points = 0
    started = time.monotonic()
    with InfluxDBClient(url=influx.url, token=influx.token, org=lay.org, timeout=300_000) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        for tier in lay.tiers:
            every = tier.every * 1000
            span = min(tier.retention * 1000, 3650 * DAY_MS) - every
            first = (now - span) // every * every
            batch: list[dict[str, Any]] = []
            for window in range(first, now - every, every):
                for device, kind in devices:
                    for measurement in (kind, "health"):
                        point = tier_point(measurement, device, samples[measurement], rng)
                        point["time"] = window
                        batch.append(point)
                batch.append({"measurement": "sunbox_tier", "fields": {"raw_values": 350}, "time": window})
                if len(batch) >= 5000:
                    api.write(lay.bucket_of(tier), record=batch, write_precision=WritePrecision.MS)
                    total_points += len(batch)
                    batch = []
            if batch:
                api.write(lay.bucket_of(tier), record=batch, write_precision=WritePrecision.MS)
                total_points += len(batch)
        values = sum(len(p["fields"]) for p in (tier_point(k, "x", samples[k], rng) for k in samples))
        print(f"disk: field values per window: battery+charger+health = {values}")
        print(f"disk: wrote {total_points:,} tier points in {time.monotonic() - started:.0f} s; waiting for compaction")
        buckets = client.buckets_api().find_buckets(org=lay.org).buckets
        ids = {b.name: b.id for b in buckets}
    time.sleep(90)  # cache snapshot and full compaction (cold durations shortened below)
    engine = workdir / "engine"
    total = 0
    for tier in lay.tiers:
        bucket_id = ids[lay.bucket_of(tier)]
        # allocated blocks, as du counts them: the series file is preallocated sparsely
        size = sum(
            f.stat().st_blocks * 512
            for d in (engine / "data" / bucket_id, engine / "wal" / bucket_id)
            if d.exists()
            for f in d.rglob("*")
            if f.is_file()
        )  # allocated
        shards = len(list((engine / "data" / bucket_id / "autogen").glob("*")))
        total += size
        kinds: dict[str, int] = {}
        for d in (engine / "data" / bucket_id, engine / "wal" / bucket_id):
            for f in d.rglob("*"):
                if f.is_file():
                    kind = "wal" if "wal" in f.parts else ("index" if "index" in f.parts else f.suffix or f.name)
                    kinds[kind] = kinds.get(kind, 0) + f.stat().st_blocks * 512
        parts = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(kinds.items()))
        print(f"disk: {lay.bucket_of(tier)}: {size / 2**20:.1f} MiB in {shards} shards ({parts})")
    print(f"disk: 10 years of 3 devices at tier resolution: {total / 2**20:.1f} MiB")

    queries = {
        "one field, one device": 'r.device == "bat1" and (r._field == "soc" or r._field == "soc_min" '
        'or r._field == "soc_max")',
        "4 fields, every device": 'r._field == "voltage" or r._field == "current" or r._field == "soc" '
        'or r._field == "charge_power"',
    }
    for label, predicate in queries.items():
        script = (
            f'from(bucket: "{lay.bucket_of(lay.tiers[-1])}") |> range(start: -3650d)'
            f" |> filter(fn: (r) => {predicate})"
            " |> aggregateWindow(every: 5d, fn: mean, createEmpty: false)"
        )
        times = [run_query(influx, lay.org, script) for _ in range(5)]
        print(f"query 10 years ({label}, 5 d windows for ~730 px): median {statistics.median(times) * 1000:.0f} ms")


def _counts(influx: InfluxDB, token: str, org: str, buckets: list[str]) -> dict[str, int]:
    with InfluxDBClient(url=influx.url, token=token, org=org, timeout=600_000) as client:
        out = {}
        for bucket in buckets:
            tables = client.query_api().query(f'from(bucket: "{bucket}") |> range(start: -4000d) |> group() |> count()')
            out[bucket] = sum(int(r.get_value()) for t in tables for r in t.records)
        return out


def bench_backup(influx: InfluxDB, layouts: list[layout.StorageLayout], work: Path, label: str) -> None:
    """One generation of the whole server, verified, then restored into a fresh InfluxDB."""
    from sunbox.backup import config as backup_config
    from sunbox.backup import generations

    target = work / f"backup-{label}"
    target.mkdir()
    token_file = work / "operator-token"
    token_file.write_text(influx.token)
    cfg = backup_config.BackupConfig.model_validate(
        {
            "influx": {"url": influx.url, "token_file": str(token_file)},
            "target": str(target),
            "require_mount": False,
            "include": [],
            "layout": None,
            "state_file": str(work / "state.json"),
        }
    )
    buckets = {lay.org: list(lay.buckets()) for lay in layouts}
    before = {org: _counts(influx, influx.token, org, names) for org, names in buckets.items()}
    started = time.monotonic()
    generation = generations.make(cfg, [])
    took = time.monotonic() - started
    print(f"backup ({label}): {generation.size_bytes / 1e6:.1f} MB in {took:.1f} s (made, synced, verified)")
    fresh = InfluxDB("influxd", free_port(), work / f"fresh-{label}")
    fresh.start()
    try:
        started = time.monotonic()
        token = generations.restore(generation.path, fresh.url, fresh.token, work / f"root-{label}", [])
        took = time.monotonic() - started
        after = {org: _counts(fresh, token, org, names) for org, names in buckets.items()}
        same = "every bucket's points equal" if after == before else f"DIFFERENT: {before} -> {after}"
        print(f"restore ({label}): {took:.1f} s into a fresh InfluxDB; {same}")
        print(f"backup ({label}): points per bucket {json.dumps(before)}")
    finally:
        fresh.stop()


def main() -> None:
    # let InfluxDB snapshot and compact quickly, so the disk figure is the settled one
    os.environ["INFLUXD_STORAGE_CACHE_SNAPSHOT_WRITE_COLD_DURATION"] = "10s"
    os.environ["INFLUXD_STORAGE_COMPACT_FULL_WRITE_COLD_DURATION"] = "30s"
    work = Path(tempfile.mkdtemp(prefix="sunbox-bench-storage-"))
    broker = Mosquitto("mosquitto", free_port(), work / "mqtt")
    influx = InfluxDB("influxd", free_port(), work / "influx")
    broker.start()
    influx.start()
    try:
        parts = sys.argv[1:] or ["writer", "tasks", "disk", "backup"]
        lay = layout.parse({"org": "sunbox"})
        result = influx_setup.apply(influx.url, influx.token, lay, layout.find_template().read_text())
        if "writer" in parts or "tasks" in parts or "backup" in parts:
            bench_writer(broker, influx, result.tokens["writer"], lay)
        if "tasks" in parts:
            bench_tasks(influx, lay)
        if "backup" in parts:
            bench_backup(influx, [lay], work, "24 h of raw readings")
        if "disk" in parts or "backup" in parts:
            disk = layout.parse({"org": "disk"})
            influx_setup.apply(influx.url, influx.token, disk, layout.find_template().read_text())
            bench_disk_and_query(influx, disk, work / "influx")
            if "backup" in parts:
                bench_backup(influx, [lay, disk], work, "24 h raw + 10 years of tiers")
    finally:
        influx.stop()
        broker.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
