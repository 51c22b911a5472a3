"""The writer's payload validation and raw-bucket schema (pure, no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sunbox.config import ConfigError
from sunbox.protocols import jbd, litime
from sunbox.protocols.vreg_registers import FAMILIES, FAMILY_KINDS, REGISTERS
from sunbox.storage import layout, points
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
        "sunbox_energy": 3660 * 86400,
        "sunbox_events": 3660 * 86400,
    }
    assert [t.every for t in lay.tiers] == [120, 300, 1800, 7200]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tiers": [{"name": "1m", "every": "1x", "retention": "7d"}]}, "tiers.0.every"),
        ({"tiers": [{"name": "7m", "every": "7m", "retention": "7d"}]}, "divide a day"),
        ({"catchup": "47h"}, "raw_retention"),
        ({"raw_shard_group": "5h"}, "multiple of raw_shard_group"),
        ({"tiers": [{"name": "5m", "every": "5m", "retention": "7d", "run_every": "7m"}]}, "run_every"),
        ({"tiers": [{"name": "5m", "every": "5m", "retention": "7d", "run_every": "7h"}]}, "run_every"),
        ({"catchup": "3h", "tiers": [{"name": "2h", "every": "2h", "retention": "7d", "run_every": "2h"}]}, "catchup"),
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
    assert 'option task = {name: "sunbox_downsample_30m", every: 2h}' in scripts[2]
    assert "period = 30m" in scripts[2]
    assert 'option task = {name: "sunbox_downsample_2h", every: 2h}' in scripts[3]
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


def _every_decoder_output(vectors: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, values) from every decoder on the real captures."""
    from pathlib import Path

    from sunbox.protocols import vedirect, venus, victron_advert, vreg

    fixtures = Path(__file__).parent / "fixtures"
    out: list[tuple[str, dict[str, Any]]] = []
    basic = next(v for v in vectors["jbd"] if v["hex"].startswith("dd03"))
    cells = next(v for v in vectors["jbd"] if v["hex"].startswith("dd04"))
    model = next(v for v in vectors["jbd"] if v["hex"].startswith("dd05"))
    jbd_values = {}
    for frame in (basic, cells, model):
        jbd_values.update(jbd.decode(bytes.fromhex(frame["hex"])))
    out.append(("battery", jbd_values))
    litime_values = {}
    for frame in vectors["litime_mppt"]:
        litime_values.update(litime.decode(bytes.fromhex(frame["hex"])))
    out.append(("charger", litime_values))
    for name in ("vedirect_bluesolar_1.23.dump", "vedirect_bvm702.dump"):
        parser = vedirect.BlockParser()
        for block in vedirect.merge_pairs(parser.feed((fixtures / name).read_bytes())):
            out.append(vedirect.to_values(block))
    for vector in vectors["victron_advert"]:
        if isinstance(vector["expected"], dict):
            out.append(
                victron_advert.decode(bytes.fromhex(vector["mfr_data_after_company_id"]), bytes.fromhex(vector["key"]))
            )
    for family, names in FAMILIES.items():
        gatt: dict[str, Any] = {}
        for register in names:
            length = REGISTERS[register].lengths[0]
            message = vreg.parse_message(vreg.encode_value(register, bytes(length)))
            named = vreg.value_of(message, names)
            assert named is not None
            gatt[named[0]] = named[1]
        out.append((FAMILY_KINDS[family], gatt))
    for service, table in venus.PATHS.items():
        values = {}
        for path, (name, _convert) in table.items():
            decoded = venus.decode(f"N/p/{service}/0/{path}", b'{"value": 1}')
            assert decoded is not None
            values[name] = decoded[3]
        out.append((venus.KINDS[service], venus.finish(venus.KINDS[service], values)))
    from sunbox.model import Health

    health = Health("dev", connected=True, last_reading_ms=NOW, rssi=-70, poll_latency_ms=2.5, last_error="x")
    out.append(("health", health.snapshot(NOW).values))
    return out


def test_every_decoder_output_is_storable(vectors: dict[str, Any]) -> None:
    """The contract between the decoders and the raw-bucket schema: every value a decoder
    produces passes the writer's validation (names, types)."""
    outputs = _every_decoder_output(vectors)
    assert len(outputs) > 600
    for kind, values in outputs:
        body = json.dumps({"device_id": "dev", "kind": kind, "time_ms": NOW, **values}).encode()
        topic = "sunbox/dev/health" if kind == "health" else "sunbox/dev/state"
        point = parse_message(topic, body, NOW)
        assert point.fields


def _event(**over: Any) -> bytes:
    alarm = {"rule": "soc-low", "device": "site1.bat1", "severity": "alarm", "text": "SOC below 10 %", "value": 9.5}
    body: dict[str, Any] = {"what": "raised", "time_ms": NOW - 1000, "alarm": alarm}
    for key, value in over.items():
        if key in alarm:
            alarm[key] = value
        else:
            body[key] = value
    return json.dumps(body).encode()


def test_an_alarm_event_becomes_a_point_of_the_events_bucket() -> None:
    point = points.parse_alarm_event(_event(), NOW)
    assert point.to_record() == {
        "measurement": "alarm",
        "tags": {"rule": "soc-low", "device": "site1.bat1", "severity": "alarm", "event": "raised"},
        "fields": {"text": "SOC below 10 %", "value": 9.5},
        "time": NOW - 1000,
    }
    # a stale rule's value is unknown until counted: no value field
    assert points.parse_alarm_event(_event(value=None, what="cleared"), NOW).to_record()["fields"] == {
        "text": "SOC below 10 %"
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "not JSON"),
        (b"[]", "no alarm object"),
        (_event(what="exploded"), "what must be one of"),
        (_event(time_ms=5), "before 2015"),
        (_event(time_ms="now"), "not an integer"),
        (_event(rule="Bad Rule"), "alarm.rule"),
        (_event(device="a/b"), "alarm.device"),
        (_event(severity="panic"), "alarm.severity"),
        (_event(text=7), "alarm.text"),
        (_event(value="high"), "alarm.value: expected a number"),
    ],
)
def test_a_malformed_alarm_event_is_refused_with_its_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(points.PayloadError, match=reason):
        points.parse_alarm_event(payload, NOW)
