"""``sunbox store`` end to end: the real Mosquitto -> the writer -> the real InfluxDB.

Nothing is lost when InfluxDB stops or the writer restarts mid-stream, and malformed
payloads are dead-lettered with a reason while the writer keeps going.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.config import MqttConfig
from sunbox.model import Reading, now_ms
from sunbox.mqtt.publisher import MqttPublisher
from sunbox.mqtt.queue import DiskQueue
from sunbox.storage import influx_setup, layout, store_config
from sunbox.storage.writer import Store
from sunbox_stack.servers import InfluxDB, Mosquitto, free_port

# one worker keeps this module's fixtures (tools/test.sh runs pytest-xdist)
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("store")]

LAYOUT = layout.parse({"org": "store"})


@pytest.fixture(scope="module")
def writer_token(influxdb: InfluxDB) -> str:
    result = influx_setup.apply(influxdb.url, influxdb.token, LAYOUT, layout.find_template().read_text())
    return result.tokens["writer"]


def make_config(mosquitto: Mosquitto, influxdb: InfluxDB, token: str, client_id: str, **over: Any) -> Any:
    data: dict[str, Any] = {
        "mqtt": {
            "host": "127.0.0.1",
            "port": mosquitto.port,
            "username": mosquitto.username,
            "password": mosquitto.password,
            "client_id": client_id,
        },
        "influx": {"url": influxdb.url, "org": LAYOUT.org, "bucket": LAYOUT.raw_bucket, "token": token},
        "batch_delay_s": 0.2,
        "retry_initial_s": 0.2,
        "retry_max_s": 1.0,
    }
    data.update(over)
    return store_config.parse(data)


class Publisher:
    def __init__(self, server: Mosquitto) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}"
        )
        self.client.username_pw_set(server.username, server.password)
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def reading(self, device: str, time_ms: int, voltage: float) -> None:
        body = {"device_id": device, "kind": "battery", "time_ms": time_ms, "voltage": voltage, "soc": 50.0}
        self.raw(f"sunbox/{device}/state", json.dumps(body).encode())

    def raw(self, topic: str, payload: bytes) -> None:
        self.infos.append(self.client.publish(topic, payload, qos=1))

    def flush(self) -> None:
        for info in self.infos:
            info.wait_for_publish(30)
        self.infos.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


def stored(influxdb: InfluxDB, prefix: str) -> dict[tuple[str, int], float]:
    """(device, time ms) -> voltage of every stored battery point of devices starting with prefix."""
    query = (
        f'from(bucket: "{LAYOUT.raw_bucket}") |> range(start: -2d, stop: 1h)'
        f' |> filter(fn: (r) => r._measurement == "battery" and r._field == "voltage"'
        f' and strings.hasPrefix(v: r.device, prefix: "{prefix}"))'
    )
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=LAYOUT.org, timeout=60_000) as client:
        tables = client.query_api().query('import "strings"\n' + query)
    out: dict[tuple[str, int], float] = {}
    for table in tables:
        for record in table.records:
            out[(record.values["device"], int(record.get_time().timestamp() * 1000))] = record.get_value()
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def dead_letters(mosquitto: Mosquitto) -> tuple[list[dict[str, Any]], mqtt.Client]:
    """A subscriber to the writer's dead-letter topic: the letters it gets, and the client
    (the caller disconnects it)."""
    letters: list[dict[str, Any]] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"dlq-{uuid.uuid4().hex[:6]}")
    sub.username_pw_set(mosquitto.username, mosquitto.password)
    sub.on_message = lambda _c, _u, m: letters.append(json.loads(m.payload))
    sub.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("sunbox/deadletter", 1)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    time.sleep(0.5)
    return letters, sub


def running_store(config: Any) -> Store:
    store = Store(config)
    store.start()
    assert store.wait_connected(10)
    return store


def test_readings_arrive_with_their_own_time(
    mosquitto: Mosquitto, influxdb: InfluxDB, writer_token: str, publisher: Publisher
) -> None:
    store = running_store(make_config(mosquitto, influxdb, writer_token, "store-a"))
    try:
        start = now_ms() - 3_600_000
        sent = {}
        for i in range(300):
            for device in ("ok-bat1", "ok-bat2"):
                sent[(device, start + i * 5000)] = 13.0 + i / 1000
                publisher.reading(device, start + i * 5000, 13.0 + i / 1000)
        publisher.flush()
        wait_for(lambda: len(stored(influxdb, "ok-")) == len(sent), what="every reading in InfluxDB")
        assert stored(influxdb, "ok-") == pytest.approx(sent)
        assert store.stats.dead_lettered == 0
    finally:
        store.stop()


def test_a_field_sites_readings_are_its_own_and_its_report_goes_back_to_it(
    mosquitto: Mosquitto, influxdb: InfluxDB, writer_token: str, publisher: Publisher
) -> None:
    """A bridged site's topics (sunbox.topics): stored as ``<site>.<device_id>``, beside
    the central Pi's own device of the same id, and each reported on its own topic."""
    reports: queue.Queue[tuple[str, dict[str, int]]] = queue.Queue()
    listener = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="site-report-listener")
    listener.username_pw_set(mosquitto.username, mosquitto.password)
    listener.on_message = lambda _c, _u, m: reports.put((m.topic, json.loads(m.payload)))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe("sunbox/_store/#", qos=1)
    listener.loop_start()
    store = running_store(make_config(mosquitto, influxdb, writer_token, "store-sites"))
    try:
        start = now_ms() - 600_000
        body = {"device_id": "sites-bat", "kind": "battery", "time_ms": start, "voltage": 13.1, "soc": 50.0}
        publisher.raw("sunbox/site/cabin/sites-bat/state", json.dumps(body).encode())
        publisher.reading("sites-bat", start, 12.9)
        publisher.flush()
        wait_for(
            lambda: (
                ("cabin.sites-bat", start) in stored(influxdb, "cabin.")
                and ("sites-bat", start) in stored(influxdb, "sites-")
            ),
            what="both readings in InfluxDB",
        )
        assert stored(influxdb, "cabin.sites-bat") == {("cabin.sites-bat", start): pytest.approx(13.1)}
        assert stored(influxdb, "sites-bat") == {("sites-bat", start): pytest.approx(12.9)}
        seen: dict[str, dict[str, int]] = {}
        wait_for(lambda: _drain(reports, seen) and len(seen) >= 2, what="both reports")
        assert seen["sunbox/_store/site/cabin/stored"] == {"sunbox/sites-bat/state": start}
        assert seen["sunbox/_store/stored"]["sunbox/sites-bat/state"] == start
    finally:
        store.stop()
        listener.loop_stop()
        listener.disconnect()


