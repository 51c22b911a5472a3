"""The dashboards against the real InfluxDB (and the real Grafana, when the stack has one).

Every panel's query is taken from the dashboard JSON. Its template variables are filled
and Grafana's ``v`` record is set for a range. The query then runs with the read-only
dashboards token, over raw data and over every tier. It must return data without error.
Time-series queries must also pick the bucket the range calls for. With Grafana present,
provisioning must load cleanly and the same queries must pass through ``/api/ds/query``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from sunbox_stack import provision, seed
from sunbox_stack.servers import Grafana, InfluxDB, free_port

# one worker keeps this module's fixtures (tools/test.sh runs pytest-xdist)
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("dashboards")]

GRAFANA_DIR = Path(__file__).parents[1]
FIXTURES = GRAFANA_DIR.parent / "collector" / "tests" / "fixtures" / "devices.json"
DAY = 86_400
VARIABLES = {"battery": "bat1|bat2", "bank": "bank1", "charger": "mppt", "device": "bat1|bat2|mppt|bank1"}
#: (name, seconds back to the start, span in seconds, the bucket the query must pick)
RANGES = [
    ("1 h", 3600, 3600, "sunbox_raw"),
    ("2 d", 2 * DAY, 2 * DAY, "sunbox_2m"),
    ("1 h three days ago", 3 * DAY, 3600, "sunbox_2m"),
    ("14 d", 14 * DAY, 14 * DAY, "sunbox_5m"),
    ("1 y", 365 * DAY, 365 * DAY, "sunbox_30m"),
    ("10 y", 3650 * DAY, 3650 * DAY, "sunbox_2h"),
]


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA_DIR / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query) for every target of every panel."""
    out = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((name, panel["title"], target["query"]))
    return out


def fill(query: str, start: datetime, stop: datetime) -> str:
    for name, value in VARIABLES.items():
        query = query.replace(f"${{{name}:regex}}", value)
    assert "${" not in query, "a variable was left unfilled"
    window = max(10, int((stop - start).total_seconds()) // 800)
    option = (
        f'option v = {{timeRangeStart: time(v: "{start.isoformat()}"), '
        f'timeRangeStop: time(v: "{stop.isoformat()}"), windowPeriod: {window}s}}\n'
    )
    lines = query.splitlines()
    last_import = max((i for i, line in enumerate(lines) if line.startswith("import ")), default=-1)
    return "\n".join([*lines[: last_import + 1], option, *lines[last_import + 1 :]])


def run(influxdb: InfluxDB, token: str, query: str) -> list[dict[str, str]]:
    response = requests.post(
        f"{influxdb.url}/api/v2/query",
        params={"org": "sunbox"},
        headers={"Authorization": f"Token {token}"},
        json={"query": query, "dialect": {"annotations": []}},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:500]
    return [
        row for row in csv.DictReader(io.StringIO(response.text)) if row.get("result") is not None and any(row.values())
    ]


@pytest.fixture(scope="module")
def seeded(influxdb: InfluxDB) -> Iterator[str]:
    """Apply the default layout (org sunbox), write 23 h of raw data and years of tier data;
    yield the dashboards token (``sunbox_stack.seed``, shared with the display's tests)."""
    yield seed.seed_history(influxdb)


def test_the_json_is_what_the_builder_writes() -> None:
    rendered = _builder().render()
    committed = {p.name: p.read_text() for p in (GRAFANA_DIR / "dashboards").glob("*.json")}
    assert rendered == committed, "run python3 grafana/build_dashboards.py"


def test_dashboards_follow_the_conventions() -> None:
    boards = dashboards()
    assert set(boards) == {"now", "history", "cells", "health", "overview"}
    for name, board in boards.items():
        assert {v["name"] for v in board["templating"]["list"]} == {"battery", "bank", "charger", "device"}
        for panel in board["panels"]:
            assert panel["type"] in {"stat", "timeseries", "state-timeline", "table", "text"}, "core panels only"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name}/{panel['title']} is wider than the grid"
    now = boards["now"]
    assert now["refresh"] and max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in now["panels"]) <= 15, (
        "the Now dashboard must fit the 800x480 screen"
    )
    assert any("supply +" in p.get("options", {}).get("content", "") for p in now["panels"])


@pytest.mark.parametrize(("label", "back", "span", "bucket"), RANGES)
def test_the_range_picks_its_bucket(
    influxdb: InfluxDB, seeded: str, label: str, back: int, span: int, bucket: str
) -> None:
    stop = datetime.now(UTC) - timedelta(seconds=back - span)
    start = stop - timedelta(seconds=span)
    query = fill('import "array"\n' + _builder().PICK_BUCKET + "array.from(rows: [{bucket: bucket}])", start, stop)
    rows = run(influxdb, seeded, query)
    assert [r["bucket"] for r in rows] == [bucket], label


