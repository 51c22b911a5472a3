"""JBD decoder on real-world edge cases: absent NTCs, 0 V and impossible cells, packs above 655 Ah.

Every frame here is an **edited copy of a real capture** (``fixtures/devices.json``,
syssi/esphome-jbd-bms ``docs/pdus/JBD-SP04S034-L4S-200A-B-U.txt`` and
``docs/pdus/JBD-DP04S007L4S100A-BLE.txt``): the named data bytes are changed and the
checksum is recomputed with :func:`sunbox.protocols.jbd.encode_response`, so each case
differs from a real frame in exactly the bytes the test names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbox.drivers.jbd import cell_statistics
from sunbox.protocols import jbd
from sunbox.protocols.errors import FrameError
from sunbox.storage.points import parse_message

#: SP04S034 0x03: 15.60 V, 0 A, 4.98/5.00 Ah, 4 cells, 3 NTCs (22.4/22.3/21.7 degC).
SP04S034_BASIC = "dd03001d0618000001f201f400002c7c00000000000080640304030b8b0b8a0b84fa8d77"
#: SP04S034 0x04: 3.909, 3.901, 3.895, 3.901 V.
SP04S034_CELLS = "dd0400080f450f3d0f370f3dfec677"
#: DP04S007 0x03 with the 9-byte V11 extension after its one NTC (byte 25 of data = 0x00).
DP04S007_BASIC = "dd030022055f00004adf4e2000022d1400000000000023600304010bb10000004e204adf0000fac277"


def edited(frame_hex: str, offset: int, new: bytes) -> bytes:
    """The real frame with its data bytes ``offset..`` replaced by ``new``, checksum redone."""
    response = jbd.parse_frame(bytes.fromhex(frame_hex))
    data = bytearray(response.data)
    data[offset : offset + len(new)] = new
    return jbd.encode_response(response.register, bytes(data))


def test_the_unedited_captures_still_decode_as_before() -> None:
    values = jbd.decode(bytes.fromhex(SP04S034_BASIC))
    assert values["temperatures"] == [22.4, 22.3, 21.7]
    assert jbd.decode(bytes.fromhex(SP04S034_CELLS))["cell_voltages"] == [3.909, 3.901, 3.895, 3.901]


def test_an_ntc_reading_raw_zero_is_absent_not_minus_273() -> None:
    # NTC 2 (data offset 25) set to 0x0000: no NTC fitted, or a broken one.
    values = jbd.decode(edited(SP04S034_BASIC, 25, b"\x00\x00"))
    assert values["temperatures"] == [22.4, None, 21.7]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (2731 - 600, -60.0),  # the coldest plausible reading is kept
        (2731 - 601, None),
        (2731 + 1500, 150.0),  # the hottest plausible reading is kept
        (2731 + 1501, None),
        (0xFFFF, None),  # 6280.4 degC: an open input on some boards
    ],
)
def test_temperatures_outside_the_plausible_range_are_absent(raw: int, expected: float | None) -> None:
    values = jbd.decode(edited(SP04S034_BASIC, 23, raw.to_bytes(2, "big")))
    assert values["temperatures"][0] == expected


def test_a_cell_at_0_mv_is_a_fault_that_counts_in_min_and_spread() -> None:
    # Cell 3 (data offset 4) set to 0 mV. The BMS reports only its configured cells, so
    # this is a broken sense lead or a dead cell (issue 32; fl4p/batmon-ha keeps it too)
    cells = jbd.decode(edited(SP04S034_CELLS, 4, b"\x00\x00"))["cell_voltages"]
    assert cells == [3.909, 3.901, 0.0, 3.901]
    assert cell_statistics(cells) == {
        "cell_voltage_min": 0.0,
        "cell_voltage_max": 3.909,
        "cell_voltage_delta": 3.909,
    }


def test_a_cell_voltage_that_cannot_be_true_is_absent() -> None:
    # 0xFFFF = 65.5 V from one cell: nothing lithium shows that
    cells = jbd.decode(edited(SP04S034_CELLS, 4, b"\xff\xff"))["cell_voltages"]
    assert cells == [3.909, 3.901, None, 3.901]
    assert cell_statistics(cells)["cell_voltage_min"] == 3.901


def test_no_cell_present_gives_no_statistics() -> None:
    cells = jbd.decode(edited(SP04S034_CELLS, 0, b"\xff\xff" * 4))["cell_voltages"]
    assert cells == [None, None, None, None]
    assert cell_statistics(cells) == {"cell_voltage_min": None, "cell_voltage_max": None, "cell_voltage_delta": None}


def test_absent_slots_are_not_written_to_influxdb() -> None:
    values: dict[str, Any] = jbd.decode(edited(SP04S034_BASIC, 25, b"\x00\x00"))
    values.update(cell_voltages=jbd.decode(edited(SP04S034_CELLS, 4, b"\xff\xff"))["cell_voltages"])
    payload = {"device_id": "bank1", "kind": "battery", "time_ms": 1_750_000_000_000, **values}
    point = parse_message("sunbox/bank1/state", json.dumps(payload).encode(), now_ms=1_750_000_000_000)
    fields = point.fields
    assert "temperature_02" not in fields and fields["temperature_01"] == 22.4
    assert "cell_voltage_03" not in fields and fields["cell_voltage_04"] == 3.901


def test_nominal_capacity_with_a_fraction_stays_exact() -> None:
    # The SP04S034 capture itself: 0x01F4 = 500 x 10 mAh, 0x01F2 = 498 x 10 mAh.
    values = jbd.decode(bytes.fromhex(SP04S034_BASIC))
    assert values["capacity_nominal"] == 5.0
    assert values["capacity_remaining"] == 4.98


def test_v11_humidity_byte_zero_keeps_base_units() -> None:
    values = jbd.decode(bytes.fromhex(DP04S007_BASIC))
    assert values["humidity"] == 0.0
    assert values["capacity_nominal"] == 200.0 and values["capacity_remaining"] == 191.67


def test_high_capacity_flag_reads_current_and_capacity_in_100_ma_units() -> None:
    # DP04S007 with the byte after its NTC (data offset 25) = 0x80 and, so that the
    # capacities need the flag, nominal 0x2EE0 (12000 -> 1200 Ah), remaining 0x2328
    # (9000 -> 900 Ah) and current 0xFF38 (-200 -> -20.0 A).
    frame = edited(DP04S007_BASIC, 25, b"\x80")
    frame = edited(frame.hex(), 2, b"\xff\x38\x23\x28\x2e\xe0")
    values = jbd.decode(frame)
    assert values["capacity_nominal"] == 1200.0
    assert values["capacity_remaining"] == 900.0
    assert values["current"] == -20.0
    assert values["power"] == pytest.approx(13.75 * -20.0)
    assert values["humidity"] is None  # the flag byte is not a humidity


def test_a_humidity_above_100_percent_is_absent() -> None:
    values = jbd.decode(edited(DP04S007_BASIC, 25, bytes((101,))))
    assert values["humidity"] is None
    assert values["capacity_nominal"] == 200.0  # bit 7 clear: base units


def test_a_trailing_byte_is_refused_by_decode_and_counted_by_the_assembler() -> None:
    frame = bytes.fromhex(SP04S034_BASIC)
    with pytest.raises(FrameError, match="trailing"):
        jbd.decode(frame + b"\x00")
    assembler = jbd.FrameAssembler()
    assert assembler.feed(frame + b"\x00") == [frame]
    assert assembler.skipped_bytes == 1
    assert jbd.decode(frame)["voltage"] == 15.6


def _published_numbers(values: dict[str, Any], name: str) -> list[float]:
    return [v for v in values.get(name, []) if v is not None]


@settings(max_examples=300)
@given(ntc=st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=8), ext=st.binary(max_size=12))
def test_no_decoded_temperature_is_outside_minus_60_to_150(ntc: list[int], ext: bytes) -> None:
    head = jbd.parse_frame(bytes.fromhex(SP04S034_BASIC)).data[:22]
    data = head + bytes((len(ntc),)) + b"".join(t.to_bytes(2, "big") for t in ntc) + ext
    values = jbd.decode(jbd.encode_response(jbd.REG_BASIC_INFO, data))
    assert len(values["temperatures"]) == len(ntc)
    assert all(-60.0 <= t <= 150.0 for t in _published_numbers(values, "temperatures"))
    humidity = values.get("humidity")
    assert humidity is None or 0 <= humidity <= 100


@settings(max_examples=300)
@given(cells=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=32))
def test_no_decoded_cell_voltage_is_outside_zero_to_five_volts(cells: list[int]) -> None:
    data = b"".join(c.to_bytes(2, "big") for c in cells)
    decoded = jbd.decode(jbd.encode_response(jbd.REG_CELL_VOLTAGES, data))["cell_voltages"]
    assert len(decoded) == len(cells)
    assert all(0.0 <= v <= 5.0 for v in decoded if v is not None)
    # only what cannot be true is dropped: every cell at or under 5 V is kept, 0 V included
    assert [v is None for v in decoded] == [c > 5000 for c in cells]
    stats = cell_statistics(decoded)
    if stats["cell_voltage_min"] is not None:
        assert 0.0 <= stats["cell_voltage_min"] <= stats["cell_voltage_max"] <= 5.0
