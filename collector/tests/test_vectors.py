"""Every captured JBD and LiTime frame decodes to its expected values."""

from __future__ import annotations

from typing import Any

import pytest

from sunbox.protocols import jbd, litime
from sunbox.protocols.errors import DeviceErrorReply


def test_jbd_frames(vectors: dict[str, Any]) -> None:
    checked = 0
    for vector in vectors["jbd"]:
        values = jbd.decode(bytes.fromhex(vector["hex"]))
        expected = vector["expected"]
        if vector["function"] == 3:
            assert values["voltage"] == pytest.approx(expected["V"])
            assert values["current"] == pytest.approx(expected["I"])
            assert values["capacity_remaining"] == pytest.approx(expected["remain_Ah"])
            assert values["capacity_nominal"] == pytest.approx(expected["nominal_Ah"])
            assert values["cycles"] == expected["cycles"]
            assert values["production_date"] == expected["date"]
            assert values["balance_bits"] == int(expected["bal"], 16)
            assert values["protection_bits"] == int(expected["prot"], 16)
            assert values["soc"] == expected["soc"]
            fet = int(expected["fet"], 16)
            assert values["charge_fet_on"] == bool(fet & 1)
            assert values["discharge_fet_on"] == bool(fet & 2)
            assert values["cell_count"] == expected["cells"]
            assert values["temperatures"] == pytest.approx(expected["temps"])
            assert values["power"] == pytest.approx(expected["V"] * expected["I"], abs=0.01)
            if "ext" in expected:
                assert values["humidity"] == 0 and values["alarm_bits"] == 0 and values["balance_current"] == 0
        elif vector["function"] == 4:
            assert values["cell_voltages"] == pytest.approx(expected)
        else:
            assert values["model"] == expected
        checked += 1
    assert checked == len(vectors["jbd"]) == 7


def test_jbd_requests_match_the_documented_bytes() -> None:
    assert jbd.read_request(0x03).hex() == "dda50300fffd77"
    assert jbd.read_request(0x04).hex() == "dda50400fffc77"
    assert jbd.read_request(0x05).hex() == "dda50500fffb77"
    assert jbd.ffaa_frame(jbd.FFAA_APP_KEY, jbd.APP_KEY).hex() == "ffaa1506303030303030" + "3b"


def test_jbd_auth_frames(vectors: dict[str, Any]) -> None:
    for vector in vectors["jbd_auth"]:
        mac = jbd.mac_bytes(vector["mac"])
        if vector["cmd"] == jbd.FFAA_USER_PASSWORD:
            frame = jbd.user_password_frame(mac, vector["plaintext"].encode(), vector["random"])
        else:
            frame = jbd.root_password_frame(mac, vector["random"])
        assert frame.hex() == vector["frame"], vector["source"]
        _command, data = jbd.parse_ffaa(frame)
        assert jbd.deobfuscate_password(mac, data, vector["random"]) == vector["plaintext"].encode()


def test_litime_frames(vectors: dict[str, Any]) -> None:
    for vector in vectors["litime_mppt"]:
        assert litime.read_request(litime.STATUS_START, litime.STATUS_COUNT).hex() == vector["request"]
        values = litime.decode(bytes.fromhex(vector["hex"]))
        raw = vector["raw_fields"]
        assert values["soc"] == raw["soc"]
        assert values["battery_voltage"] == pytest.approx(raw["battV_x10"] / 10)
        assert values["battery_current"] == pytest.approx(raw["battI_x100"] / 100)
        assert values["charge_power"] == raw["battP_W"]
        assert values["controller_temperature"] == raw["ctrlT_C"]
        assert values["battery_temperature"] is None  # 0xFF: no sensor
        assert values["load_voltage"] == pytest.approx(raw["loadV_x10"] / 10)
        assert values["load_current"] == pytest.approx(raw["loadI_x100"] / 100)
        assert values["load_power"] == raw["loadP_W"]
        assert values["pv_voltage"] == pytest.approx(raw["pvV_x10"] / 10)
        assert values["max_charge_power_today"] == raw["maxChgP_today_W"]
        assert values["yield_today"] == raw["chg_today_Wh"]
        assert values["consumed_today"] == raw["dis_today_Wh"]
        assert values["load_on"] == bool(raw["load_status"] & 0x80)
        assert values["charge_state_code"] == raw["charge_status"]
        assert values["charge_state"] == "absorption"
        assert values["alarm_bits"] == raw["alarm"]
        assert values["days_running"] == raw["days"]
        assert values["yield_total"] == raw["total_chg_Wh"]
        assert values["consumed_total"] == raw["total_dis_Wh"]


def test_litime_commands_from_the_protocol_notes() -> None:
    assert litime.write_single_request(litime.LOAD_REGISTER, 1).hex() == "010601200001483c"
    assert litime.write_single_request(litime.LOAD_REGISTER, 0).hex() == "01060120000089fc"


def test_litime_exception_reply_is_an_error() -> None:
    frame = litime.exception_response(litime.READ_HOLDING, 2)
    with pytest.raises(DeviceErrorReply) as info:
        litime.parse_response(frame, litime.READ_HOLDING)
    assert info.value.code == 2


def test_jbd_error_status_is_an_error() -> None:
    with pytest.raises(DeviceErrorReply):
        jbd.parse_frame(jbd.encode_response(0x03, b"", status=0x80))
