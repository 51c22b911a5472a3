"""Issue 30: every Victron Instant Readout record decoded from Victron's document, checked on
victron-ble's own test vectors and on the issue's findings; no unknown code refuses an advert.

Fixtures: ``fixtures/victron_ble_vectors.json`` (victron-ble's tests at the commit it
names, values in Sunbox's names and units) and ``fixtures/devices.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbox.protocols import vedirect, victron_advert, victron_records
from sunbox.protocols.errors import FrameError

FIXTURES = Path(__file__).parent / "fixtures"
VBLE = json.loads((FIXTURES / "victron_ble_vectors.json").read_text())
VECTORS = VBLE["vectors"]
KINDS = {1: "charger", 2: "battery", 4: "dcdc", 5: "battery", 8: "charger", 9: "protect", 10: "battery"}
KINDS |= {11: "inverter", 12: "inverter", 13: "dc_meter"}


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(_same, actual, expected))
    if isinstance(expected, float) and isinstance(actual, int | float):
        return math.isclose(actual, expected, abs_tol=1e-6)
    return bool(actual == expected and type(actual) is type(expected))


def decode_vector(vector: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "advert" in vector:
        return victron_advert.decode(bytes.fromhex(vector["advert"]), bytes.fromhex(vector["key"]))
    return victron_records.decode_record(vector["record_type"], bytes.fromhex(vector["decrypted"]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["source"].split("::")[1] for v in VECTORS])
def test_victron_ble_vectors(vector: dict[str, Any]) -> None:
    if vector["expected"] == "key mismatch":
        with pytest.raises(victron_advert.AdvertKeyError):
            decode_vector(vector)
        return
    kind, values = decode_vector(vector)
    assert kind == KINDS[vector["record_type"]]
    wrong = {k: (values.get(k, "absent"), v) for k, v in vector["expected"].items() if not _same(values.get(k), v)}
    assert not wrong, f"{vector['source']}: (got, expected) {wrong}"


def test_every_victron_ble_vector_is_imported() -> None:
    """The count the issue asks for: victron-ble's vectors of every record class it tests."""
    assert len(VECTORS) == 35
    assert {v["record_type"] for v in VECTORS} == set(KINDS)
    assert VBLE["source"]["commit"] == "c721522bee77fdf3b2cf304d5b9afc46e39bffe4"


# --- the findings, each on a real input -------------------------------------------


def _vector(test: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["source"].endswith(test))


def test_multi_rs_yield_is_wh_and_its_ac_and_pv_values_are_published() -> None:
    _kind, values = decode_vector(_vector("TestMultiRS.test_end_to_end_parse"))
    assert values["yield_today"] == pytest.approx(5320.0)  # victron-ble: 5.32 (kWh)
    assert values["ac_out_power"] == 722.0 and values["ac_in_power"] == 0.0 and values["pv_power"] == 0.0
    assert values["ac_in_state"] == "not_connected"


def test_smart_battery_protect_publishes_alarm_warning_error_and_output_state() -> None:
    kind, values = decode_vector(_vector("TestSmartBatteryProtect.test_parse"))
    assert kind == "protect"
    assert (values["alarm_bits"], values["warning_bits"], values["error_code"]) == (0, 0, 0)
    assert values["output_state"] == "on" and values["output_state_code"] == 1
    assert values["input_voltage"] == pytest.approx(13.07) and values["output_voltage"] == pytest.approx(13.07)


def test_lynx_consumed_ah_is_drawn_and_not_negative() -> None:
    _kind, values = decode_vector(_vector("TestLynxSmartBMS.test_parse"))
    assert values["consumed_ah"] == pytest.approx(4.4)  # Sunbox used to publish -4.4
    assert values["alarm_bits"] == 5205 and values["power"] == pytest.approx(26.99 * -0.6)


