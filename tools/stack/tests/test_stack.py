"""The test stack gives real servers: InfluxDB round trip, authenticated MQTT, Grafana API."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import requests
from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion

from sunbox_stack.servers import Grafana, InfluxDB, Mosquitto


def test_influxdb_write_and_read_back(influxdb: InfluxDB) -> None:
    marker = uuid.uuid4().hex
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            influxdb.bucket, record=Point("stack_check").tag("marker", marker).field("voltage", 13.37)
        )
        tables = client.query_api().query(
            f'from(bucket: "{influxdb.bucket}") |> range(start: -1h) |> filter(fn: (r) => r.marker == "{marker}")'
        )
    values = [record.get_value() for table in tables for record in table.records]
    assert values == [13.37]


def _client(server: Mosquitto, password: str | None) -> tuple[mqtt.Client, list[object]]:
    codes: list[object] = []
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
    if password is not None:
        client.username_pw_set(server.username, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason)
    return client, codes


def test_mqtt_authenticated_round_trip(mosquitto: Mosquitto) -> None:
    got: list[bytes] = []
    done = threading.Event()
    sub, _ = _client(mosquitto, mosquitto.password)
    sub.on_message = lambda _c, _u, msg: (got.append(msg.payload), done.set())
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("stack/check", qos=1)
    sub.loop_start()
    pub, _ = _client(mosquitto, mosquitto.password)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    time.sleep(0.3)
    pub.publish("stack/check", b"hello", qos=1).wait_for_publish(5)
    assert done.wait(5)
    assert got == [b"hello"]
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("password", [None, "wrong"])
def test_mqtt_refuses_without_valid_credentials(mosquitto: Mosquitto, password: str | None) -> None:
    client, codes = _client(mosquitto, password)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    assert codes and codes[0].is_failure  # type: ignore[attr-defined]


def test_grafana_datasource_is_healthy(grafana: Grafana, influxdb: InfluxDB) -> None:
    auth = ("admin", grafana.admin_password)
    response = requests.post(
        f"{grafana.url}/api/datasources",
        auth=auth,
        json={
            "name": "InfluxDB",
            "type": "influxdb",
            "access": "proxy",
            "url": influxdb.url,
            "jsonData": {"version": "Flux", "organization": influxdb.org, "defaultBucket": influxdb.bucket},
            "secureJsonData": {"token": influxdb.token},
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    uid = response.json()["datasource"]["uid"]
    health = requests.get(f"{grafana.url}/api/datasources/uid/{uid}/health", auth=auth, timeout=30)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "OK"
