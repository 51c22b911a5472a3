"""Victron VREG registers: every register in the table decodes to its value, never to bytes.

Fixtures: ``fixtures/vreg_replies.json`` (real VictronConnect GATT replies from a
SmartSolar, a Phoenix inverter, a SmartShunt and an Orion DC-DC, each with its source).
No public capture of a Multi/Quattro or an AC charger over this protocol was found;
their registers are checked with values encoded from ``ve_regs.h``'s types below.
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

from sunbox.drivers import DRIVERS, driver_for_advert
from sunbox.protocols import vreg
from sunbox.protocols.errors import FrameError
from sunbox.protocols.vreg_registers import FAMILIES, FAMILY_KINDS, REGISTERS, decode_unknown
from sunbox.storage.points import FLAG_FIELDS, LAST_FIELDS, TEXT_FIELDS

_DATA = json.loads((Path(__file__).parent / "fixtures" / "vreg_replies.json").read_text())
_DOC = (Path(__file__).resolve().parents[2] / "docs" / "data-model.md").read_text()


@pytest.mark.parametrize("reply", _DATA["replies"], ids=lambda r: f"{r['family']}-{r['name']}")
def test_public_replies_decode_to_their_values(reply: dict[str, Any]) -> None:
    message = vreg.parse_message(bytes.fromhex(reply["hex"]))
    assert vreg.value_of(message, FAMILIES[reply["family"]]) == (reply["name"], pytest.approx(reply["value"]))


@pytest.mark.parametrize("stream", _DATA["streams"], ids=lambda s: s["family"])
def test_captured_notification_streams_reassemble_to_their_values(stream: dict[str, Any]) -> None:
    assembler = vreg.VregAssembler()
    values = []
    for notification in stream["notifications"]:
        for message in assembler.feed(bytes.fromhex(notification)):
            named = vreg.value_of(message)
            assert named is not None
            values.append([named[0], named[1]])
    assert values == [[name, pytest.approx(value)] for name, value in stream["values"]]
    assert assembler.skipped == 0


def test_every_family_names_only_known_registers_and_documented_names() -> None:
    for family, names in FAMILIES.items():
        assert FAMILY_KINDS[family] in ("charger", "inverter", "battery", "dcdc")
        for register, name in names.items():
            assert register in REGISTERS, f"{family}: 0x{register:04X}"
            assert f"`{name}`" in _DOC, f"{name} ({family}) is not in docs/data-model.md"
            assert name not in TEXT_FIELDS
    for register in REGISTERS.values():
        assert f"`{register.name}`" in _DOC, f"{register.name} is not in docs/data-model.md"
        if register.bits:
            assert register.name in FLAG_FIELDS, f"{register.name} is a bitmask: the tiers must OR it"


def test_codes_and_counters_are_kept_as_last_values_by_the_tiers() -> None:
    for register in REGISTERS.values():
        if register.name.endswith(("_code", "_mode", "_active")) or register.name in ("cycles", "uptime"):
            assert register.name in LAST_FIELDS, register.name


@pytest.mark.parametrize(
    ("register", "raw", "expected"),
    [
        # Multi/Quattro: active AC input L1 (sn16 0.01 V, sn16 0.01 A, sn32 W, un16 0.01 Hz)
        (0x0233, (23012).to_bytes(2, "little", signed=True), 230.12),
        (0x0234, (-150).to_bytes(2, "little", signed=True), -1.5),
        (0x0236, (-350).to_bytes(4, "little", signed=True), -350),
        (0x0237, (4998).to_bytes(2, "little"), 49.98),
        (0x0203, (160).to_bytes(2, "little"), 16.0),
        # AC charger: charger voltage/current/power
        (0xEDD5, (1440).to_bytes(2, "little"), 14.4),
        (0xEDD7, (150).to_bytes(2, "little", signed=True), 15.0),
        (0xEDD6, (216).to_bytes(2, "little"), 216),
        # battery monitor: TTG in minutes -> s, consumed Ah negative in Victron's sign -> >= 0
        (0x0FFE, (125).to_bytes(2, "little"), 7500.0),
        (0x0FFC, (-123).to_bytes(4, "little", signed=True), 12.3),
        (0x0300, (-1500).to_bytes(4, "little", signed=True), 150.0),
        (0x0310, (1234).to_bytes(4, "little"), 12340.0),
        # solar: yields in 0.01 kWh -> Wh, as un16 (VE.Direct MPPTs) or un32 (VE.Can MPPTs)
        (0xEDD3, (42).to_bytes(2, "little"), 420.0),
        (0xEDD3, (70_000).to_bytes(4, "little"), 700_000.0),
        (0xEDEC, (29815).to_bytes(2, "little"), 25.0),
        # inverter
        (0x2200, bytes.fromhex("dc59"), 230.04),
        (0x2208, (5000).to_bytes(2, "little"), 50.0),
        (0x031E, (0x0021).to_bytes(2, "little"), 0x21),
        (0x0207, (0x00000101).to_bytes(4, "little"), 0x101),
    ],
)
def test_register_types_and_scales(register: int, raw: bytes, expected: float) -> None:
    message = vreg.parse_message(vreg.encode_value(register, raw))
    name, value = vreg.value_of(message) or ("", None)
    assert name == REGISTERS[register].name
    assert value == pytest.approx(expected)


def test_not_available_is_none_for_every_register_that_has_it() -> None:
    for register in REGISTERS.values():
        if not register.has_not_available:
            continue
        for length in register.lengths:
            raw = register.not_available(length).to_bytes(length, "little", signed=register.signed)
            assert register.decode(raw) is None, register.label


def test_a_wrong_length_is_a_frame_error_naming_the_register() -> None:
    with pytest.raises(FrameError, match="VE_REG_AC_OUT_VOLTAGE"):
        REGISTERS[0x2200].decode(b"\x01")
    with pytest.raises(FrameError, match="expected a byte string"):
        vreg.value_of(vreg.Message(vreg.VALUE, 3, 0x2200, 5))


def test_an_unknown_register_decodes_to_an_integer_next_to_its_bytes() -> None:
    # 0xEC66 (the product's MAC, not in Sunbox's table) as a device would send it
    message = vreg.parse_message(vreg.encode_value(0xEC66, bytes.fromhex("0102030405a6")))
    assert vreg.value_of(message) is None
    described = vreg.describe(message)
    assert described["raw"] == "0102030405a6"
    assert described["value"] == decode_unknown(bytes.fromhex("0102030405a6")) == 0xA60504030201
    known = vreg.describe(vreg.parse_message(bytes.fromhex("080319220042dc59")))
    assert known["register"] == "VE_REG_AC_OUT_VOLTAGE"
    assert (known["name"], known["value"], known["unit"]) == ("ac_out_voltage", 230.04, "V")


def test_cli_prints_an_inverter_reply_in_volts_and_an_unknown_one_as_an_integer() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sunbox.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)

    out = run("decode", "vreg", "080319220042dc59")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ac_out_voltage"] == 230.04
    unknown = run("decode", "vreg", "080319ec664401020304")
    assert unknown.returncode == 0, unknown.stderr
    assert json.loads(unknown.stdout)["value"] == 0x04030201


def test_a_phoenix_advert_picks_the_phoenix_driver_and_a_smartsolar_the_smartsolar() -> None:
    uuids = [vreg.SERVICE]
    assert driver_for_advert("Phoenix Inverter 12V 375VA", uuids) == "phoenix"
    assert driver_for_advert("SmartSolar HQ2242", uuids) == "smartsolar"
    assert driver_for_advert(None, uuids) == "smartsolar"
    assert DRIVERS["phoenix"].kind == "inverter"


@settings(max_examples=200)
@given(st.data())
def test_any_payload_of_a_known_register_decodes_to_a_number_or_none_or_a_frame_error(data: st.DataObject) -> None:
    register = data.draw(st.sampled_from(sorted(REGISTERS)))
    raw = data.draw(st.binary(max_size=6))
    try:
        value = REGISTERS[register].decode(raw)
    except FrameError:
        assert len(raw) not in REGISTERS[register].lengths
        return
    assert len(raw) in REGISTERS[register].lengths
    assert value is None or (isinstance(value, int | float) and math.isfinite(value))


@settings(max_examples=200)
@given(vregs=st.lists(st.sampled_from(sorted(REGISTERS)), min_size=1, max_size=6), data=st.data())
def test_streams_of_known_registers_split_anywhere_decode_every_value(vregs: list[int], data: st.DataObject) -> None:
    stream = b"".join(
        vreg.encode_value(v, data.draw(st.binary(min_size=REGISTERS[v].lengths[0], max_size=REGISTERS[v].lengths[0])))
        for v in vregs
    )
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=5, unique=True)))
    assembler = vreg.VregAssembler()
    decoded = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        for message in assembler.feed(stream[a:b]):
            named = vreg.value_of(message)
            assert named is not None
            decoded.append(message.vreg)
    assert decoded == vregs
