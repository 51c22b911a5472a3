"""One table of quantities (issue 34): everything that names a quantity agrees with it.

The decoders' declared tables and the names they emit on real captured frames, the
data model's document, the History page's units, the display's and Grafana's words for
the protection bits, and Home Assistant discovery's payloads.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sunbox.banks import compute_bank
from sunbox.config import BankConfig
from sunbox.drivers.jbd import cell_statistics
from sunbox.model import Health
from sunbox.mqtt.discovery import discovery_messages, entity_keys
from sunbox.protocols import jbd, litime, vedirect, venus, victron_advert
from sunbox.protocols.errors import FrameError
from sunbox.protocols.victron_records import RECORD_TYPES, decode_record
from sunbox.protocols.vreg_registers import FAMILIES, REGISTERS
from sunbox.quantities import FAMILY_QUANTITIES, PROTECTION_BITS, QUANTITIES, names
from sunbox.storage import energy, points
from sunbox.web import history, live

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
DOC = (ROOT / "docs" / "data-model.md").read_text()
ENVELOPE = {"device_id", "kind", "time_ms"}


def doc_rows() -> dict[str, str]:
    """Every name in the first column of the data model's tables, with its unit cell."""
    rows: dict[str, str] = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 4 or not cells[1].startswith("`"):
            continue
        for name in re.findall(r"`([a-z0-9_]+)`", cells[1]):
            rows.setdefault(name, cells[2] if cells[1].count("`") == 2 else "")
    return rows


def family_names(vectors: dict[str, Any]) -> dict[str, set[str]]:
    """Per device family, every name its decoders declare or emit on the project's
    captured frames and published test vectors."""
    out: dict[str, set[str]] = {"jbd": set(cell_statistics([3.3, None]))}
    for vector in vectors["jbd"]:
        out["jbd"].update(jbd.decode(bytes.fromhex(vector["hex"])))
    out["litime"] = set(litime.decode(bytes.fromhex(vectors["litime_mppt"][0]["hex"])))
    out["litime"].update(("model", "firmware_version"))  # what drivers/litime.py keeps of the device info
    out["victron-gatt"] = {register.name for register in REGISTERS.values()} | {"charge_state", "device_state"}
    for family in FAMILIES.values():
        out["victron-gatt"].update(family.values())
    out["vedirect"] = set()
    for table in (vedirect.COMMON, vedirect.BATTERY_MONITOR, vedirect.CHARGER, vedirect.INVERTER):
        out["vedirect"].update(name for name, _convert in table.values())
    for dump in FIXTURES.glob("vedirect_*.dump"):
        for block in vedirect.merge_pairs(vedirect.BlockParser().feed(dump.read_bytes())):
            out["vedirect"].update(vedirect.to_values(block)[1])
    out["victron-advert"] = {"model", "product_id"}
    for record_type in RECORD_TYPES:  # every field of every layout, "not available" included
        out["victron-advert"].update(decode_record(record_type, bytes(32))[1])
    for vector in json.loads((FIXTURES / "victron_ble_vectors.json").read_text())["vectors"]:
        if "advert" not in vector:  # a record vector without its advert (fixtures/README.md)
            continue
        with contextlib.suppress(FrameError):  # the vectors of a wrong key or a bad record
            out["victron-advert"].update(
                victron_advert.decode(bytes.fromhex(vector["advert"]), bytes.fromhex(vector["key"]))[1]
            )
    out["venus"] = set()
    for paths in venus.PATHS.values():
        out["venus"].update(name for name, _convert in paths.values())
    for kind in ("charger", "battery", "inverter", "system"):
        out["venus"].update(venus.finish(kind, {"battery_voltage": 13.0, "battery_current": 2.0}))
    out["health"] = set(Health("x").snapshot(1).values)
    out["bank"] = set(compute_bank(BankConfig(id="b", packs=["p"]), {}, 0).values)
    return out


def test_every_name_a_decoder_emits_is_in_the_table(vectors: dict[str, Any]) -> None:
    emitted = set().union(*family_names(vectors).values())
    assert len(emitted) > 120
    assert not emitted - set(QUANTITIES), "names no quantity describes"