def _drain(inbox: queue.Queue[tuple[str, dict[str, int]]], into: dict[str, dict[str, int]]) -> bool:
    while not inbox.empty():
        topic, report = inbox.get()
        into.setdefault(topic, {}).update(report)
    return True


def test_influxdb_down_loses_nothing(
    mosquitto: Mosquitto, influxdb: InfluxDB, writer_token: str, publisher: Publisher
) -> None:
    store = running_store(make_config(mosquitto, influxdb, writer_token, "store-b"))
    try:
        influxdb.stop()
        start = now_ms() - 1_800_000
        for i in range(500):
            publisher.reading("down-bat", start + i * 1000, 12.0 + i / 1000)
        publisher.flush()
        wait_for(lambda: store.stats.write_failures > 0, what="a failed write")
        assert store.stats.written == 0
    finally:
        influxdb.start()
    try:
        wait_for(lambda: len(stored(influxdb, "down-")) == 500, what="the backlog in InfluxDB")
        assert store.stats.written == 500
    finally:
        store.stop()


def test_writer_restart_mid_stream_loses_nothing(
    mosquitto: Mosquitto, influxdb: InfluxDB, writer_token: str, publisher: Publisher
) -> None:
    config = make_config(mosquitto, influxdb, writer_token, f"store-{uuid.uuid4().hex[:6]}", batch_size=200)
    first = running_store(config)
    start = now_ms() - 1_800_000
    total = 3000
    done = threading.Event()

    def stream() -> None:
        for i in range(total):
            publisher.reading("rs-bat", start + i * 100, 11.0 + i / 10_000)
            if i % 100 == 0:
                time.sleep(0.02)
        done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    wait_for(lambda: first.stats.written >= 400, what="the first writer to write")
    first.stop()
    written_by_first = first.stats.written
    time.sleep(0.5)  # the stream goes on with no writer: the broker keeps the backlog
    second = running_store(config)
    try:
        thread.join(60)
        publisher.flush()
        assert done.is_set()
        wait_for(lambda: len(stored(influxdb, "rs-")) == total, what="every reading after the restart")
        points = stored(influxdb, "rs-")
        assert sorted(t for _, t in points) == [start + i * 100 for i in range(total)]
        assert 400 <= written_by_first < total
        assert second.stats.written >= total - written_by_first
    finally:
        second.stop()


