"""Alarms end to end (issue 32): the real `sunbox alarms run` process on the real Mosquitto,
notifying a real HTTP receiver (Apprise's ``json://`` webhook protocol, served by aiohttp)
and a real SMTP server (aiosmtpd) that are both down while the alarms are raised and
cleared, the engine killed (SIGKILL) and restarted in between. When the receivers come
up, each gets exactly one message, a digest holding every change with its original time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from aiohttp import web
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.alarms.outbox import when
from sunbox.alarms.rules import DEFAULT_RULES
from sunbox.storage.points import parse_alarm_event
from sunbox_stack.servers import Mosquitto, free_port

from .test_mqtt_e2e import Subscriber, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]


class Mailbox:
    """aiosmtpd's handler: every message's body, as text."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


@contextlib.asynccontextmanager
async def webhook(port: int) -> AsyncIterator[list[dict[str, Any]]]:
    """A real HTTP receiver of Apprise's ``json://`` messages on ``port``: the bodies, as they come."""
    posts: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield posts
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def alarms_process(config_path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sunbox.cli", "alarms", "run", "-c", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def publisher(server: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(server.username, server.password)
    client.connect("127.0.0.1", server.port)
    client.loop_start()
    return client


def reading(device: str, soc: float, time_ms: int) -> str:
    return json.dumps({"device_id": device, "kind": "battery", "time_ms": time_ms, "soc": soc, "voltage": 13.0})


async def test_alarms_reach_the_owner_once_with_their_original_time_after_an_outage(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    http_port, smtp_port = free_port(), free_port()
    urls = tmp_path / "urls"
    urls.write_text(
        f"# the owner's targets\njson://127.0.0.1:{http_port}/hook\n"
        f"mailto://127.0.0.1:{smtp_port}?from=sunbox@example.org&to=owner@example.org&mode=insecure\n"
    )
    prefix = f"alarmtest{uuid.uuid4().hex[:6]}"  # retained alarms stay out of other tests' way
    config = {
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "username": mosquitto.username,
                 "password": mosquitto.password, "client_id": f"alarms-{uuid.uuid4().hex[:6]}",
                 "topic_prefix": prefix},
        "defaults": {"offline": False},
        "system": {"influx_url": None, "disk_path": None},
        "rules": [{"id": "house-low", "quantity": "soc", "below": 20, "clear_at": 25, "for_s": 1,
                   "device": "house", "severity": "alarm"}],
        "notify": {"urls_file": str(urls), "digest_s": 0.5, "retry_first_s": 0.5, "retry_max_s": 1},
        "state_path": str(tmp_path / "state.json"),
        "outbox_path": str(tmp_path / "outbox.sqlite3"),
    }  # fmt: skip
    config_path = tmp_path / "alarms.yaml"
    config_path.write_text(yaml.safe_dump(config))
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sunbox.cli", "alarms", "check", "-c", str(config_path)],
        capture_output=True,
        text=True,
    )
    listed = check.stdout + check.stderr
    assert check.returncode == 0 and "house-low: State of charge below 20 %" in check.stdout, listed
    subscriber = Subscriber(mosquitto, f"{prefix}/#")
    client = publisher(mosquitto)
    log = tmp_path / "alarms.log"

    def retained(alarm_id: str) -> dict[str, Any] | None:
        with subscriber.lock:
            found = [p for t, p, _r in subscriber.messages if t == f"{prefix}/_alarms/{alarm_id}"]
        return json.loads(found[-1]) if found else None

    def events() -> list[tuple[str, str, int]]:
        """The events the writer would store (validated as it does)."""
        with subscriber.lock:
            found = [p for t, p, _r in subscriber.messages if t == f"{prefix}/_alarms/events"]
        points = [parse_alarm_event(p, int(time.time() * 1000)) for p in found]
        return [(p.event, f"{p.rule}/{p.device}", p.time_ms) for p in points]

    def online() -> bool:
        with subscriber.lock:
            states = [p for t, p, _r in subscriber.messages if t == f"{prefix}/_alarms/availability"]
        return bool(states) and states[-1] == b"online"

    try:
        with alarms_process(config_path, log) as first:
            await wait_until(online, 30)
            t0 = int(time.time() * 1000) - 3000
            for i in range(3):  # 1 s apart: raised at the second (for_s 1)
                client.publish(f"{prefix}/house/state", reading("house", 12.0, t0 + i * 1000), qos=1)
            await wait_until(lambda: (retained("house-low/house") or {}).get("active") is True, 20)
            assert retained("house-low/house")["raised_ms"] == t0 + 1000
            await wait_until(lambda: events(), 10)
            assert events() == [("raised", "house-low/house", t0 + 1000)]
            state = json.loads((tmp_path / "state.json").read_text())
            assert [a["id"] for a in state["active"]] == ["house-low/house"]
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        with subscriber.lock:
            subscriber.messages.clear()
        with alarms_process(config_path, log):
            await wait_until(online, 30)
            # still low after the restart: no new alarm; then it clears past 25 %
            t1 = int(time.time() * 1000)
            for i in range(3):
                client.publish(f"{prefix}/house/state", reading("house", 12.0, t1 + i * 1000), qos=1)
            await asyncio.sleep(2)
            assert (retained("house-low/house") or {}).get("raised_ms") == t0 + 1000  # republished as it was
            client.publish(f"{prefix}/house/state", reading("house", 26.0, t1 + 4000), qos=1)
            await wait_until(lambda: (retained("house-low/house") or {}).get("active") is False, 20)
            await wait_until(lambda: events(), 10)
            assert events() == [("cleared", "house-low/house", t1 + 4000)], "raised once, not again at the restart"
            await asyncio.sleep(1.5)  # a failed attempt or two against the receivers that are down

            # the receivers come up
            mailbox = Mailbox()
            smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
            async with webhook(http_port) as posts:
                await asyncio.to_thread(smtp.start)
                try:
                    await wait_until(lambda: posts and mailbox.messages, 30)
                    await asyncio.sleep(3)  # longer than retry_max_s: nothing comes twice
                    assert len(posts) == 1 and len(mailbox.messages) == 1, (posts, mailbox.messages)
                finally:
                    await asyncio.to_thread(smtp.stop)
    finally:
        subscriber.close()
        client.loop_stop()
        client.disconnect()
    body = posts[0]["message"]
    lines = body.splitlines()
    assert posts[0]["title"] == "Sunbox: 2 alarm changes", body
    # the original times, in the order they happened, each change once
    raised = f"{when(t0 + 1000)}  RAISED  alarm  house: State of charge below 20 %"
    cleared = f"{when(t1 + 4000)}  CLEARED  alarm  house: State of charge below 20 %"
    assert lines == [raised + " (12)", cleared], body
    assert raised in mailbox.messages[0] and cleared in mailbox.messages[0]