def test_the_tables_families_are_what_the_decoders_send(vectors: dict[str, Any]) -> None:
    computed = family_names(vectors)
    assert set(computed) == set(FAMILY_QUANTITIES)
    for family, names_sent in computed.items():
        assert FAMILY_QUANTITIES[family] == names_sent, (
            f"{family}: the table lists {sorted(FAMILY_QUANTITIES[family] - names_sent)} it does not send, "
            f"and not {sorted(names_sent - FAMILY_QUANTITIES[family])}"
        )
    assert all(q.families for q in QUANTITIES.values()), "a quantity no family sends"
    assert QUANTITIES["cell_voltages"].families == {"jbd", "victron-advert"}  # a SmartLithium too


def test_the_data_model_document_lists_the_table_and_nothing_else() -> None:
    rows = doc_rows()
    assert set(QUANTITIES) - set(rows) == set(), "quantities docs/data-model.md does not list"
    assert set(rows) - set(QUANTITIES) - ENVELOPE == set(), "documented names the table does not have"
    for name, unit_cell in rows.items():
        quantity = QUANTITIES.get(name)
        if quantity is None or not unit_cell or quantity.unit is None:
            continue
        documented = unit_cell.replace("count", "").split(",")[0].strip()
        assert documented in (quantity.unit, "bytes" if quantity.unit == "B" else quantity.unit), (
            f"{name}: docs say {unit_cell!r}, the table {quantity.unit!r}"
        )


def test_storage_types_follow_the_table() -> None:
    assert names(type="flags") == points.FLAG_FIELDS and "protection_bits" in points.FLAG_FIELDS
    assert names(type="text") == points.TEXT_FIELDS and "charge_state" in points.TEXT_FIELDS
    assert names(type="bool") == points.BOOL_FIELDS and "load_on" in points.BOOL_FIELDS
    assert "yield_total" in points.LAST_FIELDS and points.is_measured("voltage")
    assert not points.is_measured("charge_state_code") and not points.is_measured("cycles")


def test_history_units_and_the_displays_buttons_come_from_the_table() -> None:
    assert {q.field: q.unit for q in history.QUANTITIES.values()}["soc"] == "%"
    assert all(q.field in QUANTITIES and q.unit for q in history.QUANTITIES.values())
    main_js = (ROOT / "collector" / "web" / "src" / "main.js").read_text()
    buttons = re.search(r"const QUANTITIES = \[(.*?)\];", main_js, re.S)
    assert buttons is not None
    keys = set(re.findall(r'\["([a-z_]+)",', buttons.group(1)))
    assert keys - {"energy"} <= set(history.QUANTITIES)


def test_the_display_and_grafana_name_the_protection_bits_alike() -> None:
    assert len(PROTECTION_BITS) == len(jbd.PROTECTION_NAMES) == 13
    assert live.PROTECTION_WORDS == PROTECTION_BITS
    now = json.loads((ROOT / "grafana" / "dashboards" / "now.json").read_text())
    text = json.dumps(now)
    for bit, word in enumerate(PROTECTION_BITS):
        assert f'{{m: {1 << bit}, n: \\"{word}\\"}}' in text, word


#: Home Assistant's sensor device classes and the units they take (Home Assistant
#: developer docs, "Sensor entity", device classes; energy may not be "measurement").
HA_UNITS = {
    "voltage": {"V"},
    "current": {"A"},
    "power": {"W"},
    "apparent_power": {"VA"},
    "frequency": {"Hz"},
    "temperature": {"°C"},
    "energy": {"Wh"},
    "duration": {"s", "ms", "d"},
    "signal_strength": {"dBm"},
    "battery": {"%"},
    "humidity": {"%"},
    "timestamp": {"ms"},
}


@pytest.mark.parametrize("quantity", list(QUANTITIES.values()), ids=lambda q: q.name)
def test_home_assistant_classes_fit_the_unit(quantity: Any) -> None:
    if quantity.component == "binary_sensor":
        assert quantity.unit is None and quantity.state_class is None
        return
    if quantity.device_class:
        assert quantity.unit in HA_UNITS[quantity.device_class]
    if quantity.device_class == "energy":
        assert quantity.state_class in (None, "total", "total_increasing")
    if quantity.type in ("text", "flags"):
        assert quantity.state_class is None and quantity.device_class is None


