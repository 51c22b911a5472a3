"""Battery banks (issue 31): the configuration's checks, each naming its key, and
:func:`sunbox.banks.compute_bank` on packs and meters of known values."""

from __future__ import annotations

from typing import Any

import pytest

from sunbox.banks import BankAggregator, compute_bank
from sunbox.config import BankConfig, ConfigError, parse
from sunbox.model import Reading
from sunbox.quantities import FAMILY_QUANTITIES

MQTT = {"username": "u", "password": "p"}
DEVICES = [
    {"id": "pack-a", "driver": "jbd", "address": "A4:C1:37:00:00:01"},
    {"id": "pack-b", "driver": "jbd", "address": "A4:C1:37:00:00:02"},
    {"id": "mppt", "driver": "litime", "address": "C8:47:80:00:00:02"},
]
VEDIRECT = [{"id": "bmv", "port": "/dev/ttyUSB0"}]
NOW = 1_800_000_000_000


def config_with(banks: list[dict[str, Any]]) -> Any:
    return parse(
        {
            "mqtt": MQTT,
            "devices": DEVICES,
            "vedirect": VEDIRECT,
            "venus": [{"id": "gx", "host": "venus.local"}],
            "banks": banks,
        }
    )


def test_a_valid_bank_is_taken() -> None:
    config = config_with([{"id": "house", "packs": ["pack-a", "pack-b"], "meter": "bmv"}])
    assert config.banks[0].packs == ["pack-a", "pack-b"] and config.banks[0].interval_s == 10.0
    assert config_with([{"id": "house", "packs": ["pack-a"], "meter": "gx-battery-512"}]).banks[0].meter


