"""systemd notifications (``sunbox.systemd``): the three services say READY=1, ping the
watchdog while they work and say STOPPING=1, over a real AF_UNIX datagram socket as
systemd's ``$NOTIFY_SOCKET`` (issue 16, item 12)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sunbox import systemd
from sunbox_stack.servers import InfluxDB, Mosquitto, free_port


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(0.5)
    yield sock, path
    sock.close()


def received(sock: socket.socket, until: float) -> list[str]:
    out: list[str] = []
    while time.monotonic() < until:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


def test_notify_reaches_a_path_and_an_abstract_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(100) == b"READY=1"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"sunbox-test-{os.getpid()}"
    abstract.bind("\0" + name)
    try:
        assert systemd.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert abstract.recv(100) == b"WATCHDOG=1"
    finally:
        abstract.close()
    assert not systemd.notify("READY=1", {}), "outside systemd nothing is sent"
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": path + "-gone"}), "no listener: no error either"


def test_the_watchdog_interval_is_for_this_process_only() -> None:
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "120000000"}) == 120.0
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}) == 120.0
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert systemd.watchdog_interval_s({}) is None


def service_configs(tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB) -> dict[str, Path]:
    mqtt = {"host": "127.0.0.1", "port": mosquitto.port, "username": mosquitto.username}
    mqtt["password"] = mosquitto.password
    influx = {"url": influxdb.url, "org": "sunbox", "token": influxdb.token}
    configs = {
        "store": {"mqtt": {**mqtt, "client_id": "notify-store"}, "influx": {**influx, "bucket": "raw"}},
        "web": {
            "listen": "127.0.0.1",
            "port": free_port(),
            "mqtt": {**mqtt, "client_id": "notify-web"},
            "influx": influx,
        },
        "run": {
            "mqtt": {**mqtt, "client_id": "notify-collector", "discovery": False},
            "queue": {"path": str(tmp_path / "queue.sqlite3")},
            "vedirect": [{"id": "shunt", "port": str(tmp_path / "no-such-tty")}],
        },
    }
    paths = {}
    for name, config in configs.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config))
    return paths


@pytest.mark.stack
@pytest.mark.parametrize("command", ["run", "store", "web"])
def test_each_service_says_ready_pings_and_says_stopping(
    command: str, notify_socket: tuple[socket.socket, str], mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    sock, path = notify_socket
    config = service_configs(tmp_path, mosquitto, influxdb)[command]
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="900000")  # pings every 0.3 s
    service = subprocess.Popen(
        [sys.executable, "-m", "sunbox.cli", command, "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        messages = received(sock, time.monotonic() + 8)
        assert service.poll() is None, service.stderr.read().decode()[-2000:] if service.stderr else ""
        assert messages and messages[0] == "READY=1", messages[:5]
        assert messages.count("WATCHDOG=1") >= 3, messages[:10]
        service.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in received(sock, time.monotonic() + 3)
        assert service.wait(30) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)
