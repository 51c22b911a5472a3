"""Issue 29: what ``sunbox web`` refuses, against the real process, Mosquitto and InfluxDB.

* finding 3: a ``Host`` that is not the display's (DNS rebinding) and an ``Origin`` that
  is not its own (cross-site WebSocket hijacking) are refused on every route, the live
  WebSocket included; the display's own names and origins, and configured ones, work;
* finding 4: every API parameter is checked at the edge (a 400 naming it), fuzzed, and
  nothing malformed reaches InfluxDB (no warning in the server's log);
* finding 5: only the kiosk's account may beat ``/api/heartbeat``; as root, a second
  account on the same machine is refused while the kiosk's is taken.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from sunbox.storage import influx_setup, layout
from sunbox.web.history import EARLIEST_S, QUANTITIES, RANGES
from sunbox.web.origin import OriginPolicy
from sunbox.web.peer import owner_uid
from sunbox_stack.servers import InfluxDB, Mosquitto

from .webkit import WebServer

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("web")]


@pytest.fixture(scope="module")
def dashboards_token(influxdb: InfluxDB) -> str:
    result = influx_setup.apply(influxdb.url, influxdb.token, layout.parse(None), layout.find_template().read_text())
    return str(result.tokens["dashboards"])


@pytest.fixture(scope="module")
def web(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    server = WebServer(
        tmp_path_factory.mktemp("web-security"),
        mosquitto,
        influxdb.url,
        dashboards_token,
        allowed_hosts=["sunbox.cabin.example"],
        allowed_origins=["https://ha.cabin.example:8123"],
    )
    server.start()
    server.wait_broker()
    yield server
    server.stop()


def get(web: WebServer, path: str, **headers: str) -> requests.Response:
    return requests.get(web.url + path, headers=headers, timeout=30)


# --- finding 3: Host and Origin -----------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/api/state", "/api/health", "/static/app.js", "/api/history?range=1h&quantity=soc"]
)
def test_a_foreign_host_name_is_refused_on_every_route(web: WebServer, path: str) -> None:
    refused = get(web, path, Host=f"rebind.attacker.example:{web.port}")
    assert refused.status_code == 403 and "rebind.attacker.example" in refused.text, refused.text
    # a look-alike of the Pi's own name is not its name
    assert get(web, path, Host=f"{socket.gethostname()}.attacker.example").status_code == 403


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "192.0.2.7:{port}", "{hostname}:{port}",
     "{hostname}.local:{port}", "SUNBOX.cabin.example:{port}"],
)  # fmt: skip
def test_the_display_own_names_and_addresses_are_answered(web: WebServer, host: str) -> None:
    header = host.format(port=web.port, hostname=socket.gethostname())
    assert get(web, "/api/state", Host=header).status_code == 200, header


def test_a_cross_site_page_cannot_read_the_state_but_the_display_own_page_can(web: WebServer) -> None:
    own = f"http://127.0.0.1:{web.port}"
    assert get(web, "/api/state", Origin=own).status_code == 200
    assert get(web, "/api/state", Origin="https://ha.cabin.example:8123").status_code == 200  # configured
    for origin in ("http://attacker.example", f"http://127.0.0.1:{web.port + 1}", "null", "file://", f"{own}.evil"):
        refused = get(web, "/api/state", Origin=origin)
        assert refused.status_code == 403 and "origin" in refused.text, (origin, refused.text)


def test_the_live_stream_refuses_a_cross_site_websocket(web: WebServer) -> None:
    async def open_stream(origin: str | None) -> Any:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(
                    f"{web.url}/api/live", origin=origin, timeout=aiohttp.ClientWSTimeout(ws_close=10)
                ) as ws:
                    message = await ws.receive(timeout=10)
                    return message.json()["type"]
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(open_stream(f"http://127.0.0.1:{web.port}")) == "snapshot"
    assert asyncio.run(open_stream(None)) == "snapshot"  # not a browser: no cross-site page behind it
    assert asyncio.run(open_stream("http://attacker.example")) == 403
    assert asyncio.run(open_stream(f"http://localhost:{web.port + 1}")) == 403


def test_origin_policy_rules() -> None:
    policy = OriginPolicy.build("sunbox", ["pi.lan"], ["https://ha.example:8123"])
    assert policy.host_refusal(None) is None
    assert policy.host_refusal("pi.lan.") is None and policy.host_refusal("SunBox.Local:8080") is None
    assert policy.host_refusal("[fe80::1]:8080") is None and policy.host_refusal("10.0.0.5") is None
    for bad in ("evil.example", "sunbox.evil.example", "a b", "user@sunbox", "sunbox/x", "[zz]:1"):
        assert policy.host_refusal(bad) is not None, bad
    assert policy.origin_refusal("http://sunbox:8080", "sunbox:8080") is None
    assert policy.origin_refusal("http://sunbox", "sunbox:80") is None
    assert policy.origin_refusal("https://ha.example:8123/", "sunbox:8080") is None
    for bad in ("http://sunbox:8081", "http://evil", "null", "ws://sunbox:8080", "http://sunbox:8080@evil"):
        assert policy.origin_refusal(bad, "sunbox:8080") is not None, bad
    assert policy.origin_refusal("http://sunbox:8080", None) is not None


# --- finding 4: parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("quantity=soc&start=-1000000000000000&stop=-999999999913600", "start"),  # the finding's request
        ("quantity=soc&start=nan", "start"),
        ("quantity=soc&start=1e400", "start"),
        ("quantity=soc&start=0&stop=86400", "start"),
        ("quantity=soc&start=1700000000&stop=99999999999", "stop"),
        ("quantity=soc&stop=1800000000", "start"),
        ("quantity=soc&range=1h&start=1800000000", "range"),
        ("quantity=soc&range=2h", "range"),
        ("quantity=soc", "range"),
        ("quantity=flux&range=1h", "quantity"),
        ("quantity=soc&quantity=voltage&range=1h", "quantity"),
        ("quantity=soc&range=1h&device=bat1%22%29%20or%20true", "device"),
        ("quantity=soc&range=1h&device=bat1%0A", "device"),
        ("quantity=soc&range=1h&bucket=sunbox_raw", "bucket"),
    ],
)
def test_history_parameters_are_checked_and_named(web: WebServer, query: str, named: str) -> None:
    answer = get(web, f"/api/history?{query}")
    assert answer.status_code == 400, (query, answer.status_code, answer.text)
    assert answer.json()["error"].startswith(f"{named}:"), (query, answer.json())


def test_other_routes_take_only_their_own_parameters(web: WebServer) -> None:
    assert get(web, "/api/energy?period=weeks").json()["error"].startswith("period:")
    assert get(web, "/api/energy?period=days&extra=1").json()["error"].startswith("extra:")
    assert get(web, "/api/state?x=1").status_code == 400
    assert get(web, "/api/gaps?device=bat1").status_code == 400
    assert get(web, "/api/energy?period=days").status_code == 200


#: Values the fuzzer draws from, besides random text: numbers at and past every edge.
EDGES = ["", " ", "0", "-0", "1e308", "-1e308", "inf", "-inf", "NaN", "1_000", "0x10", "9" * 400, "１２", "\u0000",
         str(EARLIEST_S), str(EARLIEST_S - 1), "%", "'", '"', "\\", "){", "|>", "bat1", "site.bat1", "bat1.",
         *RANGES, *QUANTITIES, "days", "months"]  # fmt: skip


def _fuzz_value(rng: random.Random, now: float) -> str:
    choice = rng.random()
    if choice < 0.4:
        return rng.choice(EDGES)
    if choice < 0.7:
        return str(rng.choice([now, now - 3600, EARLIEST_S, 0]) + rng.uniform(-4e9, 4e9) * rng.random() ** 8)
    alphabet = "abc019.-_:/\"'(){}|>$%\\ \t\n\u00e9\u4e2d"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))


def test_fuzzed_parameters_get_an_answer_never_an_error_and_no_bad_flux(web: WebServer) -> None:
    rng = random.Random(29)
    names = ["quantity", "range", "start", "stop", "device", "period"]
    statuses: dict[int, int] = {}
    log_before = web.log_path.stat().st_size
    deadline = time.monotonic() + 90
    for _ in range(400):
        if time.monotonic() > deadline:
            break
        path = rng.choice(["/api/history", "/api/energy"])
        params = {name: _fuzz_value(rng, time.time()) for name in rng.sample(names, rng.randint(0, 4))}
        answer = requests.get(web.url + path, params=params, timeout=30)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code in (200, 400), (path, params, answer.status_code, answer.text[:300])
        if answer.status_code == 400:
            assert answer.json()["error"].split(":")[0] in names or "unknown" in answer.text, answer.text
    print("statuses:", statuses)
    assert statuses.get(200, 0) > 10 and statuses.get(400, 0) > 100, statuses
    with web.log_path.open("rb") as log:
        log.seek(log_before)
        written = log.read().decode(errors="replace")
    assert "WARNING" not in written and "Traceback" not in written, written[-3000:]


# --- finding 5: the heartbeat --------------------------------------------------------------


def test_owner_uid_reads_the_kernel_socket_table() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   990        0 1 1\n"
        "   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 2 1\n"
        "   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000   990        0 3 1\n"
    )
    assert owner_uid([table], 0xC350, 0x1F90) == 1001  # the client's row, not the server's
    assert owner_uid([table], 0xC351, 0x1F90) is None
    assert owner_uid([table, table.replace(" 1001 ", " 1002 ")], 0xC350, 0x1F90) is None  # ambiguous
    assert owner_uid(["garbage\nnot a row\n"], 1, 2) is None


def _age(server: WebServer) -> Any:
    return requests.get(f"{server.url}/api/health", timeout=5).json()["kiosk_heartbeat_age_s"]


def test_only_the_kiosk_account_may_beat(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path
) -> None:
    """The kiosk is this test's own account here: its beat counts; as root, a beat from a
    second account (``nobody``) over loopback to the same server is refused."""
    server = WebServer(tmp_path / "web", mosquitto, influxdb.url, dashboards_token, kiosk_user=getpass.getuser())
    server.start()
    try:
        python = shutil.which("python3", path="/usr/bin:/bin")
        if os.geteuid() == 0 and python:
            other = subprocess.run(
                ["runuser", "-u", "nobody", "--", python, "-c",
                 "import sys, urllib.request, urllib.error\n"
                 "try: urllib.request.urlopen(sys.argv[1], timeout=10)\n"
                 "except urllib.error.HTTPError as e: print(e.code)\n"
                 "else: print(204)",
                 f"{server.url}/api/heartbeat"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert other.stdout.strip() == "403", other.stdout + other.stderr
            assert _age(server) is None, "another account's beat was taken"
        mine = requests.get(f"{server.url}/api/heartbeat", timeout=5)
        assert mine.status_code == 204
        age = _age(server)
        assert age is not None and age < 5
    finally:
        server.stop()


def test_a_beat_from_any_other_account_is_refused(
    mosquitto: Mosquitto, influxdb: InfluxDB, dashboards_token: str, tmp_path: Path
) -> None:
    server = WebServer(tmp_path / "web", mosquitto, influxdb.url, dashboards_token, kiosk_user="nobody")
    server.start()
    try:
        refused = requests.get(f"{server.url}/api/heartbeat", timeout=5)
        assert refused.status_code == 403 and "kiosk" in refused.text
        assert _age(server) is None
    finally:
        server.stop()
