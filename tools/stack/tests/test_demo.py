"""``tools/demo.sh`` as a newcomer runs it: readings as one line per device with units,
InfluxDB's points per bucket, and Ctrl-C stopping everything without the demo's kill
fallback, no process left behind and the logs kept (issue 18; the stop time is measured
by collector/benchmarks/bench_demo_stop.py)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from sunbox_stack.demo import start
from sunbox_stack.watch import describe, render

ROOT = Path(__file__).resolve().parents[3]


def test_a_reading_is_one_line_with_units() -> None:
    battery = {
        "soc": 96,
        "voltage": 13.34,
        "current": -0.53,
        "cell_voltages": [3.335, None, 3.341],
        "temperatures": [21.5],
    }
    assert describe(battery) == "96 %  13.34 V  -0.53 A  cells 3.335-3.341 V  21.5 °C"
    text = render(
        {"bat": {"kind": "battery", "time_ms": 1_000, **battery}}, {"sunbox_raw": 12, "sunbox_2m": 0}, 2, 6_000
    )
    assert "bat  battery  96 %" in text and "(5 s ago)" in text and "2 bad message(s)" in text
    assert "InfluxDB points: sunbox_raw: 12, sunbox_2m: 0" in text
    assert "InfluxDB: not answering yet" in render({}, None, 0, 0)


def _processes_mentioning(word: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if word in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.timeout(400)
def test_the_demo_shows_every_device_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    demo = start(ROOT, tmp_path, 28000)
    try:
        last = demo.wait_for_readings(300)
        assert re.search(r"^  house-battery\s+battery\s+\d+ %  \d+\.\d\d V", last, re.M), last
        assert re.search(r"sunbox_raw: [1-9]\d*", last), last
        assert re.search(r"sunbox_raw: \d+, sunbox_2m: \d+, sunbox_5m: \d+, sunbox_30m: \d+, sunbox_2h: \d+", last), (
            last
        )
        assert max(len(line) for line in last.splitlines()) < 160, "compact lines, not raw JSON"
        stopped_in = demo.ctrl_c(30)
    finally:
        demo.kill()
    time.sleep(0.5)
    print(f"demo: Ctrl-C stopped everything in {stopped_in:.2f} s; {demo.text().splitlines()[-1]}")
    # A hang is what fails here: the demo SIGKILLs what has not stopped 5 s (the collector)
    # or 10 s (the rest) after its SIGTERM and says so. How fast it stops (issue 18: 2 s;
    # 1.1-1.9 s measured, 5.6 s once in CI beside the virtual Pi's VM) is a benchmark's
    # number, collector/benchmarks/bench_demo_stop.py, not a time limit here.
    assert not demo.killed(), demo.killed()
    assert stopped_in < 16, f"Ctrl-C took {stopped_in:.1f} s, past the demo's own 5 + 10 s bounds"
    assert not _processes_mentioning("28830") and not _processes_mentioning("28086"), "a process was left behind"
    assert {"collector.log", "store.log", "web.log", "influxd.log"} <= {p.name for p in demo.logs.iterdir()}
    assert "logs in" in demo.text().splitlines()[-1]