def test_malformed_payloads_are_dead_lettered(
    mosquitto: Mosquitto, influxdb: InfluxDB, writer_token: str, publisher: Publisher
) -> None:
    letters, sub = dead_letters(mosquitto)
    store = running_store(make_config(mosquitto, influxdb, writer_token, "store-d"))
    try:
        publisher.raw("sunbox/dl-bat/state", b"{broken")
        publisher.raw("sunbox/dl-bat/state", b"\x00\xff")
        publisher.raw(
            "sunbox/dl-bat/state", json.dumps({"device_id": "dl-bat", "kind": "battery", "time_ms": 5}).encode()
        )
        publisher.raw(
            "sunbox/dl-bat/state",
            json.dumps({"device_id": "dl-other", "kind": "battery", "time_ms": now_ms(), "voltage": 1.0}).encode(),
        )
        publisher.raw(
            "sunbox/dl-bat/state",
            json.dumps(
                {"device_id": "dl-bat", "kind": "battery", "time_ms": now_ms() - 900, "voltage": "high"}
            ).encode(),
        )
        # a field whose type conflicts with what InfluxDB already holds: refused by InfluxDB itself
        stamp = now_ms() - 1000
        with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=LAYOUT.org) as client:
            client.write_api(write_options=SYNCHRONOUS).write(
                LAYOUT.raw_bucket,
                record=f'battery,device=dl-x,kind=battery odd_field="text" {stamp}',
                write_precision="ms",
            )
        publisher.raw(
            "sunbox/dl-bat/state",
            json.dumps({"device_id": "dl-bat", "kind": "battery", "time_ms": stamp, "odd_field": 1.5}).encode(),
        )
        publisher.reading("dl-bat", now_ms() - 500, 13.3)
        publisher.flush()
        wait_for(lambda: len(letters) == 6, what="six dead letters")
        wait_for(lambda: len(stored(influxdb, "dl-")) == 1, what="the good reading")
        reasons = [letter["reason"] for letter in letters]
        assert reasons[0].startswith("not JSON")
        assert reasons[1] == "not UTF-8" and letters[1]["payload_encoding"] == "base64"
        assert "before 2015" in reasons[2]
        assert "does not match the topic" in reasons[3]
        assert reasons[4] == "voltage: expected a number, got str"
        assert "InfluxDB refused the point" in reasons[5] and "type conflict" in reasons[5]
        assert all(letter["topic"] == "sunbox/dl-bat/state" for letter in letters)
        assert store.stats.dead_lettered == 6 and store.stats.written == 1
    finally:
        store.stop()
        sub.disconnect()
        sub.loop_stop()


def test_alarm_events_go_to_their_own_bucket_with_their_own_time(
    mosquitto: Mosquitto, influxdb: InfluxDB, writer_token: str, publisher: Publisher
) -> None:
    """The alarm engine's events (sunbox.alarms.service) as the writer stores them for
    History's markers; a malformed one is dead-lettered like a malformed reading."""
    letters, sub = dead_letters(mosquitto)
    store = running_store(make_config(mosquitto, influxdb, writer_token, "store-ev"))
    raised = now_ms() - 600_000
    alarm = {"rule": "soc-low", "device": "ev-bat", "severity": "warning", "text": "SOC below 20 %", "value": 19.4}
    try:
        for what, at in (("raised", raised), ("acked", raised + 60_000), ("cleared", raised + 300_000)):
            body = {"what": what, "time_ms": at, "alarm": {**alarm, "active": what != "cleared"}}
            publisher.raw("sunbox/_alarms/events", json.dumps(body).encode())
        publisher.raw("sunbox/_alarms/events", json.dumps({"what": "exploded", "time_ms": raised}).encode())
        publisher.flush()
        query = (
            f'from(bucket: "{LAYOUT.events_bucket}") |> range(start: -1h)'
            ' |> filter(fn: (r) => r._measurement == "alarm" and r.device == "ev-bat")'
        )

        def events() -> list[tuple[str, str, Any, int]]:
            with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=LAYOUT.org, timeout=60_000) as client:
                tables = client.query_api().query(query)
            return sorted(
                (r.values["event"], r.get_field(), r.get_value(), int(r.get_time().timestamp() * 1000))
                for t in tables
                for r in t.records
            )

        wait_for(lambda: len(events()) == 6, what="the three events in the events bucket")
        expected = []
        for what, at in (("raised", raised), ("acked", raised + 60_000), ("cleared", raised + 300_000)):
            expected += [(what, "text", "SOC below 20 %", at), (what, "value", 19.4, at)]
        assert events() == sorted(expected)
        wait_for(lambda: len(letters) == 1, what="the malformed event dead-lettered")
        assert letters[0]["topic"] == "sunbox/_alarms/events" and "not an alarm event" in letters[0]["reason"]
        assert not stored(influxdb, "ev-"), "no event in the raw bucket"
    finally:
        store.stop()
        sub.disconnect()
        sub.loop_stop()


