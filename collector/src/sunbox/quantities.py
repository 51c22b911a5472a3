"""The table of quantities: every data-model name once, with the facts the rest of Sunbox
derives from it.

For each name: its unit, value type, sign convention, the device kinds and families that
send it, its downsampling role in the tiers, its Home Assistant entity (component, device_class,
state_class, entity_category) and its label on the display. Storage's field sets
(:mod:`sunbox.storage.points`), Home Assistant discovery (:mod:`sunbox.mqtt.discovery`)
and the History page take them from here; ``collector/tests/test_quantities.py`` fails
when ``docs/data-model.md``, the decoders or the Grafana dashboards disagree.

Value types:

* ``number``: a float (counters and codes too);
* ``flags``: a non-negative integer bitmask, ORed over a tier's window;
* ``bool`` and ``text``;
* ``numbers``: a list of floats, stored as numbered fields (``cell_voltages`` ->
  ``cell_voltage_01`` ...) and announced to Home Assistant one entity per position.

Downsampling roles (``docs/storage.md``): ``measured`` (mean, ``_min``, ``_max``),
``last`` (the window's last value: states, counters, constants, booleans, text) and
``or`` (flags).

Units are SI as published; Home Assistant gets the same unit (``s`` durations with
device_class ``duration``; Ah and counts have no Home Assistant device class).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sunbox.protocols.jbd import PROTECTION_NAMES

ValueType = Literal["number", "flags", "bool", "text", "numbers"]
Role = Literal["measured", "last", "or"]
EntityCategory = Literal["diagnostic", "config"] | None

BATTERY = frozenset({"battery"})
BANK = frozenset({"bank"})
CHARGER = frozenset({"charger"})
INVERTER = frozenset({"inverter"})
DCDC = frozenset({"dcdc"})
HEALTH = frozenset({"health"})
VICTRON = frozenset({"battery", "charger", "inverter", "dcdc", "dc_meter", "protect", "system"})
DEVICE_KINDS = ("battery", "bank", "charger", "inverter", "dcdc", "dc_meter", "protect", "system", "test")


@dataclass(frozen=True, slots=True)
class Quantity:
    """One data-model name and its facts (see the module docstring)."""

    name: str
    unit: str | None
    type: ValueType
    kinds: frozenset[str]
    label: str
    role: Role
    #: Home Assistant: ``sensor`` or ``binary_sensor``; None: not announced
    component: str | None = "sensor"
    device_class: str | None = None
    state_class: str | None = None
    entity_category: EntityCategory = None
    #: the sign convention, where the quantity has one
    sign: str = ""
    #: announced but disabled until the owner enables it (counters nobody charts)
    enabled_by_default: bool = True

    @property
    def families(self) -> frozenset[str]:
        """The device families that send it (:data:`FAMILY_QUANTITIES`)."""
        return frozenset(f for f, names in FAMILY_QUANTITIES.items() if self.name in names)

    @property
    def stored_names(self) -> str:
        """How the raw bucket names it: the name, or ``<stem>_NN`` for a list."""
        return f"{self.name[:-1]}_NN" if self.type == "numbers" else self.name


_CLASS_OF_UNIT = {
    "V": "voltage",
    "A": "current",
    "W": "power",
    "VA": "apparent_power",
    "Hz": "frequency",
    "°C": "temperature",
    "Wh": "energy",
    "s": "duration",
    "ms": "duration",
    "d": "duration",
    "dBm": "signal_strength",
}


def _q(
    name: str,
    unit: str | None,
    kinds: Iterable[str],
    label: str,
    *,
    type: ValueType = "number",
    role: Role | None = None,
    device_class: str | None = "",
    state_class: str | None = "",
    category: EntityCategory = None,
    sign: str = "",
    enabled: bool = True,
    announce: bool = True,
) -> Quantity:
    """A quantity with the defaults its type and unit imply: a measured number with the
    Home Assistant class of its unit and state_class ``measurement``."""
    if role is None:
        role = "measured" if type in ("number", "numbers") else "or" if type == "flags" else "last"
    if device_class == "":
        device_class = _CLASS_OF_UNIT.get(unit or "") if type in ("number", "numbers") else None
        if type == "bool":
            device_class = None
    if state_class == "":
        if type in ("number", "numbers") and role == "measured":
            state_class = "total_increasing" if device_class == "energy" else "measurement"
        else:
            state_class = None
    component = None if not announce else ("binary_sensor" if type == "bool" else "sensor")
    return Quantity(
        name=name,
        unit=unit,
        type=type,
        kinds=frozenset(kinds),
        label=label,
        role=role,
        component=component,
        device_class=device_class,
        state_class=state_class,
        entity_category=category,
        sign=sign,
        enabled_by_default=enabled,
    )


def _state(name: str, kinds: Iterable[str], label: str) -> list[Quantity]:
    """A state published twice: its text (``<name>``) and its raw code (``<name>_code``)."""
    return [
        _q(name, None, kinds, label, type="text"),
        _q(f"{name}_code", None, kinds, f"{label} (code)", role="last", category="diagnostic", enabled=False),
    ]


def _counter(name: str, unit: str | None, kinds: Iterable[str], label: str, **kw: Any) -> Quantity:
    """A count or a device's own history value: kept as the window's last value."""
    return _q(name, unit, kinds, label, role="last", **kw)


def _diag_text(name: str, kinds: Iterable[str], label: str) -> Quantity:
    return _q(name, None, kinds, label, type="text", category="diagnostic")


_BMV = BATTERY  # the battery monitors' history (VE.Direct H1-H18)
_CHARGE = "+ = into the battery (charging), − = out of it"

QUANTITIES_LIST: list[Quantity] = [
    # --- battery (JBD BMS, Victron battery monitors, Venus OS batteries) ---------------
    _q("voltage", "V", BATTERY | BANK | {"dc_meter", "test"}, "Voltage"),
    _q("current", "A", BATTERY | BANK | {"dc_meter"}, "Current", sign=_CHARGE),
    _q("power", "W", BATTERY | BANK | {"dc_meter"}, "Power", sign=_CHARGE),
    _q("soc", "%", BATTERY | BANK | CHARGER, "State of charge", device_class="battery"),
    _q("capacity_remaining", "Ah", BATTERY | BANK, "Remaining capacity"),
    _counter("capacity_nominal", "Ah", BATTERY | BANK, "Full-charge capacity", category="diagnostic"),
    _counter("cycles", None, BATTERY, "Cycles", state_class="total_increasing", category="diagnostic"),
    _q("cell_voltages", "V", BATTERY, "Cell", type="numbers"),
    _counter("cell_count", None, BATTERY, "Cells", category="diagnostic"),
    _q("cell_voltage_min", "V", BATTERY | BANK, "Lowest cell"),
    _q("cell_voltage_max", "V", BATTERY | BANK, "Highest cell"),
    _q("cell_voltage_delta", "V", BATTERY | BANK, "Cell spread"),
    _q("temperatures", "°C", BATTERY, "Temperature", type="numbers"),
    _q("balance_bits", None, BATTERY, "Balancing cells", type="flags", category="diagnostic"),
    _q("protection_bits", None, BATTERY | BANK, "Protection", type="flags"),
    _q("charge_fet_on", None, BATTERY, "Charge switch", type="bool"),
    _q("discharge_fet_on", None, BATTERY, "Discharge switch", type="bool"),
    _diag_text("model", VICTRON | BATTERY | BANK | CHARGER, "Model"),
    _diag_text("production_date", BATTERY, "Production date"),
    _diag_text("software_version", BATTERY, "Software version"),
    _q("humidity", "%", BATTERY, "Humidity", device_class="humidity"),
    _q("alarm_bits", None, VICTRON, "Alarms", type="flags"),
    _q("balance_current", "A", BATTERY, "Balance current"),
    # --- charger (LiTime MPPT, Victron solar and AC chargers) ---------------------------
    _q("battery_voltage", "V", CHARGER | INVERTER, "Battery voltage"),
    _q("battery_current", "A", CHARGER | INVERTER, "Battery current", sign=_CHARGE),
    _q("charge_power", "W", CHARGER, "Charge power", sign="≥ 0, into the battery"),
    _q("pv_voltage", "V", CHARGER | INVERTER, "PV voltage"),
    _q("pv_power", "W", CHARGER | INVERTER, "PV power"),
    _q("load_voltage", "V", CHARGER, "Load voltage"),
    _q("load_current", "A", CHARGER, "Load current"),
    _q("load_power", "W", CHARGER, "Load power"),
    _q("load_on", None, CHARGER, "Load output", type="bool"),
    *_state("charge_state", CHARGER, "Charge state"),
    _q("yield_today", "Wh", CHARGER, "Yield today", role="last", state_class="total_increasing"),
    _q("yield_total", "Wh", CHARGER, "Yield total", role="last", state_class="total_increasing"),
    _q("consumed_today", "Wh", CHARGER, "Load energy today", role="last", state_class="total_increasing"),
    _q("consumed_total", "Wh", CHARGER, "Load energy total", role="last", state_class="total_increasing"),
    _counter("max_charge_power_today", "W", CHARGER, "Peak charge power today", state_class="measurement"),
    _q("controller_temperature", "°C", CHARGER, "Controller temperature"),
    _q("battery_temperature", "°C", CHARGER | BATTERY, "Battery temperature"),
    _counter("days_running", "d", CHARGER, "Days running", category="diagnostic", state_class=None),
    _counter("firmware_version", None, CHARGER, "Firmware version", category="diagnostic", state_class=None),
    # --- Victron additions ---------------------------------------------------------------
    _q("consumed_ah", "Ah", _BMV, "Consumed", sign="≥ 0, drawn since full"),
    _q("time_to_go", "s", _BMV | BANK, "Time to go"),
    _q("starter_voltage", "V", _BMV, "Starter voltage"),
    _q("midpoint_voltage", "V", _BMV, "Midpoint voltage"),
    _q("midpoint_deviation", "%", _BMV, "Midpoint deviation", device_class=None),
    _q("alarm_on", None, _BMV, "Alarm", type="bool", device_class="problem"),
    _q("relay_on", None, _BMV, "Relay", type="bool"),
    _counter("deepest_discharge_ah", "Ah", _BMV, "Deepest discharge", category="diagnostic"),
    _counter("last_discharge_ah", "Ah", _BMV, "Last discharge", category="diagnostic"),
    _counter("average_discharge_ah", "Ah", _BMV, "Average discharge", category="diagnostic"),
    _counter("cumulative_ah_drawn", "Ah", _BMV, "Cumulative Ah drawn", category="diagnostic"),
    _counter("full_discharges", None, _BMV, "Full discharges", category="diagnostic"),
    _counter("automatic_syncs", None, _BMV, "Automatic syncs", category="diagnostic"),
    _counter("low_voltage_alarms", None, _BMV, "Low-voltage alarms", category="diagnostic"),
    _counter("high_voltage_alarms", None, _BMV, "High-voltage alarms", category="diagnostic"),
    _counter("min_voltage", "V", _BMV, "Lowest voltage", category="diagnostic"),
    _counter("max_voltage", "V", _BMV, "Highest voltage", category="diagnostic"),
    _counter("min_starter_voltage", "V", _BMV, "Lowest starter voltage", category="diagnostic"),
    _counter("max_starter_voltage", "V", _BMV, "Highest starter voltage", category="diagnostic"),
    _counter("seconds_since_full_charge", "s", _BMV, "Since full charge", category="diagnostic"),
    _q("discharged_energy", "Wh", _BMV, "Discharged energy", role="last", state_class="total_increasing"),
    _q("charged_energy", "Wh", _BMV, "Charged energy", role="last", state_class="total_increasing"),
    _q("pv_current", "A", CHARGER, "PV current"),
    _counter("yield_yesterday", "Wh", CHARGER, "Yield yesterday", state_class=None),
    _counter("max_charge_power_yesterday", "W", CHARGER, "Peak charge power yesterday", state_class=None),
    _counter("mppt_mode", None, CHARGER, "MPPT mode", category="diagnostic"),
    _counter("error_code", None, VICTRON, "Error code", category="diagnostic"),
    _counter("day_sequence", None, CHARGER, "Day number", category="diagnostic", enabled=False),
    _counter("uptime", "s", VICTRON | {"test"}, "Uptime", category="diagnostic", state_class="total_increasing"),
    *_state("device_state", INVERTER | DCDC | {"protect"}, "State"),
    _counter("device_mode", None, INVERTER | CHARGER, "Mode", category="diagnostic"),
    _q("ac_out_voltage", "V", INVERTER, "AC out voltage"),
    _q("ac_out_current", "A", INVERTER, "AC out current"),
    _q("ac_out_apparent_power", "VA", INVERTER, "AC out apparent power"),
    _q("ac_out_power", "W", INVERTER, "AC out power"),
    _q("ac_in_voltage", "V", INVERTER, "AC in voltage"),
    _q("ac_in_power", "W", INVERTER, "AC in power"),
    *_state("ac_in_state", INVERTER, "AC in state"),
    _q("ac_out_frequency", "Hz", INVERTER, "AC out frequency"),
    _counter("ac_out_nominal_voltage", "V", INVERTER, "AC out nominal voltage", category="diagnostic"),
    _counter("ac_out_rated_power", "W", INVERTER, "Rated power", category="diagnostic"),
    _q("ac_in_current", "A", INVERTER | CHARGER, "AC in current"),
    _q("ac_in_apparent_power", "VA", INVERTER, "AC in apparent power"),
    _q("ac_in_frequency", "Hz", INVERTER, "AC in frequency"),
    _q("ac_in_current_limit", "A", INVERTER, "AC in current limit"),
    _counter("ac_in_active", None, INVERTER, "Active AC input", category="diagnostic"),
    _counter("inverter_state_code", None, INVERTER, "Inverter state (code)", category="diagnostic"),
    _q("charger_voltage", "V", CHARGER, "Charger voltage"),
    _q("charger_current", "A", CHARGER, "Charger current"),
    _q("charger_power", "W", CHARGER, "Charger power"),
    _counter("charger_max_current", "A", CHARGER, "Charger current limit", category="diagnostic"),
    _q("yield_system", "Wh", CHARGER, "System yield", role="last", state_class="total_increasing"),
    _q("dc_ripple_voltage", "V", BATTERY | INVERTER, "DC ripple"),
    _q("input_voltage", "V", DCDC, "Input voltage"),
    _q("output_voltage", "V", DCDC, "Output voltage"),
    _q("battery_power", "W", frozenset({"system"}), "Battery power", sign=_CHARGE),
    _q("warning_bits", None, VICTRON, "Warnings", type="flags"),
    _q("off_reason_bits", None, VICTRON, "Off reasons", type="flags", category="diagnostic"),
    _q("error_bits", None, VICTRON, "Errors", type="flags"),
    _q("bms_bits", None, VICTRON, "BMS flags", type="flags", category="diagnostic"),
    _q("io_bits", None, BATTERY, "IO status", type="flags", category="diagnostic"),
    _q("battery_voltage_2", "V", CHARGER, "Battery voltage 2"),
    _q("battery_current_2", "A", CHARGER, "Battery current 2"),
    _q("battery_voltage_3", "V", CHARGER, "Battery voltage 3"),
    _q("battery_current_3", "A", CHARGER, "Battery current 3"),
    *_state("balancer_state", BATTERY, "Balancer"),
    *_state("output_state", frozenset({"protect"}), "Output"),
    *_state("alarm_level", INVERTER, "Alarm level"),
    *_state("monitor_mode", frozenset({"dc_meter"}), "Monitor mode"),
    _q("dc_power", "W", frozenset({"system"}), "DC system power"),
    _q("input_current", "A", DCDC, "Input current"),
    _q("output_current", "A", DCDC, "Output current"),
    _q("temperature", "°C", frozenset({"test"}), "Temperature"),
    _diag_text("product_id", VICTRON, "Product id"),
    _diag_text("serial", VICTRON, "Serial number"),
    _diag_text("firmware", VICTRON, "Firmware"),
    # --- bank (sunbox.banks: parallel packs and their meter as one battery) ---------------
    _q("time_to_full", "s", BANK, "Time to full"),
    _diag_text("cell_voltage_min_pack", BANK, "Pack with the lowest cell"),
    _counter("cell_voltage_min_cell", None, BANK, "Lowest cell number", category="diagnostic"),
    _diag_text("cell_voltage_max_pack", BANK, "Pack with the highest cell"),
    _counter("cell_voltage_max_cell", None, BANK, "Highest cell number", category="diagnostic"),
    _q("temperature_min", "°C", BANK, "Lowest temperature"),
    _q("temperature_max", "°C", BANK, "Highest temperature"),
    _q("soc_spread", "%", BANK, "SOC spread between packs", device_class=None),
    _counter("packs_fresh", None, BANK, "Packs reporting", state_class="measurement"),
    _counter("packs_total", None, BANK, "Packs", category="diagnostic"),
    _q("partial", None, BANK, "Packs missing", type="bool", device_class="problem"),
    _q("meter_fresh", None, BANK, "Meter reporting", type="bool", category="diagnostic"),
    _q("packs", None, BANK, "Pack devices", type="text", announce=False),
    _q("meter", None, BANK, "Meter device", type="text", announce=False),
    # --- health (every device; published on sunbox/<id>/health) --------------------------
    _q("connected", None, HEALTH, "Link", type="bool", device_class="connectivity", category="diagnostic"),
    _counter("last_reading_ms", "ms", HEALTH, "Last reading", device_class="timestamp", category="diagnostic"),
    _counter("reconnects", None, HEALTH, "Reconnects", category="diagnostic", state_class="total_increasing"),
    _counter("consecutive_errors", None, HEALTH, "Errors in a row", category="diagnostic", enabled=False),
    _counter("errors_total", None, HEALTH, "Errors", category="diagnostic", state_class="total_increasing"),
    _counter("skipped_frames", "B", HEALTH, "Skipped bytes", category="diagnostic", enabled=False),
    _counter("adapter_recoveries", None, HEALTH, "Adapter recoveries", category="diagnostic", enabled=False),
    _q("rssi", "dBm", HEALTH, "Signal", category="diagnostic"),
    _q("poll_latency_ms", "ms", HEALTH, "Poll latency", category="diagnostic"),
    _diag_text("last_error", HEALTH, "Last error"),
]

#: The device families and the quantities each sends (JBD BMS, LiTime MPPT, Victron over
#: VictronConnect GATT, VE.Direct and Instant Readout, Venus OS; bank: sunbox.banks;
#: health: every device).
#: collector/tests/test_quantities.py recomputes it from the decoders' own tables and the
#: captured frames, and fails when they disagree.
FAMILY_QUANTITIES: dict[str, frozenset[str]] = {
    "jbd": frozenset(
        {
            "alarm_bits",
            "balance_bits",
            "balance_current",
            "capacity_nominal",
            "capacity_remaining",
            "cell_count",
            "cell_voltage_delta",
            "cell_voltage_max",
            "cell_voltage_min",
            "cell_voltages",
            "charge_fet_on",
            "current",
            "cycles",
            "discharge_fet_on",
            "humidity",
            "model",
            "power",
            "production_date",
            "protection_bits",
            "soc",
            "software_version",
            "temperatures",
            "voltage",
        }
    ),
    "litime": frozenset(
        {
            "alarm_bits",
            "battery_current",
            "battery_temperature",
            "battery_voltage",
            "charge_power",
            "charge_state",
            "charge_state_code",
            "consumed_today",
            "consumed_total",
            "controller_temperature",
            "days_running",
            "firmware_version",
            "load_current",
            "load_on",
            "load_power",
            "load_voltage",
            "max_charge_power_today",
            "model",
            "pv_voltage",
            "soc",
            "yield_today",
            "yield_total",
        }
    ),
    "victron-gatt": frozenset(
        {
            "ac_in_active",
            "ac_in_apparent_power",
            "ac_in_current",
            "ac_in_current_limit",
            "ac_in_frequency",
            "ac_in_power",
            "ac_in_voltage",
            "ac_out_apparent_power",
            "ac_out_current",
            "ac_out_frequency",
            "ac_out_nominal_voltage",
            "ac_out_power",
            "ac_out_rated_power",
            "ac_out_voltage",
            "alarm_bits",
            "automatic_syncs",
            "average_discharge_ah",
            "battery_current",
            "battery_temperature",
            "battery_voltage",
            "capacity_nominal",
            "charge_power",
            "charge_state",
            "charge_state_code",
            "charged_energy",
            "charger_current",
            "charger_max_current",
            "charger_power",
            "charger_voltage",
            "consumed_ah",
            "controller_temperature",
            "cumulative_ah_drawn",
            "current",
            "cycles",
            "dc_ripple_voltage",
            "deepest_discharge_ah",
            "device_mode",
            "device_state",
            "device_state_code",
            "discharged_energy",
            "error_code",
            "full_discharges",
            "high_voltage_alarms",
            "input_voltage",
            "inverter_state_code",
            "last_discharge_ah",
            "load_current",
            "load_power",
            "load_voltage",
            "low_voltage_alarms",
            "max_charge_power_today",
            "max_charge_power_yesterday",
            "max_starter_voltage",
            "max_voltage",
            "min_starter_voltage",
            "min_voltage",
            "mppt_mode",
            "off_reason_bits",
            "output_voltage",
            "power",
            "pv_current",
            "pv_power",
            "pv_voltage",
            "seconds_since_full_charge",
            "soc",
            "starter_voltage",
            "time_to_go",
            "uptime",
            "voltage",
            "warning_bits",
            "yield_system",
            "yield_today",
            "yield_total",
            "yield_yesterday",
        }
    ),
    "vedirect": frozenset(
        {
            "ac_out_apparent_power",
            "ac_out_current",
            "ac_out_voltage",
            "alarm_bits",
            "alarm_on",
            "automatic_syncs",
            "average_discharge_ah",
            "battery_current",
            "battery_temperature",
            "battery_voltage",
            "charge_power",
            "charge_state",
            "charge_state_code",
            "charged_energy",
            "consumed_ah",
            "cumulative_ah_drawn",
            "current",
            "cycles",
            "day_sequence",
            "deepest_discharge_ah",
            "device_mode",
            "device_state_code",
            "discharged_energy",
            "error_code",
            "firmware",
            "full_discharges",
            "high_voltage_alarms",
            "last_discharge_ah",
            "load_current",
            "load_on",
            "low_voltage_alarms",
            "max_charge_power_today",
            "max_charge_power_yesterday",
            "max_starter_voltage",
            "max_voltage",
            "midpoint_deviation",
            "midpoint_voltage",
            "min_starter_voltage",
            "min_voltage",
            "model",
            "mppt_mode",
            "off_reason_bits",
            "power",
            "product_id",
            "pv_power",
            "pv_voltage",
            "relay_on",
            "seconds_since_full_charge",
            "serial",
            "soc",
            "starter_voltage",
            "time_to_go",
            "voltage",
            "warning_bits",
            "yield_today",
            "yield_total",
            "yield_yesterday",
        }
    ),
    "victron-advert": frozenset(
        {
            "ac_in_current",
            "ac_in_power",
            "ac_in_state",
            "ac_in_state_code",
            "ac_out_apparent_power",
            "ac_out_current",
            "ac_out_power",
            "ac_out_voltage",
            "alarm_bits",
            "alarm_level",
            "alarm_level_code",
            "balancer_state",
            "balancer_state_code",
            "battery_current",
            "battery_current_2",
            "battery_current_3",
            "battery_power",
            "battery_temperature",
            "battery_voltage",
            "battery_voltage_2",
            "battery_voltage_3",
            "bms_bits",
            "cell_voltages",
            "charge_power",
            "charge_state",
            "charge_state_code",
            "consumed_ah",
            "current",
            "dc_power",
            "device_state",
            "device_state_code",
            "error_bits",
            "error_code",
            "input_current",
            "input_voltage",
            "io_bits",
            "load_current",
            "midpoint_voltage",
            "model",
            "monitor_mode",
            "monitor_mode_code",
            "off_reason_bits",
            "output_current",
            "output_state",
            "output_state_code",
            "output_voltage",
            "power",
            "product_id",
            "pv_power",
            "soc",
            "starter_voltage",
            "temperature",
            "time_to_go",
            "uptime",
            "voltage",
            "warning_bits",
            "yield_today",
        }
    ),
    "venus": frozenset(
        {
            "ac_in_power",
            "ac_in_voltage",
            "ac_out_current",
            "ac_out_power",
            "ac_out_voltage",
            "battery_current",
            "battery_power",
            "battery_temperature",
            "battery_voltage",
            "charge_power",
            "charge_state_code",
            "consumed_ah",
            "current",
            "cycles",
            "device_mode",
            "device_state_code",
            "error_code",
            "load_current",
            "load_on",
            "max_charge_power_today",
            "midpoint_voltage",
            "power",
            "pv_power",
            "pv_voltage",
            "soc",
            "starter_voltage",
            "time_to_go",
            "voltage",
            "yield_today",
            "yield_total",
        }
    ),
    "bank": frozenset(
        {
            "capacity_nominal",
            "capacity_remaining",
            "cell_voltage_delta",
            "cell_voltage_max",
            "cell_voltage_max_cell",
            "cell_voltage_max_pack",
            "cell_voltage_min",
            "cell_voltage_min_cell",
            "cell_voltage_min_pack",
            "current",
            "meter",
            "meter_fresh",
            "model",
            "packs",
            "packs_fresh",
            "packs_total",
            "partial",
            "power",
            "protection_bits",
            "soc",
            "soc_spread",
            "temperature_max",
            "temperature_min",
            "time_to_full",
            "time_to_go",
            "voltage",
        }
    ),
    "health": frozenset(
        {
            "adapter_recoveries",
            "connected",
            "consecutive_errors",
            "errors_total",
            "last_error",
            "last_reading_ms",
            "poll_latency_ms",
            "reconnects",
            "rssi",
            "skipped_frames",
        }
    ),
}


#: Every quantity by name.
QUANTITIES: dict[str, Quantity] = {q.name: q for q in QUANTITIES_LIST}
if len(QUANTITIES) != len(QUANTITIES_LIST):  # pragma: no cover - a duplicate in the table above
    raise RuntimeError("a quantity is listed twice")


def names(*, type: ValueType | None = None, role: Role | None = None) -> frozenset[str]:
    """The names of the quantities of one value type and/or downsampling role."""
    return frozenset(
        q.name for q in QUANTITIES_LIST if (type is None or q.type == type) and (role is None or q.role == role)
    )


#: The bits of ``protection_bits`` in words, bit 0 first: the display's and the Grafana
#: dashboards' (the bit map is :data:`sunbox.protocols.jbd.PROTECTION_NAMES`).
PROTECTION_BITS: tuple[str, ...] = tuple(
    name.replace("_", " ").replace("afe error", "front-end error").replace("mosfet", "MOSFET")
    for name in PROTECTION_NAMES
)
