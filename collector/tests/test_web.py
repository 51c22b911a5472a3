"""``sunbox web`` end to end: the real process, the real Mosquitto, the real InfluxDB (with
the dashboards' tier fixtures) and a real headless Chromium.

Screenshots of every page at 800x480 (the touchscreen) and 1920x1080 (a LAN browser) are
written to ``$SUNBOX_SCREENSHOTS`` (default ``/tmp/sunbox-screenshots``) for review.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sunbox.backup import generations
from sunbox.storage import influx_setup, layout, pick
from sunbox.web.history import RANGES
from sunbox_stack import seed
from sunbox_stack.servers import InfluxDB, Mosquitto, free_port

from .mounts import tmpfs
from .webkit import (
    CHROMEDRIVER,
    CHROMIUM,
    SCREENSHOTS,
    Publisher,
    WebServer,
    battery_reading,
    charger_reading,
    chromium,
    console_errors,
    set_viewport,
    wait_for,
)

pytestmark = [
    pytest.mark.stack,
    pytest.mark.xdist_group("web"),  # one worker keeps this module's fixtures (tools/test.sh runs pytest-xdist)
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian's chromium and chromium-driver"
    ),
]

PAGES = ["now", "history", "cells", "health"]


@pytest.fixture(scope="module")
def dashboards_token(influxdb: InfluxDB) -> str:
    return seed.seed_history(influxdb)


@pytest.fixture(scope="module")
def web(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    server = WebServer(tmp_path_factory.mktemp("web"), mosquitto, influxdb.url, dashboards_token)
    server.start()
    server.wait_broker()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def publish_site(publisher: Publisher) -> None:
    """Two batteries and a charger, as the collector publishes the simulated devices."""
    publisher.reading("bat1", "battery", battery_reading(soc=87.0, current=-4.2, power=-65.5))
    publisher.reading("bat2", "battery", battery_reading(soc=64.0, current=3.1, power=48.4, protection_bits=0b1))
    publisher.reading("mppt", "charger", charger_reading())
    for device in ("bat1", "bat2", "mppt"):
        publisher.health(device)


def open_page(driver: Any, web: WebServer, page: str) -> None:
    driver.get(f"{web.url}/#{page}")
    wait_for(lambda: driver.find_element("id", "page").get_attribute("data-page") == page, what=f"page {page}")


def page_text(driver: Any) -> str:
    """The visible text of the page area, on one line."""
    return str(driver.find_element("id", "page").text).replace("\n", "")


def shoot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


# --- the service ----------------------------------------------------------------------


def test_readings_reach_the_state_api_and_bad_payloads_are_counted_not_shown(
    web: WebServer, publisher: Publisher
) -> None:
    publish_site(publisher)
    publisher.raw("sunbox/bat9/state", b"{not json")
    publisher.raw("sunbox/bat9/state", json.dumps({"device_id": "bat9", "kind": "battery", "time_ms": 5, "soc": 1}))
    publisher.raw(
        "sunbox/bat8/state",
        json.dumps({"device_id": "bat8", "kind": "battery", "time_ms": int(time.time() * 1000), "soc": "full"}),
    )
    publisher.raw("sunbox/bat1/availability", "maybe")

    def settled() -> dict[str, Any] | None:
        s = web.state()
        return s if sum(s["skipped"].values()) >= 4 and len(s["devices"]) >= 3 else None

    state = wait_for(settled, what="counted skips")
    ids = {d["device_id"] for d in state["devices"]}
    assert {"bat1", "bat2", "mppt"} <= ids and not ids & {"bat8", "bat9"}, ids
    bat2 = next(d for d in state["devices"] if d["device_id"] == "bat2")
    assert bat2["state"]["soc"] == 64.0 and bat2["alarms"] == ["cell overvoltage"]
    assert bat2["health"]["rssi"] == -67


def test_nothing_changes_anything_and_the_policy_is_strict(web: WebServer) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/state", "/api/history", "/api/live"):
            assert requests.request(method, web.url + path, timeout=5).status_code == 405, (method, path)
    # the one write, an alarm's acknowledgement, is a POST of JSON naming an active alarm
    for method in ("GET", "PUT", "DELETE"):
        assert requests.request(method, web.url + "/api/alarms/ack", timeout=5).status_code == 405, method
    assert requests.post(web.url + "/api/alarms/ack", data="id=x", timeout=5).status_code == 415
    assert requests.post(web.url + "/api/alarms/ack", json={"id": "nope/none"}, timeout=5).status_code == 404
    page = requests.get(web.url + "/", timeout=5)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "http" not in page.text.replace("http-equiv", ""), "the page loads nothing from elsewhere"
    assert requests.get(web.url + "/api/history?quantity=soc&range=99y", timeout=5).status_code == 400
    assert requests.get(web.url + "/api/history?quantity=drop&range=1h", timeout=5).status_code == 400
    bad_device = requests.get(web.url + '/api/history?quantity=soc&range=1h&device=x" or true', timeout=5)
    assert bad_device.status_code == 400


@pytest.mark.parametrize("name", list(RANGES))
def test_history_reads_raw_and_every_tier_with_bounded_points(web: WebServer, name: str) -> None:
    body = requests.get(f"{web.url}/api/history?quantity=battery_power&range={name}", timeout=60).json()
    now = time.time()
    assert body["bucket"] == pick.pick_bucket(now - RANGES[name], now, now)
    assert {s["device"] for s in body["series"]} == {"bat1", "bat2"}, body["bucket"]
    for series in body["series"]:
        assert 0 < len(series["t"]) <= 720
        assert all(
            lo <= m <= hi
            for lo, m, hi in zip(series["min"], series["mean"], series["max"], strict=True)
            if lo is not None
        )


def test_a_tier_range_reads_its_newest_windows_from_raw(web: WebServer) -> None:
    """The 2-minute tier is written every 30 minutes (run_every): a 24 h chart still
    reaches now, its last windows read from raw (issue 28)."""
    body = requests.get(f"{web.url}/api/history?quantity=soc&range=24h", timeout=60).json()
    now = time.time()
    lag = pick.RULE[1].lag_s
    assert body["bucket"] == "sunbox_2m" and body["raw_from"] is not None
    assert now - lag - body["window_s"] <= body["raw_from"] <= now - lag
    for series in body["series"]:
        assert series["t"][-1] >= now - 2 * body["window_s"], "the chart ends at now"
        assert any(t > body["raw_from"] for t in series["t"]) and any(t < body["raw_from"] for t in series["t"])
    assert requests.get(f"{web.url}/api/history?quantity=soc&range=1h", timeout=60).json()["raw_from"] is None


def test_history_carries_the_alarm_events_of_its_range(web: WebServer) -> None:
    """The events bucket (seeded as the writer stores the engine's events,
    sunbox_stack.seed.ALARM_EVENTS) gives History its markers, whatever bucket the
    series come from; a device's chart carries only that device's."""
    day = requests.get(f"{web.url}/api/history?quantity=soc&range=24h", timeout=60).json()
    assert [(e["event"], e["rule"], e["device"], e["severity"]) for e in day["alarms"]] == [
        ("raised", "soc-low", "bat1", "warning"),
        ("acked", "soc-low", "bat1", "warning"),
        ("cleared", "soc-low", "bat1", "warning"),
    ]
    assert day["alarms"][0]["text"] == "SOC below 20 %"
    now = time.time()
    assert now - 3 * 3600 - 120 < day["alarms"][0]["t"] < now - 3 * 3600 + 5
    decade = requests.get(f"{web.url}/api/history?quantity=soc&range=10y", timeout=60).json()
    assert [e["event"] for e in decade["alarms"]] == ["raised", "cleared", "raised", "acked", "cleared"]
    assert decade["bucket"] == "sunbox_2h"
    other = requests.get(f"{web.url}/api/history?quantity=soc&range=24h&device=bat2", timeout=60).json()
    assert other["alarms"] == []


def test_every_tier_lag_in_the_rule_matches_the_default_layout() -> None:
    lay = layout.parse(None)
    assert lay.events_bucket == pick.EVENTS_BUCKET and lay.energy_bucket == pick.ENERGY_BUCKET
    tiers = {lay.bucket_of(t): t for t in lay.tiers}
    for step in pick.RULE[1:]:
        tier = tiers[step.bucket]
        assert step.window_s == tier.every and step.lag_s == tier.run_every_s + tier.every, step


def test_history_negates_battery_power_and_keeps_the_band_in_order(web: WebServer, influxdb: InfluxDB) -> None:
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    now_ms = int(time.time() * 1000)
    points = [
        {
            "measurement": "battery",
            "tags": {"device": "neg1", "kind": "battery"},
            "fields": {"power": -100.0 - i},
            "time": now_ms - i * 10_000,
        }
        for i in range(30)
    ]
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org="sunbox") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            "sunbox_raw", record=points, write_precision=WritePrecision.MS
        )
    body = requests.get(f"{web.url}/api/history?quantity=battery_power&range=1h&device=neg1", timeout=30).json()
    (series,) = body["series"]
    assert all(100 <= m <= 130 for m in series["mean"]), "discharge is supply: positive on History"
    assert all(lo <= m <= hi for lo, m, hi in zip(series["min"], series["mean"], series["max"], strict=True))


def test_each_range_button_reads_the_bucket_the_shared_rule_names() -> None:
    assert pick.flux().startswith("span = int(v: v.timeRangeStop)")
    assert [pick.pick_bucket(time.time() - back, time.time(), time.time()) for back in RANGES.values()] == [
        "sunbox_raw",
        "sunbox_2m",
        "sunbox_5m",
        "sunbox_30m",
        "sunbox_30m",
        "sunbox_2h",
    ]


def test_energy_comes_from_the_stored_hours_with_gaps_as_gaps(web: WebServer) -> None:
    """Issue 31: the energy views read the hourly energy bucket (seeded as the energy task
    writes it, sunbox_stack.seed.energy_points), the newest hours from raw; every period is
    in the answer, a day without readings as a gap (null), a half-covered day as partial."""
    if time.localtime().tm_gmtoff != 0:
        pytest.skip("the seeded days are UTC days")
    days = requests.get(f"{web.url}/api/energy?range=30d", timeout=60).json()
    assert days["every"] == "1d" and days["bucket"] == "sunbox_energy" and len(days["rows"]) == 30
    by_start = {r["start"]: r for r in days["rows"]}
    last = int(time.time()) // 3600 * 3600 - 3600
    day = lambda ago: by_start[(last // 86400 - ago) * 86400]  # noqa: E731
    assert day(10) == {"start": (last // 86400 - 10) * 86400, "charged": 6000.0, "discharged": 5600.0,
                       "solar": 4000.0, "solar_by_charger": {"mppt": 4000.0}, "ac_in": None, "load": 3600.0,
                       "coverage": 1.0, "partial": False}  # fmt: skip
    gap = day(seed.ENERGY_GAP_DAY)
    assert gap["charged"] is None and gap["solar"] is None and gap["load"] is None and gap["coverage"] == 0
    half = day(seed.ENERGY_HALF_DAY)
    assert half["partial"] and half["coverage"] == 0.5 and half["charged"] == 2 * 300 * 4, half
    assert days["rows"][-1]["start"] == (int(time.time()) // 86400) * 86400, "today is the last day"
    assert days["raw_from"] is not None, "the hours the task has not reached come from raw"
    alias = requests.get(f"{web.url}/api/energy?period=days", timeout=60).json()["rows"]
    assert [r["start"] for r in alias] == [r["start"] for r in days["rows"]] and alias[:-1] == days["rows"][:-1]
    hours = requests.get(f"{web.url}/api/energy?range=24h", timeout=60).json()
    assert hours["every"] == "1h" and len(hours["rows"]) == 24
    months = requests.get(f"{web.url}/api/energy?range=1y", timeout=60).json()
    assert months["every"] == "1mo" and len(months["rows"]) == 12
    started = time.monotonic()
    years = requests.get(f"{web.url}/api/energy?range=10y", timeout=60).json()
    took = time.monotonic() - started
    assert years["every"] == "1y" and len(years["rows"]) == 10
    assert all(r["charged"] and r["charged"] > 0 for r in years["rows"]), years["rows"]
    print(f"10-year energy request (10 years of seeded energy, 3 devices): {took * 1000:.0f} ms")
    for bad in ("range=weeks", "range=1h", "period=weeks"):
        assert requests.get(f"{web.url}/api/energy?{bad}", timeout=5).status_code == 400, bad


def test_the_energy_view_draws_gaps_as_gaps_and_partial_days_dimmed(web: WebServer, browser: Any) -> None:
    """History's kWh at 800x480: per day over 30 days, the seeded day without readings as
    a dashed outline (not a zero bar), the half-covered day (and any other partial one)
    dimmed; per year over 10."""
    partial = sum(r["partial"] for r in requests.get(f"{web.url}/api/energy?range=30d", timeout=60).json()["rows"])
    assert partial >= 1, "the seeded half day"
    set_viewport(browser, 800, 480)
    open_page(browser, web, "history")
    try:
        browser.find_element("css selector", '[data-quantity="energy"]').click()
        browser.find_element("css selector", '[data-range="30d"]').click()
        wait_for(lambda: browser.find_elements("css selector", "#chart svg rect"), what="the energy bars")
        assert browser.find_element("css selector", '[data-range="1h"]').get_attribute("disabled") is not None
        assert len(browser.find_elements("css selector", "#chart .energy-gap")) == 1
        assert len(browser.find_elements("css selector", "#chart rect.partial")) == 4 * partial, "four bars a day"
        text = page_text(browser)
        assert "kWh per day" in text and "1 without readings" in text and f"{partial} partial" in text, text
        size = browser.execute_script("return [document.documentElement.scrollHeight, innerHeight]")
        assert size[0] <= size[1], f"History scrolls at 800x480: {size}"
        shoot(browser, "history-energy-800x480")
        browser.find_element("css selector", '[data-range="10y"]').click()
        wait_for(lambda: "kWh per year" in page_text(browser), what="the yearly bars")
        assert not browser.find_elements("css selector", "#chart .energy-gap")
        assert console_errors(browser) == []
    finally:  # the page keeps its choice: back to the default for the tests after this one
        browser.find_element("css selector", '[data-quantity="soc"]').click()
        browser.find_element("css selector", '[data-range="24h"]').click()
        wait_for(lambda: browser.find_elements("css selector", "#chart canvas"), what="the SOC chart again")


def test_gaps_count_the_windows_without_a_reading(web: WebServer) -> None:
    # the seed holds one reading a minute from 23 h ago: the first hour of 24 h is a gap
    body = requests.get(f"{web.url}/api/gaps", timeout=60).json()
    assert body["window_s"] == 600
    for device in ("bat1", "bat2", "mppt"):
        assert 5 <= body["devices"][device] <= 9, body["devices"]


# --- the pages in a real browser ------------------------------------------------------------


def test_every_page_shows_the_devices_without_console_errors(
    web: WebServer, publisher: Publisher, browser: Any
) -> None:
    publish_site(publisher)
    for width, height in ((800, 480), (1920, 1080)):
        set_viewport(browser, width, height)
        for page in PAGES:
            open_page(browser, web, page)
            if page == "now":
                wait_for(lambda: "87%" in page_text(browser) and "64%" in page_text(browser), what="SOCs on Now")
                assert "cell overvoltage" in page_text(browser)
                size = browser.execute_script(
                    "const p = document.getElementById('page'); "
                    "return [document.documentElement.scrollHeight, innerHeight, p.scrollHeight, p.clientHeight]"
                )
                assert size[0] <= size[1] and size[2] <= size[3], f"Now scrolls at {width}x{height}: {size}"
            elif page == "history":
                wait_for(lambda: browser.find_elements("css selector", "#chart canvas"), what="a chart")
                # the seeded alarm's raised, acknowledged and cleared events, on the plot
                marks = browser.execute_script(
                    "const o = document.querySelector('#chart .u-over').getBoundingClientRect();"
                    "return [...document.querySelectorAll('#chart .alarm-mark')].map(m => {"
                    " const r = m.getBoundingClientRect();"
                    " return [m.dataset.event, r.left >= o.left && r.left <= o.right, r.height, m.title]; })"
                )
                assert [m[0] for m in marks] == ["raised", "acked", "cleared"], marks
                assert all(m[1] and m[2] > 100 for m in marks), marks
                assert "raised · warning · bat1: SOC below 20 %" in marks[0][3], marks
                assert "3 alarm events" in page_text(browser)
            elif page == "cells":
                wait_for(lambda: "3909" in page_text(browser), what="cell voltages")
            else:
                wait_for(lambda: "mppt" in page_text(browser) and "-67" in page_text(browser), what="health rows")
                assert "gaps 24 h" in page_text(browser)
            time.sleep(0.3)
            shoot(browser, f"{page}-{width}x{height}")
            assert console_errors(browser) == [], page
    # every touch target is at least 48 px tall at 800x480
    set_viewport(browser, 800, 480)
    open_page(browser, web, "history")
    heights = browser.execute_script(
        "return [...document.querySelectorAll('button, .tabs a')].map(e => e.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 48, heights


def test_a_published_reading_appears_on_now(web: WebServer, publisher: Publisher, browser: Any) -> None:
    set_viewport(browser, 800, 480)
    open_page(browser, web, "now")
    stamp = publisher.reading("bat1", "battery", battery_reading(soc=42.0))
    wait_for(
        lambda: browser.find_element("css selector", '[data-device="bat1"]').get_attribute("data-time") == str(stamp),
        timeout=10,
        what="the new reading on Now",
    )
    # Now is redrawn every second (ages): read the card again if a redraw replaced it
    wait_for(
        lambda: "42%" in browser.find_element("css selector", '[data-device="bat1"]').text.replace("\n", ""),
        timeout=5,
        what="42 % on bat1's card",
    )


def test_a_stale_device_turns_orange_then_red(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path, publisher: Publisher
) -> None:
    server = WebServer(tmp_path / "web", mosquitto, influxdb.url, dashboards_token, stale_after_s=1, dead_after_s=3)
    server.start()
    server.wait_broker()
    try:
        with chromium() as driver:
            open_page(driver, server, "now")
            publisher.reading("old1", "battery", battery_reading(soc=50.0))
            card = '[data-device="old1"] .age'
            wait_for(
                lambda: driver.find_element("css selector", card).get_attribute("class").split() == ["age"],
                what="fresh",
            )
            wait_for(lambda: "stale" in driver.find_element("css selector", card).get_attribute("class"), what="stale")
            wait_for(lambda: "dead" in driver.find_element("css selector", card).get_attribute("class"), what="dead")
    finally:
        server.stop()


def test_storage_down_keeps_now_live_and_history_says_so(
    mosquitto: Mosquitto, tmp_path: Path, publisher: Publisher
) -> None:
    private = InfluxDB("influxd", free_port(), tmp_path / "influx")
    private.start()
    influx_setup.apply(private.url, private.token, layout.parse(None), layout.find_template().read_text())
    server = WebServer(tmp_path / "web", mosquitto, private.url, private.token)
    server.start()
    server.wait_broker()
    try:
        private.stop()
        with chromium() as driver:
            open_page(driver, server, "history")
            wait_for(lambda: "Storage unavailable" in driver.find_element("id", "chart").text, what="the words")
            shoot(driver, "history-storage-down-800x480")
            open_page(driver, server, "now")
            publisher.reading("bat1", "battery", battery_reading(soc=33.0))
            wait_for(lambda: "33%" in page_text(driver), what="Now still live")
        private.start()  # storage back: History answers again, with no restart of the display
        assert requests.get(f"{server.url}/api/history?quantity=soc&range=1h", timeout=30).status_code == 200
        assert requests.get(f"{server.url}/api/health", timeout=30).json()["storage"] is True
    finally:
        server.stop()
        private.stop()


def test_broker_stop_shows_it_and_the_page_recovers(influxdb: InfluxDB, dashboards_token: str, tmp_path: Path) -> None:
    broker = Mosquitto("mosquitto", free_port(), tmp_path / "mosquitto")
    broker.start()
    server = WebServer(tmp_path / "web", broker, influxdb.url, dashboards_token)
    server.start()
    server.wait_broker()
    pub = Publisher(broker)
    try:
        with chromium() as driver:
            open_page(driver, server, "now")
            pub.reading("bat5", "battery", battery_reading(soc=71.0))
            wait_for(lambda: "71%" in page_text(driver), what="first reading")
            broker.stop()
            wait_for(lambda: "broker down" in driver.find_element("id", "status").text, what="broker down shown")
            assert "71%" in page_text(driver), "values stay, with their age"
            broker.start()
            server.wait_broker(timeout=60)
            wait_for(lambda: "live" in driver.find_element("id", "status").text, timeout=30, what="live again")
            pub.reading("bat5", "battery", battery_reading(soc=72.0))
            wait_for(
                lambda: "72%" in page_text(driver),
                timeout=30,
                what="new reading after restart",
            )
    finally:
        pub.close()
        server.stop()
        broker.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs as the card (root)")
def test_a_card_that_turns_read_only_or_full_is_an_alarm_on_every_page(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, publisher: Publisher, tmp_path: Path
) -> None:
    """Issue 28: the card holding the history (a real tmpfs here) remounted read-only, then
    full; the status bar says so on every page, Health gives the numbers, Now stays live."""
    with tmpfs(tmp_path / "card") as card:
        server = WebServer(
            tmp_path / "web",
            mosquitto,
            influxdb.url,
            dashboards_token,
            disk_path=str(card / "influxdb"),
            disk_check_s=0.5,
            disk_low_free_mb=1,
        )
        server.start()
        server.wait_broker()
        try:
            health = requests.get(f"{server.url}/api/health", timeout=30).json()["disk"]
            assert health["status"] == "ok" and health["mount_point"] == str(card), health
            with chromium() as driver:
                set_viewport(driver, 800, 480)
                open_page(driver, server, "now")
                wait_for(lambda: "card" not in driver.find_element("id", "status").text, what="no card alarm")
                subprocess.run(["mount", "-o", "remount,ro", str(card)], check=True)
                status = driver.find_element("id", "status")
                wait_for(lambda: "card read-only" in status.text, timeout=15, what="the read-only card shown")
                assert "alarm" in (status.get_attribute("class") or "")
                publisher.reading("bat1", "battery", battery_reading(soc=55.0))
                wait_for(lambda: "55%" in page_text(driver), what="Now still live")
                shoot(driver, "now-card-read-only-800x480")
                open_page(driver, server, "health")
                wait_for(lambda: "Card: read-only" in page_text(driver), what="the card on Health")
                assert requests.get(f"{server.url}/api/health", timeout=30).json()["disk"]["status"] == "read-only"
                subprocess.run(["mount", "-o", "remount,rw", str(card)], check=True)
                with contextlib.suppress(OSError), (card / "filler").open("wb") as out:
                    out.write(b"\0" * 4 * 1024 * 1024)
                wait_for(lambda: "card full" in status.text, timeout=15, what="the full card shown")
                wait_for(lambda: "Card: full" in page_text(driver), timeout=15, what="full on Health")
                shoot(driver, "health-card-full-800x480")
                (card / "filler").unlink()
                # the status bar may then say something else (the shared broker's collector
                # availability), but not the card
                wait_for(lambda: "card" not in status.text, timeout=15, what="no alarm once space is back")
                assert console_errors(driver) == []
        finally:
            server.stop()


def test_an_old_backup_is_an_alarm_and_health_tells_its_age(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path
) -> None:
    """Issue 28: no backup set up is said on Health only; a last good backup older than
    two days is an alarm on every page until a new one succeeds."""
    state_file = tmp_path / "backup" / "state.json"
    server = WebServer(
        tmp_path / "web", mosquitto, influxdb.url, dashboards_token, backup_state_file=str(state_file), disk_check_s=0.5
    )
    server.start()
    server.wait_broker()
    day_ms = 86_400_000
    try:
        with chromium() as driver:
            set_viewport(driver, 800, 480)
            open_page(driver, server, "health")

            def status() -> str:
                return str(driver.find_element("id", "status").text)

            wait_for(lambda: "Backup: not set up" in page_text(driver), what="no backup set up")
            assert "backup" not in status(), "backups not set up are no alarm"
            old = generations.Generation(tmp_path / "g1", int(time.time() * 1000) - 3 * day_ms, 4_000_000, [])
            generations.record(state_file, old, None, 12.0)
            wait_for(lambda: "last backup 3 d ago" in status(), timeout=15, what="the old backup shown")
            generations.record(state_file, None, "target /media/sunbox-backup is not a mount point", 0.1)
            driver.refresh()
            wait_for(lambda: "not a mount point" in page_text(driver), timeout=15, what="why the last run failed")
            assert "last backup 3 d ago" in status()
            shoot(driver, "health-backup-overdue-800x480")
            fresh = generations.Generation(tmp_path / "g2", int(time.time() * 1000), 5_000_000, [])
            generations.record(state_file, fresh, None, 11.0)
            wait_for(lambda: "backup" not in status(), timeout=15, what="no alarm after a good backup")
            wait_for(lambda: "0 s ago, 5\u202fMB" in page_text(driver), timeout=15, what="its size")
            assert requests.get(f"{server.url}/api/health", timeout=30).json()["backup"]["status"] == "ok"
    finally:
        server.stop()


# --- the LAN viewers' password -------------------------------------------------------------


class _Peer:
    """The network side of a request: only its address matters to the password check."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.address, 50_000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def test_lan_browsers_need_the_viewer_password_and_the_kiosk_does_not(tmp_path: Path) -> None:
    from aiohttp import web as aioweb
    from aiohttp.test_utils import make_mocked_request

    from sunbox.web.config import parse
    from sunbox.web.server import WebApp

    secret = tmp_path / "viewer"
    secret.write_text("cabin-2026\n")
    config = parse(
        {
            "mqtt": {"username": "u", "password": "p"},
            "influx": {"token": "t"},
            "viewer_password_file": str(secret),
        }
    )
    app = WebApp(config, None)

    async def handler(_request: aioweb.Request) -> aioweb.StreamResponse:
        return aioweb.json_response({"ok": True})

    async def answer(address: str, password: str | None) -> aioweb.StreamResponse:
        headers = {}
        if password is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()
        request = make_mocked_request("GET", "/api/state", headers=headers, transport=_Peer(address))
        return await app.guard(request, handler)

    assert (await answer("127.0.0.1", None)).status == 200  # the kiosk on the Pi itself
    assert (await answer("::1", None)).status == 200
    lan = await answer("192.0.2.10", None)  # a documentation address: nothing is sent anywhere
    assert lan.status == 401 and lan.headers["WWW-Authenticate"].startswith("Basic")
    assert (await answer("192.0.2.10", "wrong")).status == 401
    ok = await answer("192.0.2.10", "cabin-2026")
    assert ok.status == 200 and "default-src 'none'" in ok.headers["Content-Security-Policy"]