@pytest.mark.parametrize(
    ("hold", "sync_after_s"),
    [(False, 0.0), (True, 0.0), (True, 25.0)],
    ids=["broker-ack-only", "held-until-stored", "held-in-the-fresh-queue"],
)
def test_a_killed_broker_loses_no_reading_the_collector_took(
    influxdb: InfluxDB, writer_token: str, tmp_path: Path, hold: bool, sync_after_s: float
) -> None:
    """Issue 16, finding 6: Mosquitto acknowledges, then is killed before its autosave.

    The writer is away (its session queues on the broker), the collector's publisher
    sends five readings and the broker acknowledges them; then the broker is SIGKILLed and
    started again, and the writer comes back. With the broker's acknowledgement alone
    (the control) the five are gone. Held until the writer reports them stored, the
    collector sends them again and all five are in InfluxDB, each once; the same when they
    wait in the fresh queue (issue 28), which syncs them while they wait (they were taken
    a minute ago, more than ``sync_after_s``).
    """
    broker = Mosquitto("mosquitto", free_port(), tmp_path / "mosquitto")
    broker.start()
    device = f"cut{int(hold)}-{uuid.uuid4().hex[:6]}"
    store_id = f"store-{uuid.uuid4().hex[:6]}"
    writer = running_store(make_config(broker, influxdb, writer_token, store_id))
    writer.stop()  # its persistent session stays on the broker, in memory
    queue = DiskQueue(
        tmp_path / "queue.sqlite3",
        3600,
        10_000,
        durable=hold,
        sync_after_s=sync_after_s,
        fresh_path=tmp_path / "run" / "queue-fresh.sqlite3",
    )
    publisher = MqttPublisher(
        MqttConfig(
            port=broker.port,
            host="127.0.0.1",
            username=broker.username,
            password=broker.password,
            client_id=f"collector-{device}",
            discovery=False,
            hold_until_stored=hold,
            ack_timeout_s=2,
        ),
        queue,
    )
    publisher.start()
    try:
        wait_for(lambda: publisher.connected, 30, "the collector connected")
        base = now_ms() - 60_000
        for i in range(5):
            publisher.publish_reading(Reading(device, "battery", base + i * 1000, {"voltage": 13.0 + i / 100}))
        if hold:  # all sent and acknowledged by the broker, kept for the writer
            wait_for(lambda: not queue.peek(10) and queue.oldest_unacknowledged_ms() is not None, 30, "sent")
            assert len(queue) == 5
        else:
            assert publisher.flush(30), "the broker acknowledged all five"
        assert broker.process is not None
        broker.process.kill()  # a pulled plug, for the broker: no shutdown, no save
        broker.process.wait(10)
        broker.process = None
        broker.start()
        writer = running_store(make_config(broker, influxdb, writer_token, store_id))
        try:
            if hold:
                wait_for(lambda: len(stored(influxdb, device)) == 5, 90, "all five readings in InfluxDB")
                wait_for(lambda: len(queue) == 0, 30, "the collector let them go once stored")
                assert publisher.stored >= 5
                # taken a minute ago, older than sync_after_s: synced while they waited
                assert queue.spilled == (5 if sync_after_s else 0)
            else:
                time.sleep(8)
            points = stored(influxdb, device)
            assert len(points) == (5 if hold else 0), sorted(points)
        finally:
            writer.stop()
    finally:
        publisher.stop()
        queue.close()
        broker.stop()