def test_every_panel_returns_data_for_every_range(influxdb: InfluxDB, seeded: str) -> None:
    failures = []
    checked = 0
    for board, title, query in panel_queries():
        ranges = RANGES if "v.timeRangeStart" in query else RANGES[:1]
        for label, back, span, _bucket in ranges:
            stop = datetime.now(UTC) - timedelta(seconds=back - span)
            start = stop - timedelta(seconds=span)
            rows = run(influxdb, seeded, fill(query, start, stop))
            checked += 1
            if not rows:
                failures.append(f"{board} / {title} / {label}")
    assert not failures, f"panels without data: {failures}"
    assert checked > 80


def test_the_energy_panel_counts_a_bank_once(influxdb: InfluxDB, seeded: str) -> None:
    """Issue 31: a bank's packs, named in its newest raw reading, are left out of the
    History dashboard's energy per day, so the bank's Wh count once."""
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    query = _builder().energy_query()
    yesterday = (int(datetime.now(UTC).timestamp()) // DAY - 1) * DAY

    def into_battery() -> float:
        rows = run(influxdb, seeded, query)
        return sum(
            float(r["_value"])
            for r in rows
            if r["_field"] == "into battery"
            and r["_time"].startswith(datetime.fromtimestamp(yesterday + DAY, UTC).strftime("%Y-%m-%d"))
        )

    before = into_battery()
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    bank = 'bank,device=gbank,kind=bank packs="gp1,gp2",meter="gshunt",power=1000 ' + str(now_ms)
    energy = [
        f"{kind},device={device},kind={kind} in_wh={wh},out_wh=0,covered_s=3600 {(yesterday + 12 * 3600) * 1000}"
        for kind, device, wh in (("bank", "gbank", 1000), ("battery", "gp1", 600), ("battery", "gp2", 400),
                                 ("battery", "gshunt", 1000))
    ]  # fmt: skip
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org="sunbox") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        api.write("sunbox_raw", record=bank, write_precision=WritePrecision.MS)
        api.write("sunbox_energy", record=energy, write_precision=WritePrecision.MS)
    assert into_battery() - before == pytest.approx(1.0), "1 kWh: the bank's, not its packs' or its meter's"


def test_protection_flags_are_spelled_out(influxdb: InfluxDB, seeded: str) -> None:
    query = next(q for b, t, q in panel_queries() if b == "now" and t == "Battery protection")
    now = datetime.now(UTC)
    rows = run(influxdb, seeded, fill(query, now, now))
    assert {r["device"] for r in rows} == {"bat1", "bat2"}
    assert all(r["protection"] for r in rows)


@pytest.fixture(scope="module")
def provisioned_grafana(influxdb: InfluxDB, seeded: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grafana]:
    """A Grafana with the repo's provisioning; skipped when the stack has no Grafana."""
    home = provision.grafana_home()
    if home is None:
        pytest.skip(provision.GRAFANA_MISSING)
    server = Grafana(
        "grafana",
        free_port(),
        tmp_path_factory.mktemp("grafana-sunbox"),
        home=home,
        provisioning=GRAFANA_DIR / "provisioning",
        extra_env={
            "SUNBOX_INFLUX_URL": influxdb.url,
            "SUNBOX_INFLUX_DASHBOARDS_TOKEN": seeded,
            "SUNBOX_DASHBOARDS_DIR": str(GRAFANA_DIR / "dashboards"),
        },
    )
    server.start()
    yield server
    server.stop()


def test_grafana_provisioning_and_panel_queries(provisioned_grafana: Grafana) -> None:
    """Provisioning loads without errors and every panel's query runs through /api/ds/query."""
    grafana = provisioned_grafana
    session = requests.Session()
    session.auth = ("admin", grafana.admin_password)
    health = session.get(f"{grafana.url}/api/datasources/uid/sunbox-influx/health", timeout=30)
    assert health.status_code == 200 and health.json().get("status") == "OK", health.text
    for board in dashboards().values():
        assert session.get(f"{grafana.url}/api/dashboards/uid/{board['uid']}", timeout=30).status_code == 200
    log = "\n".join(p.read_text() for p in (grafana.workdir / "logs").glob("*.log"))
    assert "level=error" not in log, log[-2000:]
    now = datetime.now(UTC)
    for board, title, query in panel_queries():
        for variable, value in VARIABLES.items():
            query = query.replace(f"${{{variable}:regex}}", value)
        for _label, back, span, _bucket in RANGES:
            stop = now - timedelta(seconds=back - span)
            body = {
                "from": str(int((stop - timedelta(seconds=span)).timestamp() * 1000)),
                "to": str(int(stop.timestamp() * 1000)),
                "queries": [
                    {
                        "refId": "A",
                        "datasource": {"uid": "sunbox-influx"},
                        "query": query,
                        "maxDataPoints": 800,
                        "intervalMs": 10_000,
                    }
                ],
            }
            answer = session.post(f"{grafana.url}/api/ds/query", json=body, timeout=120)
            assert answer.status_code == 200, (board, title, answer.text[:300])
            frames = answer.json()["results"]["A"].get("frames", [])
            assert frames and any(f["data"]["values"] and f["data"]["values"][0] for f in frames), (board, title)
