"""Victron decoders on real captures: Instant Readout adverts, VREG messages, VE.Direct.

Fixtures: ``fixtures/devices.json`` (``victron_advert``, ``victron_vreg_gatt``,
``vedirect_hex``) and the two VE.Direct dumps (sources in ``fixtures/README.md``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbox.protocols import vedirect, victron_advert, vreg
from sunbox.protocols.errors import FrameError

FIXTURES = Path(__file__).parent / "fixtures"
BLUESOLAR = (FIXTURES / "vedirect_bluesolar_1.23.dump").read_bytes()
BMV = (FIXTURES / "vedirect_bvm702.dump").read_bytes()
_DATA = json.loads((FIXTURES / "devices.json").read_text())
ADVERTS = [v for v in _DATA["victron_advert"] if isinstance(v["expected"], dict)]


def blocks_of(data: bytes, chunk: int = 13) -> tuple[list[vedirect.Block], vedirect.ParserStats]:
    parser = vedirect.BlockParser()
    blocks: list[vedirect.Block] = []
    for i in range(0, len(data), chunk):
        blocks += parser.feed(data[i : i + chunk])
    return blocks, parser.stats


# --- Instant Readout -----------------------------------------------------------------


def test_solar_charger_advert() -> None:
    vector = ADVERTS[0]
    kind, values = victron_advert.decode(
        bytes.fromhex(vector["mfr_data_after_company_id"]), bytes.fromhex(vector["key"])
    )
    assert kind == "charger"
    assert values["charge_state"] == "absorption" and values["charge_state_code"] == 4
    assert values["battery_voltage"] == pytest.approx(13.88)
    assert values["battery_current"] == pytest.approx(1.4)
    assert values["yield_today"] == pytest.approx(30.0)
    assert values["pv_power"] == pytest.approx(19.0)
    assert values["load_current"] == pytest.approx(0.0)
    assert values["error_code"] == 0
    assert values["model"] == "BlueSolar Charger MPPT 75/15" and values["product_id"] == "0xA042"


def test_battery_monitor_advert() -> None:
    vector = ADVERTS[1]
    kind, values = victron_advert.decode(
        bytes.fromhex(vector["mfr_data_after_company_id"]), bytes.fromhex(vector["key"])
    )
    assert kind == "battery"
    assert values["voltage"] == pytest.approx(12.53)
    assert values["current"] == pytest.approx(0.0)
    assert values["soc"] == pytest.approx(50.0)
    assert values["consumed_ah"] == pytest.approx(50.0)  # 50 Ah drawn (victron-ble: -50.0)
    assert values["time_to_go"] is None
    assert values["alarm_bits"] == 0
    assert values["starter_voltage"] is None and values["midpoint_voltage"] is None  # aux mode "none"
    assert values["model"] == "SmartShunt 500A/50mV"


def test_wrong_key_is_a_clear_error() -> None:
    vector = next(v for v in _DATA["victron_advert"] if "Mismatch" in str(v["expected"]))
    with pytest.raises(victron_advert.AdvertKeyError, match="0xaf does not match"):
        victron_advert.decode(bytes.fromhex(vector["mfr_data_after_company_id"]), bytes.fromhex(vector["key"]))


def test_advert_header_checks() -> None:
    good = bytes.fromhex(ADVERTS[0]["mfr_data_after_company_id"])
    key = bytes.fromhex(ADVERTS[0]["key"])
    with pytest.raises(FrameError, match="too short"):
        victron_advert.decode(good[:5], key)
    with pytest.raises(FrameError, match="not a Victron product advertisement"):
        victron_advert.decode(b"\x11" + good[1:], key)
    with pytest.raises(FrameError, match="16 bytes"):
        victron_advert.decode(good, key[:8])


@settings(max_examples=300)
@given(st.binary(max_size=40), st.binary(min_size=16, max_size=16))
def test_random_adverts_never_crash(data: bytes, key: bytes) -> None:
    try:
        victron_advert.decode(b"\x10" + data, key)
    except FrameError:
        pass


# --- VREG (SmartSolar GATT) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "name", "value"),
    [(0, "pv_power", 3.86), (2, "battery_voltage", 13.33)],
)
def test_vreg_values(index: int, name: str, value: float) -> None:
    message = vreg.parse_message(bytes.fromhex(_DATA["victron_vreg_gatt"][index]["hex"]))
    assert vreg.value_of(message) == (name, pytest.approx(value))


def test_vreg_fragment_is_reassembled_across_notifications() -> None:
    assembler = vreg.VregAssembler()
    assert assembler.feed(bytes.fromhex("0803")) == []  # the prefix came in the previous notification
    messages = assembler.feed(bytes.fromhex(_DATA["victron_vreg_gatt"][1]["hex"]))
    assert [vreg.value_of(m) for m in messages] == [("pv_voltage", pytest.approx(36.83))]
    assert assembler.skipped == 0


def test_keep_alive_is_the_captured_frame() -> None:
    assert vreg.keep_alive(10_000).hex() == _DATA["victron_vreg_gatt"][3]["hex"]
    message = vreg.parse_message(vreg.keep_alive())
    assert (message.kind, message.vreg, message.value) == (vreg.SET, vreg.KEEP_ALIVE, (10_000).to_bytes(2, "little"))


def test_vreg_errors() -> None:
    with pytest.raises(FrameError, match="truncated"):
        vreg.parse_message(bytes.fromhex("080319edbc4482"))
    with pytest.raises(FrameError, match="not a VictronConnect message"):
        vreg.parse_message(bytes.fromhex("ff0319edbc"))
    with pytest.raises(FrameError, match="expected 4 bytes"):
        vreg.value_of(vreg.parse_message(bytes.fromhex("080319edbc428201")))
    na = vreg.parse_message(vreg.encode_value(0xEDBB, b"\xff\xff"))
    assert vreg.value_of(na) == ("pv_voltage", None)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=12), max_size=8))
def test_random_notifications_never_crash(chunks: list[bytes]) -> None:
    assembler = vreg.VregAssembler()
    for chunk in chunks:
        for message in assembler.feed(chunk):
            try:
                vreg.value_of(message)
            except FrameError:
                pass


# --- VE.Direct -------------------------------------------------------------------------


def test_bluesolar_capture() -> None:
    blocks, stats = blocks_of(BLUESOLAR)
    # 7 HEX frames are interleaved; skipping them makes every block verify
    assert (stats.blocks, stats.bad_checksums, stats.hex_frames) == (248, 0, 7)
    kind, values = vedirect.to_values(blocks[0])
    assert kind == "charger"
    assert values["battery_voltage"] == pytest.approx(12.53)
    assert values["battery_current"] == pytest.approx(0.62)
    assert values["pv_voltage"] == pytest.approx(33.58)
    assert values["pv_power"] == 8.0
    assert values["charge_state"] == "bulk" and values["charge_state_code"] == 3
    assert values["load_on"] is True
    assert values["yield_total"] == pytest.approx(82720.0)
    assert values["yield_yesterday"] == pytest.approx(250.0)
    assert values["max_charge_power_yesterday"] == 119.0
    assert values["model"] == "BlueSolar Charger MPPT 75/15" and values["serial"] == "HQ1411MYIKN"


def test_bmv_capture_and_merge() -> None:
    blocks, stats = blocks_of(BMV, chunk=64)
    assert (stats.blocks, stats.bad_checksums) == (906, 0)
    merged = list(vedirect.merge_pairs(blocks))
    assert len(merged) == 453
    kind, values = vedirect.to_values(merged[0])
    assert kind == "battery"
    assert values["voltage"] == pytest.approx(12.065)
    assert values["current"] == pytest.approx(-7.625)
    assert values["power"] == -92.0
    assert values["consumed_ah"] == pytest.approx(65.473)
    assert values["soc"] == pytest.approx(83.9)
    assert values["time_to_go"] == 942 * 60.0
    assert values["discharged_energy"] == pytest.approx(68430.0)
    assert values["charged_energy"] == pytest.approx(85270.0)
    assert values["deepest_discharge_ah"] == pytest.approx(149.322)


def test_a_corrupted_block_is_dropped_and_counted() -> None:
    data = bytearray(BLUESOLAR)
    where = data.index(b"VPV\t", 500)
    data[where + 4] ^= 0x01  # one digit of the PV voltage
    blocks, stats = blocks_of(bytes(data))
    assert stats.bad_checksums == 1 and stats.blocks == 247
    assert all(b.get("VPV") for b in blocks)


def test_hex_frame_checksums() -> None:
    for vector in _DATA["vedirect_hex"]:
        assert vedirect.hex_frame_ok(vector["frame"])
        assert not vedirect.hex_frame_ok(vector["frame"][:-2] + "00")


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_garbage_never_crashes_the_parser(data: bytes, chunk: int) -> None:
    blocks, _ = blocks_of(data, chunk)
    for block in blocks:  # only a valid checksum gets through; values may still be refused
        try:
            vedirect.to_values(block)
        except FrameError:
            pass


@given(st.data())
def test_truncation_and_bit_flips_never_yield_a_wrong_block(data: st.DataObject) -> None:
    reference, _ = blocks_of(BLUESOLAR[:2000])
    mangled = bytearray(BLUESOLAR[:2000])
    index = data.draw(st.integers(min_value=0, max_value=len(mangled) - 1))
    mangled[index] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    blocks, _ = blocks_of(bytes(mangled))
    assert all(block in reference for block in blocks)


# --- CLI ---------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sunbox.cli", *args], capture_output=True, text=True, check=False)


def test_cli_decode_victron() -> None:
    advert = run("decode", "victron-advert", ADVERTS[0]["mfr_data_after_company_id"], "--key", ADVERTS[0]["key"])
    assert advert.returncode == 0 and json.loads(advert.stdout)["battery_voltage"] == 13.88
    wrong = run("decode", "victron-advert", ADVERTS[0]["mfr_data_after_company_id"], "--key", "ff" * 16)
    assert wrong.returncode == 1 and "does not match" in wrong.stderr
    message = run("decode", "vreg", "080319edbb42630e")
    assert message.returncode == 0 and json.loads(message.stdout)["pv_voltage"] == 36.83
    assert run("decode", "vreg", "0803").returncode == 1
    merged = run("decode", "vedirect", str(FIXTURES / "vedirect_bvm702.dump"), "--merge")
    lines: list[dict[str, Any]] = [json.loads(line) for line in merged.stdout.splitlines()]
    assert merged.returncode == 0 and len(lines) == 453 and "charged_energy" in lines[0]
    assert "906 valid blocks" in merged.stderr
    split = run("decode", "vedirect", "-")
    assert split.returncode == 1  # nothing on stdin


VENUS_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
VENUS_TOPICS = ["N/p/battery/1/Soc", "N/p/solarcharger/2/State", "N/p/vebus/3/Ac/Out/P", "N/p/system/0/Dc/Pv/Power"]


@settings(max_examples=300)
@given(
    st.sampled_from(VENUS_TOPICS),
    st.binary(max_size=40) | VENUS_SCALARS.map(lambda v: json.dumps({"value": v}).encode()),
)
def test_venus_payloads_never_crash(topic: str, payload: bytes) -> None:
    from sunbox.protocols import venus

    try:
        decoded = venus.decode(topic, payload)
    except FrameError:
        return
    assert decoded is not None
    value = decoded[3]
    assert value is None or isinstance(value, int | float | bool)
    if isinstance(value, float):
        assert math.isfinite(value)