def test_the_kiosk_page_beats_so_its_watchdog_sees_a_hang(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path
) -> None:
    """Issue 16, finding 1: the kiosk's watchdog reads the page's heartbeat, not DevTools.

    A fresh ``sunbox web`` has seen no page; Chromium on loopback (as the kiosk) beats at
    load and every 15 s; a page that stops (here: closed) lets the age grow.
    """
    server = WebServer(tmp_path / "web", mosquitto, influxdb.url, dashboards_token)
    server.start()

    def age() -> Any:
        return requests.get(f"{server.url}/api/health", timeout=5).json()["kiosk_heartbeat_age_s"]

    try:
        assert age() is None, "no page has beaten yet"
        requests.get(f"{server.url}/api/heartbeat", timeout=5).raise_for_status()
        first = age()
        assert first is not None and first < 2
        time.sleep(2.5)
        assert age() >= 2, "the age grows while nothing beats"
        with chromium() as driver:
            open_page(driver, server, "now")
            wait_for(lambda: age() < 1, what="the page's first beat")
            time.sleep(16)
            assert age() < 5, "the page beats every 15 s"
        time.sleep(3)
        assert age() >= 3, "a page that stopped no longer beats"
    finally:
        server.stop()


def test_now_shows_each_bank_as_one_battery_with_its_packs_beneath(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path, publisher: Publisher
) -> None:
    """Issue 31: a bank is one card (the meter's SOC, or the capacity-weighted one), its
    packs and meter are lines beneath it, not cards of their own, and the power flow
    counts the bank's power once. The bank readings are what sunbox.banks computes."""
    from sunbox.banks import compute_bank
    from sunbox.config import BankConfig
    from sunbox.model import Reading

    now = int(time.time() * 1000)
    packs = {
        "pack-s": battery_reading(soc=50.0, capacity_nominal=100.0, capacity_remaining=50.0, current=-2.0, power=-26.6),
        "pack-b": battery_reading(
            soc=90.0, capacity_nominal=280.0, capacity_remaining=252.0, current=-3.0, power=-39.9
        ),
        "cab-1": battery_reading(soc=50.0, capacity_nominal=100.0, capacity_remaining=50.0, current=1.0, power=13.3),
        "cab-2": battery_reading(soc=90.0, capacity_nominal=280.0, capacity_remaining=252.0, current=2.0, power=26.6),
    }
    shunt = {"voltage": 13.2, "current": -5.0, "power": -66.0, "soc": 81.0, "time_to_go": 36000.0}
    readings = {k: Reading(k, "battery", now, v) for k, v in packs.items()} | {
        "shunt": Reading("shunt", "battery", now, shunt)
    }
    house = BankConfig(id="house", packs=["pack-s", "pack-b"], meter="shunt")
    cabin = BankConfig(id="cabin", packs=["cab-1", "cab-2"])
    server = WebServer(tmp_path / "web", mosquitto, influxdb.url, dashboards_token)
    server.start()
    server.wait_broker()
    try:
        with chromium() as driver:
            open_page(driver, server, "now")
            for device, values in [*packs.items(), ("shunt", shunt)]:
                publisher.reading(device, "battery", values)
            for bank in (house, cabin):
                publisher.reading(bank.id, "bank", compute_bank(bank, readings, now).to_dict())
            publisher.reading("mppt", "charger", charger_reading())

            # Now is redrawn when its ages change (every second): each look is one script,
            # atomic in the page, so no element goes stale between finding and reading it
            def cards() -> list[str]:
                return driver.execute_script(  # type: ignore[no-any-return]
                    "return [...document.querySelectorAll('.side > section')].map(e => e.dataset.device)"
                )

            def card(device: str) -> str:
                return driver.execute_script(  # type: ignore[no-any-return]
                    f"return document.querySelector('.side > section[data-device=\"{device}\"]').innerText"
                )

            wait_for(lambda: cards() == ["house", "cabin"] or cards() == ["cabin", "house"], what="two bank cards")
            house_card, cabin_card = card("house"), card("cabin")
            assert "81%" in house_card.replace("\n", "") and "2 of 2 packs" in house_card
            assert "79%" in cabin_card.replace("\n", ""), "302 of 380 Ah, not the packs' mean of 70 %"
            members = driver.execute_script(
                "return [...document.querySelectorAll('.member')].map(e => e.dataset.device)"
            )
            assert sorted(members) == ["cab-1", "cab-2", "pack-b", "pack-s", "shunt"]
            flow = driver.execute_script("return document.querySelector('.flow svg').getAttribute('aria-label')")
            # the meter's −66 W and the cabin's +39.9 W: −26 W, where every device summed says −92 W
            assert "battery discharging 26\u202fW" in flow, flow
            for width, height in ((800, 480), (1920, 1080)):
                set_viewport(driver, width, height)
                time.sleep(0.3)
                size = driver.execute_script(
                    "const p = document.getElementById('page'); "
                    "return [document.documentElement.scrollHeight, innerHeight, p.scrollHeight, p.clientHeight]"
                )
                assert size[0] <= size[1] and size[2] <= size[3], f"Now scrolls at {width}x{height}: {size}"
                shoot(driver, f"now-banks-{width}x{height}")
            # a pack goes silent: the bank says so
            set_viewport(driver, 800, 480)
            only_one = {k: v for k, v in readings.items() if k != "cab-2"}
            publisher.reading("cabin", "bank", compute_bank(cabin, only_one, now + 1000).to_dict())
            count = "document.querySelector('.side > section[data-device=\"cabin\"] .count')"
            shown = wait_for(
                lambda: driver.execute_script(
                    f"const c = {count}; return c && c.innerText == '1 of 2 packs' && c.className"
                ),
                what="1 of 2 packs",
            )
            assert "partial" in shown.split(), shown
            shoot(driver, "now-bank-partial-800x480")
            assert console_errors(driver) == []
    finally:
        server.stop()