def test_a_device_announces_exactly_what_it_sends() -> None:
    values = {"voltage": 13.2, "soc": 80.0, "cell_voltages": [3.3, None, 3.31], "pv_power": None, "x": 1}
    keys = entity_keys(values)
    assert keys == {"voltage", "soc", "cell_voltage_01", "cell_voltage_03"}
    messages = dict(discovery_messages("bms-1", "JBD-SP04S", keys, "sunbox", "homeassistant"))
    assert set(messages) == {
        "homeassistant/sensor/sunbox_bms-1/voltage/config",
        "homeassistant/sensor/sunbox_bms-1/soc/config",
        "homeassistant/sensor/sunbox_bms-1/cell_voltage_01/config",
        "homeassistant/sensor/sunbox_bms-1/cell_voltage_03/config",
    }
    soc = json.loads(messages["homeassistant/sensor/sunbox_bms-1/soc/config"])
    assert soc["unique_id"] == "sunbox_bms-1_soc"  # unchanged: owners keep their entities
    assert soc["default_entity_id"] == "sensor.sunbox_bms_1_soc" and soc["object_id"] == "sunbox_bms_1_soc"
    assert soc["device_class"] == "battery" and soc["unit_of_measurement"] == "%"
    assert soc["state_topic"] == "sunbox/bms-1/state" and soc["origin"]["name"] == "Sunbox"
    assert soc["device"]["model"] == "JBD-SP04S" and len(soc["availability"]) == 2
    cell = json.loads(messages["homeassistant/sensor/sunbox_bms-1/cell_voltage_03/config"])
    assert cell["value_template"] == "{{ (value_json.cell_voltages | default([]))[2] | default(none) }}"
    assert cell["name"] == "Cell 3"


def test_health_is_diagnostic_and_available_while_the_collector_is() -> None:
    health = Health("shunt", connected=True, last_reading_ms=1_750_000_000_000, poll_latency_ms=12.0)
    keys = entity_keys(health.snapshot(1_750_000_000_000).values)
    assert "rssi" not in keys and "last_error" not in keys  # None: a VE.Direct cable has no RSSI
    messages = {
        json.loads(p)["unique_id"]: json.loads(p) for _t, p in discovery_messages("shunt", None, keys, "sunbox", "ha")
    }
    link = messages["sunbox_shunt_connected"]
    assert link["device_class"] == "connectivity" and link["entity_category"] == "diagnostic"
    assert link["state_topic"] == "sunbox/shunt/health" and link["availability"] == [
        {"topic": "sunbox/collector/availability"}
    ]
    last = messages["sunbox_shunt_last_reading_ms"]
    assert last["device_class"] == "timestamp" and "unit_of_measurement" not in last
    assert "timestamp_custom" in last["value_template"]
    assert messages["sunbox_shunt_consecutive_errors"]["enabled_by_default"] is False


def test_energy_counters_suit_the_energy_dashboard() -> None:
    for name in ("yield_total", "yield_today", "charged_energy", "discharged_energy"):
        quantity = QUANTITIES[name]
        assert (quantity.unit, quantity.device_class, quantity.state_class) == ("Wh", "energy", "total_increasing")


def stored_name_known(field: str) -> bool:
    """A field of the raw bucket or a tier that the table describes: a name, a list item
    (``cell_voltage_03``), either with a tier's ``_min``/``_max``, or a list's prefix."""
    base = re.sub(r"_(min|max)$", "", field)
    if base in QUANTITIES or field == "raw_values":  # raw_values: the tiers' marker
        return True
    stem = re.sub(r"_(\d\d)?$", "", base)
    return QUANTITIES.get(stem + "s") is not None and QUANTITIES[stem + "s"].type == "numbers"


def test_every_field_the_grafana_dashboards_query_is_in_the_table() -> None:
    fields: set[str] = set()
    for path in (ROOT / "grafana" / "dashboards").glob("*.json"):
        text = path.read_text()
        fields |= set(re.findall(r'_field == \\"([a-z0-9_]+)\\"', text))
        for group in re.findall(r"r\._field =~ /\^\(?([a-z0-9_|]+)", text):
            fields |= set(group.split("|"))
    assert len(fields) > 20
    # the energy bucket's own fields (sunbox.storage.energy, docs/data-model.md) besides
    unknown = {f for f in fields if not stored_name_known(f)} - set(energy.FIELDS)
    assert not unknown, f"fields the table does not describe: {unknown}"
    assert not stored_name_known("cell_volts") and stored_name_known("temperature_02_max")


def test_every_reading_field_the_display_reads_is_in_the_table() -> None:
    main_js = (ROOT / "collector" / "web" / "src" / "main.js").read_text()
    read = set(re.findall(r"\bstate\.([a-z_]+)", main_js))
    assert {"soc", "pv_power", "cell_voltages"} <= read
    assert read <= set(QUANTITIES), sorted(read - set(QUANTITIES))