def test_ac_charger_current_is_the_ac_input_current() -> None:
    vector = _vector("TestAcCharger.test_end_to_end_parse")
    payload = bytearray.fromhex("060046a500ffffffffffffbdffeb3d1f")
    # the same captured record with an AC input current of 3.2 A (bits 127-135 = 32)
    payload[11] = (payload[11] & 0x7F) | ((32 & 1) << 7)
    payload[12] = 32 >> 1
    _kind, values = victron_records.decode_record(8, bytes(payload))
    assert values["ac_in_current"] == pytest.approx(3.2) and "ac_out_current" not in values
    _kind, real = decode_vector(vector)
    assert real["ac_in_current"] is None and "ac_out_current" not in real


def test_battery_monitor_aux_temperature_not_available_is_none() -> None:
    _kind, values = decode_vector(_vector("TestBatteryMonitor.test_aux_temperature"))
    assert values["battery_temperature"] is None  # 0xFFFF; Sunbox used to publish 382.2 °C


def _flip(advert: str, payload_byte: int, mask: int) -> bytes:
    """A captured advert with payload bits flipped: AES-CTR XORs a keystream, so flipping
    a ciphertext bit flips the same plaintext bit and leaves the rest as captured."""
    data = bytearray.fromhex(advert)
    data[victron_advert.HEADER + payload_byte] ^= mask
    return bytes(data)


def test_a_dcdc_advert_with_off_reason_0x81_is_published_not_dropped() -> None:
    vector = _vector("TestDcDcConverter.test_end_to_end_parse")
    key = bytes.fromhex(vector["key"])
    data = _flip(vector["advert"], 6, 0x01)  # off reason 0x80 -> 0x81 (byte 6 of the record)
    kind, values = victron_advert.decode(data, key)
    assert kind == "dcdc" and values["off_reason_bits"] == 0x81
    assert values["input_voltage"] == pytest.approx(13.15) and values["device_state"] == "off"


def test_an_unknown_charge_state_is_published_as_unknown_with_its_code() -> None:
    vector = _vector("TestSolarCharger.test_end_to_end_parse")
    data = _flip(vector["advert"], 0, 0x04 ^ 0x42)  # charge state 4 -> 0x42
    kind, values = victron_advert.decode(data, bytes.fromhex(vector["key"]))
    assert kind == "charger"
    assert values["charge_state"] == "unknown_66" and values["charge_state_code"] == 66
    assert values["battery_voltage"] == pytest.approx(13.88) and values["pv_power"] == 19.0


# --- every record the document specifies ---------------------------------------------------


def test_records_without_a_victron_ble_vector_follow_the_document() -> None:
    """Inverter RS, GX device, Inverter and the test record, from values laid out as the
    document's tables say (no public capture of them exists to our knowledge)."""

    def pack(fields: list[tuple[int, int, int]], size: int = 16) -> bytes:
        value = 0
        for start, width, raw in fields:
            value |= (raw & ((1 << width) - 1)) << (start - 32)
        return value.to_bytes(size, "little")

    rs = pack([(32, 8, 3), (40, 8, 0), (48, 16, 5123), (64, 16, -125), (80, 16, 812), (96, 16, 734), (112, 16, -640)])
    kind, values = victron_records.decode_record(0x06, rs)
    assert kind == "inverter" and values["device_state"] == "bulk"
    assert values["battery_voltage"] == pytest.approx(51.23) and values["battery_current"] == pytest.approx(-12.5)
    assert values["pv_power"] == 812.0 and values["yield_today"] == pytest.approx(7340.0)
    assert values["ac_out_power"] == -640.0
    gx = pack([(32, 16, 2655), (48, 20, 1450), (68, 7, 87), (75, 21, -320), (96, 21, 410)])
    kind, values = victron_records.decode_record(0x07, gx)
    assert kind == "system"
    assert values["battery_voltage"] == pytest.approx(26.55) and values["pv_power"] == 1450.0 and values["soc"] == 87.0
    assert values["battery_power"] == -320.0 and values["dc_power"] == 410.0
    inverter = pack([(32, 8, 9), (40, 16, 1), (56, 16, 1262), (72, 16, 450), (88, 15, 23010), (103, 11, 19)])
    kind, values = victron_records.decode_record(0x03, inverter)
    assert kind == "inverter" and values["device_state"] == "inverting" and values["alarm_bits"] == 1
    assert values["ac_out_voltage"] == pytest.approx(230.1) and values["ac_out_current"] == pytest.approx(1.9)
    kind, values = victron_records.decode_record(0x00, pack([(32, 30, 86400), (62, 7, 65)]))
    assert kind == "test" and values == {"uptime": 86400.0, "temperature": 25.0}


