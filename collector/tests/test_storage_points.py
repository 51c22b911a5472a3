"""The writer's payload validation and raw-bucket schema (pure, no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sunbox.config import ConfigError
from sunbox.protocols import jbd, litime
from sunbox.storage import layout
from sunbox.storage.points import PayloadError, parse_message

NOW = 1_763_700_000_000


def payload(**over: Any) -> bytes:
    data: dict[str, Any] = {"device_id": "bat1", "kind": "battery", "time_ms": NOW - 5000, "voltage": 13.2}
    data.update(over)
    return json.dumps(data).encode()


def test_a_decoded_jbd_reading_becomes_one_point(vectors: dict[str, Any]) -> None:
    basic = next(v for v in vectors["jbd"] if v["hex"].startswith("dd03"))
    cells = next(v for v in vectors["jbd"] if v["hex"].startswith("dd04"))
    values = jbd.decode(bytes.fromhex(basic["hex"])) | jbd.decode(bytes.fromhex(cells["hex"]))
    body = json.dumps({"device_id": "bat1", "kind": "battery", "time_ms": NOW, **values}).encode()
    point = parse_message("sunbox/bat1/state", body, NOW)
    assert point.measurement == "battery" and point.device == "bat1" and point.time_ms == NOW
    assert point.fields["voltage"] == pytest.approx(values["voltage"])
    assert isinstance(point.fields["cycles"], float)
    assert isinstance(point.fields["protection_bits"], int) and not isinstance(point.fields["protection_bits"], bool)
    cells = [k for k in point.fields if k.startswith("cell_voltage_") and k[-2:].isdigit()]
    assert len(cells) == len(values["cell_voltages"])
    assert point.fields["cell_voltage_01"] == pytest.approx(values["cell_voltages"][0])
    assert "temperature_01" in point.fields
    assert "cell_voltages" not in point.fields and "temperatures" not in point.fields
    record = point.to_record()
    assert record["tags"] == {"device": "bat1", "kind": "battery"} and record["time"] == NOW


def test_a_litime_reading_keeps_text_and_bools(vectors: dict[str, Any]) -> None:
    frame = max(vectors["litime_mppt"], key=lambda v: len(v["hex"]))  # the status block
    values = litime.decode(bytes.fromhex(frame["hex"]))
    body = json.dumps({"device_id": "mppt", "kind": "charger", "time_ms": NOW, **values}).encode()
    point = parse_message("sunbox/mppt/state", body, NOW)
    assert point.fields["charge_state"] == values["charge_state"]
    assert point.fields["load_on"] is values["load_on"]
    assert "battery_temperature" not in point.fields or values["battery_temperature"] is not None


def test_health_goes_to_its_own_measurement() -> None:
    body = json.dumps(
        {"device_id": "bat1", "kind": "health", "time_ms": NOW, "connected": True, "rssi": None, "reconnects": 2}
    ).encode()
    point = parse_message("sunbox/bat1/health", body, NOW)
    assert point.measurement == "health"
    assert point.fields == {"connected": True, "reconnects": 2.0}


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("sunbox/bat1/state", b"\xff\xfe", "not UTF-8"),
        ("sunbox/bat1/state", b"{not json", "not JSON"),
        ("sunbox/bat1/state", b'{"voltage": NaN}', "NaN"),
        ("sunbox/bat1/state", b"[1, 2]", "not a JSON object"),
        ("sunbox/bat1/state", payload(device_id="Bat 1"), "device_id"),
        ("sunbox/other/state", payload(), "does not match the topic"),
        ("sunbox/bat1/state", payload(kind="health"), "does not belong"),
        ("sunbox/bat1/health", payload(), "does not belong"),
        ("sunbox/bat1/state", payload(kind=7), "kind"),
        ("sunbox/bat1/state", payload(time_ms="yesterday"), "time_ms"),
        ("sunbox/bat1/state", payload(time_ms=12.5), "time_ms"),
        ("sunbox/bat1/state", payload(time_ms=5000), "before 2015"),
        ("sunbox/bat1/state", payload(time_ms=NOW + 3 * 86400_000), "future"),
        ("sunbox/bat1/state", payload(voltage="13"), "voltage: expected a number"),
        ("sunbox/bat1/state", payload(voltage={"v": 1}), "expected a number"),
        ("sunbox/bat1/state", payload(charge_fet_on=1), "expected true or false"),
        ("sunbox/bat1/state", payload(model=12), "expected text"),
        ("sunbox/bat1/state", payload(model="x" * 2000), "longer than"),
        ("sunbox/bat1/state", payload(protection_bits=-1), "non-negative integer"),
        ("sunbox/bat1/state", payload(protection_bits=1.5), "non-negative integer"),
        ("sunbox/bat1/state", payload(cell_voltages=[3.3, "x"]), "cell_voltages[1]"),
        ("sunbox/bat1/state", payload(voltage=None), "no values"),
        ("sunbox/bat1/state", payload(**{"Bad-Name": 1}), "data-model name"),
        ("sunbox/bat1", payload(), "unexpected topic"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(topic: str, body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_message(topic, body, NOW)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_payloads_never_crash(body: bytes) -> None:
    try:
        parse_message("sunbox/bat1/state", body, NOW)
    except PayloadError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["device_id", "kind", "time_ms", "voltage", "cell_voltages", "alarm_bits"]), json_values
    )
)
def test_random_json_objects_never_crash(data: dict[str, Any]) -> None:
    try:
        body = json.dumps(data).encode()
    except ValueError:
        return
    try:
        point = parse_message("sunbox/bat1/state", body, NOW)
    except PayloadError:
        return
    # whatever passed is well-formed
    assert point.device == "bat1" and point.fields
    for value in point.fields.values():
        assert isinstance(value, float | int | bool | str)


def test_layout_defaults_follow_the_issue() -> None:
    lay = layout.parse(None)
    assert lay.buckets() == {
        "sunbox_raw": 86400,
        "sunbox_2m": 7 * 86400,
        "sunbox_5m": 31 * 86400,
        "sunbox_30m": 366 * 86400,
        "sunbox_2h": 3660 * 86400,
    }
    assert [t.every for t in lay.tiers] == [120, 300, 1800, 7200]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tiers": [{"name": "1m", "every": "1x", "retention": "7d"}]}, "tiers.0.every"),
        ({"tiers": [{"name": "7m", "every": "7m", "retention": "7d"}]}, "divide a day"),
        ({"catchup": "30h"}, "raw_retention"),
        ({"tiers": [{"name": "2m", "every": "2m", "retention": "7d"}] * 2}, "unique"),
        ({"raw_bucket": "x", "bogus": 1}, "bogus: unknown key"),
    ],
)
def test_bad_layouts_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        layout.parse(data)


def test_one_template_renders_every_tier() -> None:
    lay = layout.parse(None)
    template = layout.find_template().read_text()
    scripts = [layout.render_task(lay, tier, template) for tier in lay.tiers]
    assert 'option task = {name: "sunbox_downsample_30m", every: 30m}' in scripts[2]
    assert 'destination = "sunbox_2h"' in scripts[3]
    assert all("offset" not in s and "${" not in s and "//" not in s for s in scripts)


def test_the_example_files_are_valid() -> None:
    from pathlib import Path

    from sunbox.storage import store_config

    examples = Path(__file__).parents[1] / "examples"
    assert layout.load(examples / "storage.yaml") == layout.parse(None)
    cfg = store_config.load(examples / "store.yaml")
    assert cfg.mqtt.client_id == "sunbox-store" and cfg.influx.bucket == "sunbox_raw"
    with pytest.raises(ConfigError, match="receive_maximum"):
        store_config.parse({**_store_minimal(), "batch_size": 30_000})
    with pytest.raises(ConfigError, match=r"influx: set exactly one of token"):
        store_config.parse({**_store_minimal(), "influx": {}})


def _store_minimal() -> dict[str, Any]:
    return {"mqtt": {"username": "u", "password": "p"}, "influx": {"token": "t"}}
