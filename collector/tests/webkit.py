"""Helpers for the display's tests and benchmark: a real ``sunbox web`` process, a real
headless Chromium driven by Selenium (Debian's chromium and chromium-driver), and
readings published to the real Mosquitto.

The readings are the captured frames decoded (``fixtures/devices.json``), as the
collector publishes them for the simulated devices that replay those captures.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import requests
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.drivers.jbd import cell_statistics
from sunbox.model import Health, now_ms
from sunbox.protocols import jbd, litime
from sunbox_stack.servers import Mosquitto, free_port

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: where the tests write their screenshots for review (README's picture comes from here)
SCREENSHOTS = Path(os.environ.get("SUNBOX_SCREENSHOTS", "/tmp/sunbox-screenshots"))


def battery_reading(soc: float | None = None, **changes: Any) -> dict[str, Any]:
    """A JBD reading decoded from the captured 0x03/0x04/0x05 frames (syssi SP04S034)."""
    frames = json.loads((FIXTURES / "devices.json").read_text())["jbd"]
    values: dict[str, Any] = {}
    for frame in frames[:3]:
        values.update(jbd.decode(bytes.fromhex(frame["hex"])))
    values.update(cell_statistics(values["cell_voltages"]))
    if soc is not None:
        values["soc"] = soc
    values.update(changes)
    return values


def charger_reading(**changes: Any) -> dict[str, Any]:
    """A LiTime reading decoded from the captured Modbus frame (mavenius)."""
    frame = json.loads((FIXTURES / "devices.json").read_text())["litime_mppt"][0]
    values = litime.decode(bytes.fromhex(frame["hex"]))
    values.update(changes)
    return values


class Publisher:
    """Publishes readings as the collector does (``sunbox/<id>/state``, QoS 1)."""

    def __init__(self, server: Mosquitto) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}"
        )
        self.client.username_pw_set(server.username, server.password)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()

    def raw(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def reading(
        self, device_id: str, kind: str, values: dict[str, Any], time_ms: int | None = None, prefix: str = "sunbox"
    ) -> int:
        stamp = now_ms() if time_ms is None else time_ms
        body = {"device_id": device_id, "kind": kind, "time_ms": stamp, **values}
        self.raw(f"{prefix}/{device_id}/state", json.dumps(body))
        return stamp

    def health(self, device_id: str, **values: Any) -> None:
        health = Health(device_id, connected=True, rssi=-67, poll_latency_ms=41.0, last_reading_ms=now_ms(), **values)
        self.raw(f"sunbox/{device_id}/health", json.dumps(health.snapshot().to_dict()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WebServer:
    """``sunbox web`` as a real process (the CLI), configured for the given servers."""

    def __init__(
        self, workdir: Path, mosquitto: Mosquitto, influx_url: str, token: str, prefix: str = "sunbox", **extra: Any
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        token_file = workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = {
            "listen": "127.0.0.1",
            "port": self.port,
            "mqtt": {
                "host": "127.0.0.1",
                "port": mosquitto.port,
                "username": mosquitto.username,
                "password": mosquitto.password,
                "client_id": f"web-{uuid.uuid4().hex[:6]}",
                "topic_prefix": prefix,
            },
            "influx": {"url": influx_url, "org": "sunbox", "token_file": str(token_file)},
            # the test's browser plays the kiosk: it runs as this account
            "kiosk_user": getpass.getuser(),
            **extra,
        }
        self.config_path = workdir / "web.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "web.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sunbox.cli", "web", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/api/health", timeout=5).ok:
                    return
            time.sleep(0.1)
        raise AssertionError(f"sunbox web did not come up: {self.log_path.read_text()[-3000:]}")

    def wait_broker(self, connected: bool = True, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if requests.get(f"{self.url}/api/health", timeout=5).json()["broker"]["connected"] == connected:
                return
            time.sleep(0.1)
        raise AssertionError(f"broker connected != {connected} after {timeout} s")

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{self.url}/api/state", timeout=10).json()
        return body

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


@contextlib.contextmanager
def chromium(width: int = 800, height: int = 480) -> Iterator[Any]:
    """A headless Chromium (Debian's) through Debian's chromedriver, with console logs on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="sunbox-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        set_viewport(driver, width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport exactly width x height (the touchscreen is 800x480)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