@pytest.mark.parametrize(
    ("banks", "message"),
    [
        ([{"id": "house", "packs": ["pack-c"]}], "banks.0.packs.0: unknown device 'pack-c'"),
        (
            [{"id": "house", "packs": ["pack-a"]}, {"id": "shed", "packs": ["pack-b", "pack-a"]}],
            "banks.1.packs.1: 'pack-a' is already in banks.0.packs.0",
        ),
        ([{"id": "house", "packs": ["pack-a"], "meter": "pack-b"}], "banks.0.meter: 'pack-b' is a JBD BMS, a pack"),
        ([{"id": "house", "packs": ["pack-a"], "meter": "mppt"}], "banks.0.meter: 'mppt' is a litime charger"),
        ([{"id": "house", "packs": ["mppt"]}], "banks.0.packs.0: 'mppt' is a litime charger"),
        ([{"id": "house", "packs": ["pack-a"], "meter": "pack-a"}], "banks.0.meter: 'pack-a' is already in"),
        ([{"id": "house", "packs": ["pack-a"], "meter": "gx-solarcharger-1"}], "banks.0.meter: unknown device"),
        ([{"id": "pack-b", "packs": ["pack-a"]}], "banks.0.id: 'pack-b' is already a device or bank id"),
        ([{"id": "house", "packs": []}], "banks.0.packs: List should have at least 1 item"),
        ([{"id": "house", "packs": ["pack-a"], "members": []}], "banks.0.members: unknown key"),
        ([{"id": "House", "packs": ["pack-a"]}], "banks.0.id: use 1-63 lower-case"),
    ],
)
def test_a_bad_bank_names_its_key(banks: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_with(banks)
    assert str(error.value).startswith(message), str(error.value)


def pack(device: str, soc: float, nominal: float, *, current: float, age_s: float = 0, **extra: Any) -> Reading:
    values = {
        "voltage": 13.3,
        "current": current,
        "power": round(13.3 * current, 3),
        "soc": soc,
        "capacity_remaining": nominal * soc / 100,
        "capacity_nominal": nominal,
        **extra,
    }
    return Reading(device, "battery", NOW - int(age_s * 1000), values)


BANK = BankConfig(id="house", packs=["small", "big"], stale_after_s=60)


def test_soc_is_weighted_by_capacity_and_power_summed() -> None:
    """A 100 Ah pack at 50 % and a 280 Ah pack at 90 % hold 79.47 %, not the 70 % of a
    plain mean (the issue's example)."""
    members = {
        "small": pack("small", 50, 100, current=-2.0, cell_voltages=[3.30, 3.31, 3.29, 3.30], temperatures=[21.0]),
        "big": pack("big", 90, 280, current=-3.0, cell_voltages=[3.32, 3.33, 3.34, 3.32], temperatures=[19.5, 23.0]),
    }
    bank = compute_bank(BANK, members, NOW)
    v = bank.values
    assert bank.kind == "bank" and bank.device_id == "house" and bank.time_ms == NOW
    assert v["soc"] == pytest.approx(302 / 380 * 100) and round(v["soc"], 1) == 79.5
    assert v["capacity_remaining"] == pytest.approx(302) and v["capacity_nominal"] == pytest.approx(380)
    assert v["current"] == pytest.approx(-5.0) and v["power"] == pytest.approx(13.3 * -5.0)
    assert v["voltage"] == pytest.approx(13.3)
    assert v["time_to_go"] == pytest.approx(302 / 5 * 3600) and v["time_to_full"] is None
    assert (v["cell_voltage_min"], v["cell_voltage_min_pack"], v["cell_voltage_min_cell"]) == (3.29, "small", 3)
    assert (v["cell_voltage_max"], v["cell_voltage_max_pack"], v["cell_voltage_max_cell"]) == (3.34, "big", 3)
    assert v["cell_voltage_delta"] == pytest.approx(0.05)
    assert (v["temperature_min"], v["temperature_max"]) == (19.5, 23.0)
    assert v["soc_spread"] == 40
    assert (v["packs_fresh"], v["packs_total"], v["partial"], v["meter_fresh"]) == (2, 2, False, None)
    assert set(v) == FAMILY_QUANTITIES["bank"]


def test_a_silent_pack_is_counted_out_and_said() -> None:
    members = {"small": pack("small", 50, 100, current=1.0), "big": pack("big", 90, 280, current=2.0, age_s=61)}
    v = compute_bank(BANK, members, NOW).values
    assert (v["packs_fresh"], v["packs_total"], v["partial"]) == (1, 2, True)
    assert v["soc"] == 50 and v["capacity_nominal"] == 100 and v["current"] == 1.0
    assert v["time_to_full"] == pytest.approx(50 / 1.0 * 3600) and v["time_to_go"] is None
    assert v["soc_spread"] is None
    nothing = compute_bank(BANK, {}, NOW).values
    assert nothing["packs_fresh"] == 0 and nothing["soc"] is None and nothing["power"] is None


def test_the_meter_is_the_authority_for_current_power_and_soc() -> None:
    bank = BankConfig(id="house", packs=["small", "big"], meter="bmv")
    meter = Reading("bmv", "battery", NOW - 2000, {"voltage": 13.25, "current": -4.9, "power": -65.0, "soc": 81.2})
    members = {"small": pack("small", 50, 100, current=-2.0), "big": pack("big", 90, 280, current=-3.0), "bmv": meter}
    v = compute_bank(bank, members, NOW).values
    assert (v["soc"], v["current"], v["power"], v["voltage"]) == (81.2, -4.9, -65.0, 13.25)
    assert v["capacity_nominal"] == pytest.approx(380) and v["meter_fresh"] is True
    assert v["time_to_go"] == pytest.approx(302 / 4.9 * 3600)  # the meter has no time to go here
    with_ttg = dict(meter.values, time_to_go=36000.0)
    members["bmv"] = Reading("bmv", "battery", NOW, with_ttg)
    assert compute_bank(bank, members, NOW).values["time_to_go"] == 36000.0
    members["bmv"] = Reading("bmv", "battery", NOW - 120_000, with_ttg)  # the meter went silent: the packs
    v = compute_bank(bank, members, NOW).values
    assert v["soc"] == pytest.approx(302 / 380 * 100) and v["current"] == -5.0 and v["meter_fresh"] is False


def test_odd_member_values_are_left_out_never_a_crash() -> None:
    members = {
        "small": Reading(
            "small",
            "battery",
            NOW,
            {"voltage": float("nan"), "current": "x", "capacity_nominal": 0, "capacity_remaining": 5, "soc": True},
        ),
        "big": Reading("big", "charger", NOW, {"current": 9.0}),  # not a battery reading: not a member's
    }
    v = compute_bank(BANK, members, NOW).values
    assert v["voltage"] is None and v["current"] is None and v["soc"] is None and v["capacity_nominal"] is None
    assert v["packs_fresh"] == 1


def test_the_aggregator_publishes_each_bank_at_its_interval() -> None:
    published: list[Reading] = []
    aggregator = BankAggregator([BankConfig(id="house", packs=["small", "big"], interval_s=10)], published.append)
    assert aggregator.tick(NOW) == []  # no member heard yet
    aggregator.observe(pack("other", 10, 10, current=0))
    aggregator.observe(pack("small", 50, 100, current=1.0))
    assert [r.values["packs_fresh"] for r in aggregator.tick(NOW)] == [1]
    aggregator.observe(pack("big", 90, 280, current=1.0))
    assert aggregator.tick(NOW + 9_999) == []
    assert [r.values["packs_fresh"] for r in aggregator.tick(NOW + 10_000)] == [2]
    aggregator.observe(Reading("big", "battery", NOW - 5000, {"soc": 1.0}))  # older than what it has: ignored
    assert aggregator.tick(NOW + 20_000)[0].values["soc"] == pytest.approx(79.47, abs=0.01)
    assert len(published) == 3


def test_a_bank_is_a_configured_device_so_discovery_keeps_its_entities() -> None:
    from sunbox.service import expected_ids, is_configured

    config = config_with([{"id": "house", "packs": ["pack-a", "pack-b"], "meter": "bmv"}])
    assert is_configured(config)("house") and not is_configured(config)("cabin")
    assert "house" not in expected_ids(config), "--once waits for devices, not for the banks it computes"
