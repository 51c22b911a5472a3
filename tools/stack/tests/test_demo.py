"""``tools/demo.sh`` as a newcomer runs it: readings as one line per device with units,
InfluxDB's points per bucket, and Ctrl-C stopping everything in about a second with no
process left behind and the logs kept (issue 18)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

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


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(400)
def test_the_demo_shows_every_device_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = dict(
        os.environ,
        SUNBOX_DEMO_LOGS=str(logs),
        SUNBOX_DEMO_EVERY="1",
        SUNBOX_DEMO_MQTT_PORT="28830",
        SUNBOX_DEMO_HCI_PORT="29001",
        SUNBOX_DEMO_INFLUX_PORT="28086",
        SUNBOX_DEMO_WEB_PORT="28080",
    )
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            ["bash", str(ROOT / "tools" / "demo.sh")],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
            # and Ctrl-C acting, as in a terminal: a runner that started the tests in the
            # background passes SIGINT down ignored, and a shell cannot trap a signal that
            # was ignored when it started
            preexec_fn=_default_sigint,
        )
    try:
        deadline = time.monotonic() + 300
        want = ("house-battery", "mppt", "smartsolar", "shunt")
        last = ""
        while time.monotonic() < deadline:
            blocks = out.read_text().split("\n\n")
            last = blocks[-2] if len(blocks) > 1 else ""
            if all(re.search(rf"^  {d}\s+\w+\s+\S+ \S", last, re.M) for d in want) and re.search(
                r"sunbox_raw: [1-9]", last
            ):
                break
            assert demo.poll() is None, out.read_text()[-3000:]
            time.sleep(1)
        assert all(d in last for d in want), out.read_text()[-3000:]
        assert re.search(r"^  house-battery\s+battery\s+\d+ %  \d+\.\d\d V", last, re.M), last
        assert re.search(r"sunbox_raw: [1-9]\d*", last), last
        assert re.search(r"sunbox_raw: \d+, sunbox_2m: \d+, sunbox_5m: \d+, sunbox_30m: \d+, sunbox_2h: \d+", last), (
            last
        )
        assert max(len(line) for line in last.splitlines()) < 160, "compact lines, not raw JSON"
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        started = time.monotonic()
        demo.wait(30)
        stopped_in = time.monotonic() - started
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    time.sleep(0.5)
    print(f"demo: Ctrl-C stopped everything in {stopped_in:.2f} s")
    # 1.1-1.3 s measured (issue 18 asks for 2 s; 5 s leaves room for a loaded machine).
    # The demo kills what has not stopped 5 s (the collector) or 10 s (the rest) after its
    # SIGTERM and says so: that is a hang, and fails here too.
    killed = [line for line in out.read_text().splitlines() if "killed:" in line]
    assert stopped_in <= 5.0 and not killed, f"Ctrl-C took {stopped_in:.1f} s; {killed}"
    assert not _processes_mentioning("28830") and not _processes_mentioning("28086"), "a process was left behind"
    assert {"collector.log", "store.log", "web.log", "influxd.log"} <= {p.name for p in logs.iterdir()}
    assert "logs in" in out.read_text().splitlines()[-1]
