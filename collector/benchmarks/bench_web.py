"""``sunbox web`` benchmarks: a real Mosquitto, InfluxDB 2 (seeded like the dashboards'
tests), the real ``sunbox web`` process and a real headless Chromium (Debian's).

Reports (targets from issue 13, this machine):
1. MQTT publish to the value on screen, over 100 readings: median <= 250 ms, p95 <= 1 s.
   The page records ``Date.now()`` when a battery card shows the new reading's
   ``time_ms``; the publisher stamps ``time_ms`` just before publishing (same clock).
2. Now page drawn after navigation (navigation start to every battery card showing its
   SOC), median of 10 loads: <= 1.5 s.
3. A 10-year History request, server side (the HTTP round trip on loopback), median of
   10: <= 500 ms.
4. ``sunbox web`` RSS with 5 devices publishing every second and 3 open pages, after
   60 s: <= 60 MB.
5. A 10-year energy request (``/api/energy?range=10y``, issue 31), server side, median
   of 10, with 10 years of hourly energy for a bank, its two packs and two chargers (the
   energy task's points, 438,000 of them): <= 500 ms.

Run (as a developer, after ``./tools/test.sh`` provisioned the stack):
``.venv/bin/python collector/benchmarks/bench_web.py [energy]`` (``energy``: only 5)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.webkit import Publisher, WebServer, battery_reading, charger_reading, chromium

from sunbox_stack import seed
from sunbox_stack.servers import InfluxDB, Mosquitto, free_port

#: records when each battery card first shows a given reading (data-time = time_ms)
OBSERVE = """
window.__seen = {};
new MutationObserver(() => {
  for (const card of document.querySelectorAll('[data-device][data-time]')) {
    const key = card.dataset.device + ':' + card.dataset.time;
    if (!(key in window.__seen)) window.__seen[key] = Date.now();
  }
}).observe(document.getElementById('page'), {childList: true, subtree: true, attributes: true});
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(web: WebServer, pub: Publisher, driver: Any, n: int = 100) -> list[float]:
    driver.get(f"{web.url}/#now")
    time.sleep(1.5)
    driver.execute_script(OBSERVE)
    sent: dict[int, float] = {}
    for i in range(n):
        stamp = int(time.time() * 1000)
        sent[stamp] = stamp
        pub.reading("bench1", "battery", battery_reading(soc=float(i % 100)), time_ms=stamp)
        time.sleep(0.2)
    time.sleep(2)
    seen: dict[str, int] = driver.execute_script("return window.__seen")
    out = []
    for stamp in sent:
        key = f"bench1:{stamp}"
        if key in seen:
            out.append(seen[key] - stamp)
    return out


def now_drawn(web: WebServer, driver: Any, n: int = 10) -> list[float]:
    """ms from navigation start until every battery card shows its SOC (performance.now())."""
    times = []
    for _ in range(n):
        driver.get("about:blank")
        driver.get(f"{web.url}/#now")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            value = driver.execute_script(
                "const c=[...document.querySelectorAll('.battery .soc')];"
                "return c.length>=2 && c.every(x=>/\\d/.test(x.textContent)) ? performance.now() : null"
            )
            if value is not None:
                times.append(float(value))
                break
            time.sleep(0.01)
    return times


def history_10y(web: WebServer, n: int = 10) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = requests.get(f"{web.url}/api/history?quantity=battery_power&range=10y", timeout=60)
        times.append((time.perf_counter() - started) * 1000)
        assert response.ok and response.json()["series"], response.text[:300]
    return times


def energy_10y(web: WebServer, influx: InfluxDB, pub: Publisher, n: int = 10) -> list[float]:
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    devices = [
        ("house", "bank"),
        ("pack1", "battery"),
        ("pack2", "battery"),
        ("mppt1", "charger"),
        ("mppt2", "charger"),
    ]
    pub.reading("house", "bank", {"power": 100.0, "packs": "pack1,pack2", "meter": None, "packs_fresh": 2})
    last = int(time.time()) // 3600 * 3600 - 3600
    with InfluxDBClient(url=influx.url, token=influx.token, org="sunbox", timeout=300_000) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        for device, kind in devices:
            lines = [
                f"{kind},device={device},kind={kind} in_wh={200 + h % 24},out_wh={150 + h % 7},covered_s=3600 "
                f"{(last - h * 3600) * 1000}"
                for h in range(3650 * 24)
            ]
            for i in range(0, len(lines), 20_000):
                api.write("sunbox_energy", record=lines[i : i + 20_000], write_precision=WritePrecision.MS)
    time.sleep(2)  # the bank's reading reached the display: its packs are left out
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = requests.get(f"{web.url}/api/energy?range=10y", timeout=60)
        times.append((time.perf_counter() - started) * 1000)
        assert response.ok and len(response.json()["rows"]) == 10, response.text[:300]
    return times


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="sunbox-bench-web-"))
    broker = Mosquitto("mosquitto", free_port(), work / "mosquitto")
    influx = InfluxDB("influxd", free_port(), work / "influx")
    broker.start()
    influx.start()
    token = seed.seed_history(influx)
    web = WebServer(work / "web", broker, influx.url, token)
    web.start()
    web.wait_broker()
    pub = Publisher(broker)
    only_energy = sys.argv[1:] == ["energy"]
    try:
        if not only_energy:
            for device in ("bat1", "bat2"):
                pub.reading(device, "battery", battery_reading(soc=80.0))
            pub.reading("mppt", "charger", charger_reading())
            with chromium() as driver:
                lat = latency(web, pub, driver)
                drawn = now_drawn(web, driver)
            hist = history_10y(web)
            with chromium() as driver:
                for _ in range(3):
                    driver.execute_script(f"window.open('{web.url}/#now')")
                devices = [
                    ("bat1", "battery"),
                    ("bat2", "battery"),
                    ("bat3", "battery"),
                    ("mppt", "charger"),
                    ("solar", "charger"),
                ]
                for _ in range(60):
                    for device, kind in devices:
                        values = battery_reading(soc=70.0) if kind == "battery" else charger_reading()
                        pub.reading(device, kind, values)
                        pub.health(device)
                    time.sleep(1)
                assert web.process is not None
                rss = rss_mib(web.process.pid)
        energy = energy_10y(web, influx, pub)
    finally:
        pub.close()
        web.stop()
        influx.stop()
        broker.stop()
    if not only_energy:
        print(
            f"1. publish -> on screen: {len(lat)}/100 seen; median {statistics.median(lat):.0f} ms, "
            f"p95 {percentile(lat, 0.95):.0f} ms, max {max(lat):.0f} ms (targets 250 / 1000 ms)"
        )
        print(
            f"2. Now drawn after navigation: median {statistics.median(drawn):.0f} ms, "
            f"max {max(drawn):.0f} ms over {len(drawn)} loads (target 1500 ms)"
        )
        print(
            f"3. 10-year History request: median {statistics.median(hist):.0f} ms, "
            f"max {max(hist):.0f} ms (target 500 ms)"
        )
        print(f"4. sunbox web RSS, 5 devices at 1 Hz and 3 open pages, after 60 s: {rss:.1f} MiB (target 60 MB)")
    print(
        f"5. 10-year energy request: median {statistics.median(energy):.0f} ms, "
        f"max {max(energy):.0f} ms (target 500 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