def test_energy_counts_a_bank_once_and_not_its_packs(web: WebServer, influxdb: InfluxDB, publisher: Publisher) -> None:
    """A bank of two packs charging 1 kW for an hour, stored as the energy task stores it:
    the days' energy grows by 1 kWh, where counting the bank and its packs would add
    2 kWh; and the same through the hours counted from raw (issue 31)."""
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    def energy() -> dict[str, Any]:
        return requests.get(f"{web.url}/api/energy?range=30d", timeout=60).json()

    def charged(body: dict[str, Any]) -> float:
        return sum(r["charged"] or 0.0 for r in body["rows"])

    before = energy()
    publisher.reading("bk", "bank", {"power": 1000.0, "packs": "p1,p2", "meter": None, "packs_fresh": 2})
    wait_for(lambda: "bk" in {d["device_id"] for d in web.state()["devices"]}, what="the bank on the display")
    hour = (int(time.time()) // 3600 - 3) * 3600
    stored = [
        {"measurement": m, "tags": {"device": d, "kind": m}, "fields": {"in_wh": w, "out_wh": 0.0, "covered_s": 3600.0},
         "time": hour * 1000}
        for m, d, w in (("bank", "bk", 1000.0), ("battery", "p1", 600.0), ("battery", "p2", 400.0))
    ]  # fmt: skip
    # ... and readings 30 s apart since the stored hours end (raw_from), up to now
    start = int(before["raw_from"]) + 5
    stamps = list(range(start, int(time.time()), 30))
    raw = [
        {"measurement": m, "tags": {"device": d, "kind": m}, "fields": {"power": w}, "time": t * 1000}
        for t in stamps
        for m, d, w in (("bank", "bk", 1000.0), ("battery", "p1", 600.0), ("battery", "p2", 400.0))
    ]
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org="sunbox") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        api.write("sunbox_energy", record=stored, write_precision=WritePrecision.MS)
        if raw:
            api.write("sunbox_raw", record=raw, write_precision=WritePrecision.MS)
    after = energy()
    tail = 1000.0 * max(0, len(stamps) - 1) * 30 / 3600  # the first reading has no interval before it
    assert charged(after) - charged(before) == pytest.approx(1000.0 + tail, abs=1.0), (before, after, tail)