async def test_the_appliance_going_wrong_is_notified_even_with_the_broker_down(tmp_path: Path) -> None:
    """The appliance's own alarms (sunbox.alarms.system) from the real service: the
    collector's last will, InfluxDB not answering, the broker stopped. The notification
    of the broker going down reaches the HTTP receiver while there is no broker at all."""
    broker = Mosquitto("mosquitto-alarms", free_port(), tmp_path / "mosquitto")
    broker.start()
    http_port = free_port()
    urls = tmp_path / "urls"
    urls.write_text(f"json://127.0.0.1:{http_port}/hook\n")
    quick = {"for_s": 1, "severity": "alarm"}
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": broker.username, "password": broker.password},
        "defaults": {rule.id: False for rule in DEFAULT_RULES},
        "rules": [
            {"id": "collector-gone", "quantity": "collector_online", "below": 1, **quick},
            {"id": "influx-gone", "quantity": "storage_up", "below": 1, **quick},
            {"id": "broker-gone", "quantity": "broker_connected", "below": 1, **quick},
            {"id": "card-ro", "quantity": "disk_writable", "below": 1, **quick},
            {"id": "house-empty", "quantity": "soc", "below": 5, "device": "house", "severity": "alarm"},
        ],
        "system": {"influx_url": f"http://127.0.0.1:{free_port()}", "disk_path": str(tmp_path), "check_s": 1},
        "notify": {"urls_file": str(urls), "digest_s": 0, "retry_first_s": 0.5, "retry_max_s": 1},
        "state_path": str(tmp_path / "state.json"),
        "outbox_path": str(tmp_path / "outbox.sqlite3"),
    }
    config_path = tmp_path / "alarms.yaml"
    config_path.write_text(yaml.safe_dump(config))

    try:
        async with webhook(http_port) as posts:

            def lines() -> list[str]:
                return [line for post in posts for line in post["message"].splitlines()]

            with alarms_process(config_path, tmp_path / "alarms.log"):
                client = publisher(broker)
                await wait_until(lambda: any("InfluxDB answering below 1" in line for line in lines()), 30)
                started = time.monotonic()
                client.publish("sunbox/collector/availability", "offline", qos=1, retain=True)
                await wait_until(lambda: any("Collector running below 1" in line for line in lines()), 30)
                # for_s 1 and a look every second (system.check_s): the rest is the service's own
                print(f"collector's last will -> notification at the receiver: {time.monotonic() - started:.2f} s")
                assert any("sunbox: Collector running below 1" in line for line in lines()), lines()
                # a reading that crosses a threshold with no delay: the engine, the outbox, Apprise
                started = time.monotonic()
                client.publish("sunbox/house/state", reading("house", 3.0, int(time.time() * 1000)), qos=1)
                await wait_until(lambda: any("house: State of charge below 5" in line for line in lines()), 30)
                print(
                    f"a reading below the threshold -> notification at the receiver: {time.monotonic() - started:.2f} s"
                )
                client.loop_stop()
                client.disconnect()
                broker.stop()
                await wait_until(lambda: any("Broker connected below 1" in line for line in lines()), 30)
                state = json.loads((tmp_path / "state.json").read_text())
                assert sorted(a["id"] for a in state["active"]) == [
                    "broker-gone/sunbox",
                    "collector-gone/sunbox",
                    "house-empty/house",
                    "influx-gone/sunbox",
                ], state  # the card (tmp_path's filesystem) is writable: no alarm
    finally:
        broker.stop()
