"""``sunbox.discovery``: which driver reads an advert, and whether Instant Readout is on."""

from __future__ import annotations

import yaml

from sunbox.config import parse
from sunbox.discovery import Found, classify, inventory, table

JBD_SERVICE = "0000ff00-0000-1000-8000-00805f9b34fb"
VICTRON_SERVICE = "306b0001-b081-4037-83dc-e59fcc3cdfd0"
#: ../shared/docs/protocols.md §3 (keshavdv/victron-ble tests/test_solar_charger.py): BlueSolar MPPT 75/15
SOLAR_ADVERT = bytes.fromhex("100242a0016207adceb37b605d7e0ee21b24df5c")
#: same doc, SmartShunt 500A/50mV (tests/test_battery_monitor.py)
SHUNT_ADVERT = bytes.fromhex("100289a302b040af925d09a4d89aa0128bdef48c6298a9")


def test_instant_readout_on_names_the_product() -> None:
    found = classify("d0:00:00:00:00:01", -70, None, [], {0x02E1: SOLAR_ADVERT})
    assert found.driver == "victron-advert" and found.instant_readout is True
    assert found.product == "BlueSolar Charger MPPT 75/15" and found.address == "D0:00:00:00:00:01"
    assert classify("x", -70, None, [], {0x02E1: SHUNT_ADVERT}).product == "SmartShunt 500A/50mV"


def test_a_victron_without_instant_readout_is_read_over_gatt_or_not_at_all() -> None:
    gatt = classify("F9:3E:4C:00:00:09", -60, "SmartSolar HQ22", [VICTRON_SERVICE], {0x02E1: SOLAR_ADVERT[:4]})
    assert gatt.driver == "smartsolar" and gatt.instant_readout is False and "off" in gatt.note
    other = classify("F9:3E:4C:00:00:0A", -60, None, [], {0x02E1: b"\x11\x00"})
    assert other.driver is None and other.instant_readout is False


def test_odd_adverts_never_raise() -> None:
    for data in (b"", b"\x10", b"\x10\x00\xff\xff", bytes(range(40))):
        found = classify("AA:BB:CC:DD:EE:FF", None, None, [], {0x02E1: data})
        assert found.driver in (None, "victron-advert")
    stranger = classify("AA:BB:CC:DD:EE:00", -90, "Phone", ["180f"], {0x004C: b"\x02\x15"})
    assert stranger.driver is None and stranger.note == "not a device Sunbox reads"


def test_table_is_aligned_strongest_first_with_unknown_rssi_last() -> None:
    rows = table(
        [
            Found("A4:C1:37:00:00:01", -80, "xiaoxiang", "jbd"),
            Found("C8:47:80:00:00:02", -45, "BT-LTMPPT4860", "litime"),
            Found("AA:BB:CC:DD:EE:FF", None, "", None),
        ]
    ).splitlines()
    assert rows[0].startswith("ADDRESS") and [r.split()[0] for r in rows[1:]] == [
        "C8:47:80:00:00:02",
        "A4:C1:37:00:00:01",
        "AA:BB:CC:DD:EE:FF",
    ]
    assert len({row.index("  ", 17) for row in rows}) == 1


def test_inventory_numbers_ids_and_leaves_out_what_sunbox_cannot_read() -> None:
    text = inventory(
        [
            Found("A4:C1:37:00:00:02", -60, "b", "jbd"),
            Found("A4:C1:37:00:00:01", -60, "a", "jbd"),
            Found("11:22:33:44:55:66", -60, "tv", None),
        ]
    )
    parsed = yaml.safe_load(text)
    assert [d["id"] for d in parsed["sunbox_devices"]] == ["battery-1", "battery-2"]
    assert parsed["sunbox_devices"][0]["address"] == "A4:C1:37:00:00:01"
    assert parsed["sunbox_victron_adverts"] == []
    assert all(d["address"] != "11:22:33:44:55:66" for d in parsed["sunbox_devices"])
    heard = [line for line in text.splitlines() if line.startswith("# 11:22:33:44:55:66")]
    assert heard and "not a device Sunbox reads" in heard[0], "everything heard is listed, as a comment"


def test_inventory_offers_a_bank_of_the_packs_that_validates_once_uncommented() -> None:
    text = inventory([Found("A4:C1:37:00:00:02", -60, "b", "jbd"), Found("A4:C1:37:00:00:01", -60, "a", "jbd")])
    assert "# sunbox_banks:" in text
    uncommented = text.replace("# sunbox_banks:", "sunbox_banks:").replace("#   - id: house", "  - id: house")
    uncommented = uncommented.replace("#     packs:", "    packs:")
    parsed = yaml.safe_load(uncommented)
    devices = [{k: v for k, v in d.items() if k != "password"} for d in parsed["sunbox_devices"]]
    config = parse({"mqtt": {"username": "u", "password": "p"}, "devices": devices, "banks": parsed["sunbox_banks"]})
    assert config.banks[0].packs == ["battery-1", "battery-2"]
    assert "sunbox_banks" not in inventory([Found("A4:C1:37:00:00:01", -60, "a", "jbd")])