def test_an_inverter_chargers_ac_input_is_in_the_load(web: WebServer, influxdb: InfluxDB) -> None:
    """Issue 31: a Multi's AC input (shore power or a generator) feeds the loads and the
    battery: it is its own series, and load = solar + AC in − charged + discharged."""
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    def yesterday() -> dict[str, Any]:
        rows = requests.get(f"{web.url}/api/energy?range=7d", timeout=60).json()["rows"]
        return rows[-2]

    before = yesterday()
    assert before["ac_in"] is None
    hour = int(before["start"]) + 12 * 3600
    point = "inverter,device=multi,kind=inverter in_wh=800,out_wh=0,covered_s=3600 " + str(hour * 1000)
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org="sunbox") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        api.write("sunbox_energy", record=point, write_precision=WritePrecision.MS)
    after = yesterday()
    assert after["ac_in"] == 800.0 and after["load"] == pytest.approx(before["load"] + 800.0), (before, after)
    assert after["charged"] == before["charged"] and after["solar"] == before["solar"]


# --- alarms (issue 32) ----------------------------------------------------------------------


def test_alarms_show_on_every_page_and_the_touchscreen_acknowledges_them(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path, publisher: Publisher
) -> None:
    """The real alarm engine (`sunbox alarms run`) and display on the real broker, the page in
    real Chromium at 800x480: a reading that breaks a rule puts the alarm in a banner on
    every page (Now still without scrolling), the Alarms page lists it, and its
    Acknowledge button (the kiosk's browser, on loopback) reaches the engine."""
    prefix = f"webalarms{uuid.uuid4().hex[:6]}"  # retained alarms stay out of the other tests
    config = tmp_path / "alarms.yaml"
    config.write_text(
        json.dumps(
            {
                "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "username": mosquitto.username,
                         "password": mosquitto.password, "client_id": f"alarms-{prefix}", "topic_prefix": prefix},
                "defaults": {"offline": False, "soc-low": False},
                "rules": [
                    {"id": "house-low", "quantity": "soc", "below": 20, "device": "house", "severity": "alarm",
                     "text": "house bank low"},
                    {"id": "spread", "quantity": "cell_voltage_delta", "above": 0.005, "device": "bat1"},
                ],
                "state_path": str(tmp_path / "state.json"),
                "outbox_path": str(tmp_path / "outbox.sqlite3"),
            }
        )
    )  # fmt: skip
    engine = subprocess.Popen(
        [sys.executable, "-m", "sunbox.cli", "alarms", "run", "-c", str(config)],
        stdout=(tmp_path / "alarms.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = WebServer(tmp_path / "web", mosquitto, influxdb.url, dashboards_token, prefix=prefix)
    server.start()
    server.wait_broker()
    try:
        with chromium() as driver:
            open_page(driver, server, "now")
            banner = lambda: driver.find_element("id", "banner")  # noqa: E731
            wait_for(lambda: "engine" not in banner().text, what="the engine online")
            publisher.reading("bat1", "battery", battery_reading(soc=87.0), prefix=prefix)
            started = time.monotonic()
            publisher.reading("house", "battery", battery_reading(soc=12.0), prefix=prefix)
            wait_for(lambda: banner().is_displayed() and "house" in banner().text, what="the banner")
            shown_s = time.monotonic() - started
            print(f"reading that breaks the rule -> banner on the screen: {shown_s:.2f} s")
            assert "house: house bank low (12)" in banner().text and "+1 more" in banner().text, banner().text
            assert "alarm" in banner().get_attribute("class").split()
            for page in [*PAGES, "alarms"]:
                open_page(driver, server, page)
                wait_for(lambda: banner().is_displayed(), what=f"the banner on {page}")
                if page == "now":
                    size = driver.execute_script(
                        "const p = document.getElementById('page'); "
                        "return [document.documentElement.scrollHeight, innerHeight, p.scrollHeight, p.clientHeight]"
                    )
                    assert size[0] <= size[1] and size[2] <= size[3], f"Now scrolls under the banner: {size}"
                    shoot(driver, "now-alarm-800x480")
            items = lambda: driver.find_elements("css selector", ".alarm-item")  # noqa: E731
            wait_for(lambda: len(items()) == 2, what="two active alarms")
            assert [i.get_attribute("data-alarm") for i in items()] == ["house-low/house", "spread/bat1"]
            shoot(driver, "alarms-800x480")
            heights = driver.execute_script(
                "return [...document.querySelectorAll('button, .tabs a, #banner')]"
                ".map(e => e.getBoundingClientRect().height)"
            )
            assert min(heights) >= 48, heights
            for alarm_id in ("house-low/house", "spread/bat1"):
                button = f'button[data-ack="{alarm_id}"]'
                # a tap: found and clicked again should an alarm change redraw the page in between
                wait_for(lambda b=button: driver.find_element("css selector", b).click() is None, what="a tap")
                wait_for(
                    lambda alarm_id=alarm_id: (
                        not driver.find_elements("css selector", f'button[data-ack="{alarm_id}"]')
                    ),
                    what=f"{alarm_id} acknowledged",
                )
            wait_for(lambda: "acked" in banner().get_attribute("class").split(), what="a quiet banner")
            assert banner().text == "2 acknowledged alarms still active"
            active = server.state()["alarms"]["active"]
            assert all(a["acked_ms"] for a in active) and len(active) == 2, active
            set_viewport(driver, 1920, 1080)
            time.sleep(0.3)
            shoot(driver, "alarms-1920x1080")
            # it clears: gone from the banner, in the past alarms
            set_viewport(driver, 800, 480)
            publisher.reading("house", "battery", battery_reading(soc=40.0), prefix=prefix)
            wait_for(lambda: banner().text == "1 acknowledged alarm still active", what="one left")
            wait_for(lambda: "cleared" in page_text(driver), what="the past alarms")
            assert console_errors(driver) == []
    finally:
        server.stop()
        engine.terminate()
        engine.wait(10)


async def test_only_the_touchscreen_or_a_viewer_with_the_password_acknowledges(tmp_path: Path) -> None:
    """The display's one write (issue 32): from loopback, or from the LAN with the viewer
    password; an unauthenticated LAN request is refused, with or without a password set."""
    from aiohttp.test_utils import make_mocked_request

    from sunbox.web.config import parse
    from sunbox.web.server import WebApp

    sent: list[str] = []
    secret = tmp_path / "viewer"
    secret.write_text("cabin-2026\n")
    alarm = {"id": "soc-low/house", "rule": "soc-low", "device": "house", "severity": "warning", "text": "low",
             "raised_ms": 1, "value": 12.0, "acked_ms": None, "cleared_ms": None}  # fmt: skip

    def app_with(password: bool) -> WebApp:
        extra = {"viewer_password_file": str(secret)} if password else {}
        app = WebApp(parse({"mqtt": {"username": "u", "password": "p"}, "influx": {"token": "t"}, **extra}), None)
        app.live.apply("sunbox/_alarms/active", json.dumps([alarm]).encode(), 0)
        app.acknowledge = lambda alarm_id: sent.append(alarm_id) is None
        return app

    async def ack(app: WebApp, address: str, password: str | None = None) -> int:
        headers = {"Content-Type": "application/json"}
        if password is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"x:{password}".encode()).decode()
        request = make_mocked_request("POST", "/api/alarms/ack", headers=headers, transport=_Peer(address))
        request._read_bytes = json.dumps({"id": "soc-low/house"}).encode()  # the body aiohttp would have read
        return (await app.guard(request, app.ack_route)).status

    open_lan, guarded = app_with(False), app_with(True)
    assert await ack(open_lan, "192.0.2.10") == 403  # no viewer password: the LAN only looks
    assert await ack(guarded, "192.0.2.10") == 401
    assert await ack(guarded, "192.0.2.10", "wrong") == 401
    assert sent == []
    assert await ack(open_lan, "127.0.0.1") == 202  # the touchscreen
    assert await ack(guarded, "192.0.2.10", "cabin-2026") == 202
    assert sent == ["soc-low/house", "soc-low/house"]