def test_a_short_record_leaves_out_what_it_does_not_hold() -> None:
    _kind, values = victron_records.decode_record(0x01, bytes.fromhex("04006c05"))
    assert values["battery_voltage"] == pytest.approx(13.88)
    assert values["battery_current"] is None and values["pv_power"] is None and values["load_current"] is None


def test_an_unknown_record_type_is_a_clear_error() -> None:
    vector = _vector("TestSolarCharger.test_end_to_end_parse")
    data = bytearray.fromhex(vector["advert"])
    data[4] = 0x0E
    with pytest.raises(FrameError, match="unknown Victron record type 0x0e"):
        victron_advert.decode(bytes(data), bytes.fromhex(vector["key"]))


@pytest.mark.parametrize("record_type", sorted(victron_records.LAYOUTS))
def test_no_byte_value_anywhere_refuses_a_record(record_type: int) -> None:
    """The issue's fuzzing, exhaustively: every value of every byte of a 20-byte record
    (so every value of every enum field) decodes; nothing raises, the kind stays."""
    base = bytes(range(20))
    kind = victron_records.RECORD_TYPES[record_type][0]
    for position in range(20):
        for value in range(256):
            payload = base[:position] + bytes([value]) + base[position + 1 :]
            assert victron_records.decode_record(record_type, payload)[0] == kind


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(victron_records.LAYOUTS)), st.binary(max_size=24))
def test_random_records_decode_to_numbers_or_none(record_type: int, payload: bytes) -> None:
    _kind, values = victron_records.decode_record(record_type, payload)
    for name, value in values.items():
        assert value is None or isinstance(value, int | float | str | list), name
        if isinstance(value, float):
            assert math.isfinite(value), name


# --- VE.Direct: a block identified by its PID ------------------------------------------------


def _block(text: bytes) -> dict[str, str]:
    checksum = (-sum(text + b"\r\nChecksum\t")) % 256
    blocks = vedirect.BlockParser().feed(text + b"\r\nChecksum\t" + bytes([checksum]))
    assert len(blocks) == 1
    return blocks[0]


def test_a_vedirect_block_without_kind_labels_is_identified_by_its_pid() -> None:
    """The captured BMV-702 block (``fixtures/vedirect_bvm702.dump``, karioja/vedirect) and
    BlueSolar block (``vedirect_bluesolar_1.23.dump``) without the labels that used to
    identify their kind, checksums recomputed: the PID names the product."""
    bmv = _block(b"\r\nPID\t0x204\r\nV\t12065\r\nI\t-7625\r\nP\t-92\r\nAlarm\tOFF\r\nRelay\tOFF\r\nAR\t0\r\nFW\t308")
    kind, values = vedirect.to_values(bmv)
    assert kind == "battery" and values["voltage"] == pytest.approx(12.065) and values["model"] == "BMV-702"
    mppt = _block(b"\r\nPID\t0xA042\r\nFW\t123\r\nSER#\tHQ1411MYIKN\r\nV\t12530\r\nI\t620\r\nCS\t3\r\nERR\t0")
    kind, values = vedirect.to_values(mppt)
    assert kind == "charger" and values["charge_state"] == "bulk" and values["battery_voltage"] == pytest.approx(12.53)
    unknown = _block(b"\r\nPID\t0xFFF0\r\nV\t12530")
    with pytest.raises(FrameError, match="PID 0xFFF0"):
        vedirect.to_values(unknown)
