"""Victron VREG registers: number, type, scale and unit, and their data-model names per family.

Pure data and pure functions, no I/O. Every fact here (register number, CBOR-carried
type, scale, unit and "not available" value) is from Victron's own register list,
``victronenergy/gui-v2`` ``velib/inc/velib/ve_regs.h`` (the ``VE_REG_*`` name is kept
in :attr:`Register.label`, so each entry can be checked against that file). The same
numbers are used by the VE.Direct HEX protocol and the VictronConnect GATT protocol
(:mod:`sunbox.protocols.vreg`); values travel little-endian.

The data-model name of a register depends on the device family: DC channel 1 is the
battery of a solar charger (``battery_voltage``) but the measured battery itself on a
battery monitor (``voltage``). :data:`FAMILIES` maps, per family, the registers a
driver reads to their names (``docs/data-model.md`` is the one list of names and
units); :data:`REGISTERS` gives every known register a default name for
``sunbox decode vreg``.

A register Sunbox does not know is not lost: :func:`decode_unknown` gives its value as
an unsigned little-endian integer next to the raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FrameError


@dataclass(frozen=True, slots=True)
class Register:
    """One VREG as ``ve_regs.h`` defines it.

    ``value = raw * scale + offset`` in ``unit``, where ``raw`` is the little-endian
    integer of one of ``lengths`` bytes (signed when ``signed``). A raw value equal to
    ``not_available`` (the all-ones pattern of that length for unsigned types, the
    largest positive value for signed ones) means "not available" and decodes to None.
    ``bits`` registers are bitmasks, published as non-negative integers.
    """

    vreg: int
    label: str
    name: str
    lengths: tuple[int, ...]
    signed: bool = False
    scale: float = 1.0
    unit: str = ""
    offset: float = 0.0
    has_not_available: bool = False
    bits: bool = False
    negate: bool = False

    def not_available(self, length: int) -> int:
        """The "not available" raw value for a payload of ``length`` bytes."""
        return (1 << (8 * length - 1)) - 1 if self.signed else (1 << (8 * length)) - 1

    def decode(self, raw: bytes) -> float | int | None:
        """The value of ``raw`` in :attr:`unit`, or None when "not available".

        Raises:
            FrameError: ``raw`` is not one of :attr:`lengths` bytes long.
        """
        if len(raw) not in self.lengths:
            expected = " or ".join(str(n) for n in self.lengths)
            raise FrameError(f"VREG 0x{self.vreg:04X} ({self.label}): expected {expected} bytes, got {len(raw)}")
        number = int.from_bytes(raw, "little", signed=self.signed)
        if self.has_not_available and number == self.not_available(len(raw)):
            return None
        if self.bits:
            return number
        if self.scale == 1.0 and self.offset == 0.0 and not self.negate:
            return number
        value = round(number * self.scale + self.offset, 6)
        return -value if self.negate else value


def _reg(
    vreg: int,
    label: str,
    name: str,
    kind: str,
    scale: float = 1.0,
    unit: str = "",
    *,
    na: bool = False,
    offset: float = 0.0,
    negate: bool = False,
) -> Register:
    """Shorthand: ``kind`` is the ve_regs.h type: un8, un16, sn16, un32, sn32, un16|un32, bits8..."""
    signed = kind.startswith("sn")
    lengths = {
        "un8": (1,),
        "un16": (2,),
        "sn16": (2,),
        "un32": (4,),
        "sn32": (4,),
        "un16|un32": (2, 4),
        "bits8": (1,),
        "bits16": (2,),
        "bits32": (4,),
    }[kind]
    return Register(
        vreg=vreg,
        label=label,
        name=name,
        lengths=lengths,
        signed=signed,
        scale=scale,
        unit=unit,
        bits=kind.startswith("bits"),
        has_not_available=na,
        offset=offset,
        negate=negate,
    )


#: Every register Sunbox decodes, from ``ve_regs.h``; ``name`` is the default
#: data-model name (the one a solar charger, inverter or Multi uses).
REGISTERS: dict[int, Register] = {
    r.vreg: r
    for r in (
        # product (all families)
        _reg(0x0120, "VE_REG_UPTIME", "uptime", "un32", 1, "s"),
        _reg(0x0200, "VE_REG_DEVICE_MODE", "device_mode", "un8"),
        _reg(0x0201, "VE_REG_DEVICE_STATE", "device_state_code", "un8", na=True),
        _reg(0x0205, "VE_REG_DEVICE_OFF_REASON", "off_reason_bits", "bits8"),
        _reg(0x0207, "VE_REG_DEVICE_OFF_REASON_2", "off_reason_bits", "bits32"),
        _reg(0x0209, "VE_REG_INVERTER_STATE", "inverter_state_code", "un8", na=True),
        _reg(0x020A, "VE_REG_CHARGE_STATE", "charge_state_code", "un8", na=True),
        # AC input (Multi/Quattro)
        _reg(0x0203, "VE_REG_AC_IN_CURRENT_LIMIT", "ac_in_current_limit", "un16", 0.1, "A", na=True),
        _reg(0x0204, "VE_REG_AC_IN_ACTIVE", "ac_in_active", "un8"),
        _reg(0x0233, "VE_REG_AC_ACTIVE_INPUT_L1_VOLTAGE", "ac_in_voltage", "sn16", 0.01, "V", na=True),
        _reg(0x0234, "VE_REG_AC_ACTIVE_INPUT_L1_CURRENT", "ac_in_current", "sn16", 0.01, "A", na=True),
        _reg(0x0235, "VE_REG_AC_ACTIVE_INPUT_L1_APPARENT_POWER", "ac_in_apparent_power", "sn32", 1, "VA", na=True),
        _reg(0x0236, "VE_REG_AC_ACTIVE_INPUT_L1_POWER", "ac_in_power", "sn32", 1, "W", na=True),
        _reg(0x0237, "VE_REG_AC_ACTIVE_INPUT_L1_FREQUENCY", "ac_in_frequency", "un16", 0.01, "Hz", na=True),
        # battery monitor history (BMV H1..H18); discharges are negative in Victron's sign
        _reg(0x0300, "VE_REG_HIST_DEEPEST_DISCHARGE", "deepest_discharge_ah", "sn32", 0.1, "Ah", negate=True),
        _reg(0x0301, "VE_REG_HIST_LAST_DISCHARGE", "last_discharge_ah", "sn32", 0.1, "Ah", negate=True),
        _reg(0x0302, "VE_REG_HIST_AVERAGE_DISCHARGE", "average_discharge_ah", "sn32", 0.1, "Ah", negate=True),
        _reg(0x0303, "VE_REG_HIST_NR_OF_CHARGE_CYCLES", "cycles", "sn32"),
        _reg(0x0304, "VE_REG_HIST_NR_OF_FULL_DISCHARGES", "full_discharges", "sn32"),
        _reg(0x0305, "VE_REG_HIST_CUMULATIVE_AH", "cumulative_ah_drawn", "sn32", 0.1, "Ah", negate=True),
        _reg(0x0306, "VE_REG_HIST_MIN_VOLTAGE", "min_voltage", "sn32", 0.01, "V"),
        _reg(0x0307, "VE_REG_HIST_MAX_VOLTAGE", "max_voltage", "sn32", 0.01, "V"),
        _reg(0x0308, "VE_REG_HIST_SECS_SINCE_LAST_FULL_CHARGE", "seconds_since_full_charge", "sn32", 1, "s"),
        _reg(0x0309, "VE_REG_HIST_NR_OF_AUTO_SYNCS", "automatic_syncs", "sn32"),
        _reg(0x030A, "VE_REG_HIST_NR_OF_LOW_VOLTAGE_ALARMS", "low_voltage_alarms", "sn32"),
        _reg(0x030B, "VE_REG_HIST_NR_OF_HIGH_VOLTAGE_ALARMS", "high_voltage_alarms", "sn32"),
        _reg(0x030E, "VE_REG_HIST_MIN_VOLTAGE_2", "min_starter_voltage", "sn32", 0.01, "V"),
        _reg(0x030F, "VE_REG_HIST_MAX_VOLTAGE_2", "max_starter_voltage", "sn32", 0.01, "V"),
        _reg(0x0310, "VE_REG_HIST_KWH_OUT", "discharged_energy", "un32", 10.0, "Wh"),  # 0.01 kWh
        _reg(0x0311, "VE_REG_HIST_KWH_IN", "charged_energy", "un32", 10.0, "Wh"),
        _reg(0x031C, "VE_REG_WARNING_REASON", "warning_bits", "bits16"),
        _reg(0x031E, "VE_REG_ALARM_REASON", "alarm_bits", "bits16"),
        # battery monitor state
        _reg(0x0FFC, "VE_REG_CONSUMED_AH", "consumed_ah", "sn32", 0.1, "Ah", negate=True),
        _reg(0x0FFE, "VE_REG_TTG", "time_to_go", "un16", 60.0, "s", na=True),  # minutes
        _reg(0x0FFF, "VE_REG_SOC", "soc", "un16", 0.01, "%", na=True),
        _reg(0x1000, "VE_REG_BATTERY_CAPACITY", "capacity_nominal", "un16", 1, "Ah"),
        # inverter AC output (Phoenix, Multi/Quattro)
        _reg(0x2200, "VE_REG_AC_OUT_VOLTAGE", "ac_out_voltage", "sn16", 0.01, "V"),
        _reg(0x2201, "VE_REG_AC_OUT_CURRENT", "ac_out_current", "sn16", 0.1, "A"),
        _reg(0x2202, "VE_REG_AC_OUT_NOM_VOLTAGE", "ac_out_nominal_voltage", "un8", 1, "V"),
        _reg(0x2203, "VE_REG_AC_OUT_RATED_POWER", "ac_out_rated_power", "sn16", 1, "W"),
        _reg(0x2204, "VE_REG_AC_OUT_REAL_POWER", "ac_out_power", "sn32", 1, "W"),
        _reg(0x2205, "VE_REG_AC_OUT_APPARENT_POWER", "ac_out_apparent_power", "sn32", 1, "VA"),
        _reg(0x2208, "VE_REG_AC_OUTPUT_FREQUENCY", "ac_out_frequency", "un16", 0.01, "Hz"),
        # DC channels (battery side of every family)
        _reg(0xED7D, "VE_REG_DC_CHANNEL2_VOLTAGE", "starter_voltage", "sn16", 0.01, "V", na=True),
        _reg(0xED8B, "VE_REG_DC_CHANNEL1_RIPPLE_VOLTAGE", "dc_ripple_voltage", "un16", 0.001, "V", na=True),
        _reg(0xED8C, "VE_REG_DC_CHANNEL1_CURRENT_MA", "battery_current", "sn32", 0.001, "A", na=True),
        _reg(0xED8D, "VE_REG_DC_CHANNEL1_VOLTAGE", "battery_voltage", "sn16", 0.01, "V", na=True),
        _reg(0xED8E, "VE_REG_DC_CHANNEL1_POWER", "charge_power", "sn16", 1, "W", na=True),
        _reg(0xED8F, "VE_REG_DC_CHANNEL1_CURRENT", "battery_current", "sn16", 0.1, "A", na=True),
        # solar charger (and the input side of an Orion DC-DC)
        _reg(0xEDA9, "VE_REG_DC_OUTPUT_VOLTAGE", "load_voltage", "un16", 0.01, "V", na=True),
        _reg(0xEDAA, "VE_REG_DC_OUTPUT_POWER", "load_power", "un16", 1, "W", na=True),
        _reg(0xEDAD, "VE_REG_DC_OUTPUT_CURRENT", "load_current", "un16", 0.1, "A", na=True),
        _reg(0xEDB3, "VE_REG_DC_INPUT_MPP_MODE", "mppt_mode", "un8", na=True),
        _reg(0xEDBB, "VE_REG_DC_INPUT_VOLTAGE", "pv_voltage", "un16", 0.01, "V", na=True),
        _reg(0xEDBC, "VE_REG_DC_INPUT_POWER", "pv_power", "un32", 0.01, "W", na=True),
        _reg(0xEDBD, "VE_REG_DC_INPUT_CURRENT", "pv_current", "un16", 0.1, "A", na=True),
        _reg(0xEDD0, "VE_REG_CHR_YESTERDAY_PMAX", "max_charge_power_yesterday", "un16|un32", 1, "W"),
        _reg(0xEDD1, "VE_REG_CHR_YESTERDAY_YIELD", "yield_yesterday", "un16|un32", 10.0, "Wh"),  # 0.01 kWh
        _reg(0xEDD2, "VE_REG_CHR_TODAY_PMAX", "max_charge_power_today", "un16|un32", 1, "W"),
        _reg(0xEDD3, "VE_REG_CHR_TODAY_YIELD", "yield_today", "un16|un32", 10.0, "Wh"),
        _reg(0xEDD5, "VE_REG_CHR_VOLTAGE", "charger_voltage", "un16", 0.01, "V", na=True),
        _reg(0xEDD6, "VE_REG_CHR_POWER", "charger_power", "un16", 1, "W", na=True),
        _reg(0xEDD7, "VE_REG_CHR_CURRENT", "charger_current", "sn16", 0.1, "A", na=True),
        _reg(0xEDDA, "VE_REG_CHR_ERROR_CODE", "error_code", "un8"),
        _reg(0xEDDB, "VE_REG_CHR_TEMPERATURE", "controller_temperature", "sn16", 0.01, "degC", na=True),
        _reg(0xEDDC, "VE_REG_CHR_USER_YIELD", "yield_total", "un32", 10.0, "Wh", na=True),
        _reg(0xEDDD, "VE_REG_CHR_SYSTEM_YIELD", "yield_system", "un32", 10.0, "Wh", na=True),
        _reg(0xEDDF, "VE_REG_CHR_MAX_CURRENT", "charger_max_current", "un16", 0.1, "A", na=True),
        _reg(0xEDEC, "VE_REG_BAT_TEMPERATURE", "battery_temperature", "un16", 0.01, "degC", offset=-273.15, na=True),
    )
}

#: Per device family: the registers a driver reads, each with its data-model name.
FAMILIES: dict[str, dict[int, str]] = {
    # SmartSolar / BlueSolar MPPT (kind "charger")
    "solar_charger": {
        v: REGISTERS[v].name
        for v in (
            0xED8D,
            0xED8F,
            0xED8E,
            0xEDBB,
            0xEDBC,
            0xEDBD,
            0xEDAD,
            0xEDB3,
            0xEDD3,
            0xEDD2,
            0xEDD1,
            0xEDD0,
            0xEDDC,
            0xEDDA,
            0xEDDB,
            0xEDEC,
            0x0120,
        )
    }
    | {0x0201: "charge_state_code"},
    # Phoenix inverter (kind "inverter")
    "inverter": {
        v: REGISTERS[v].name
        for v in (
            0xED8D,
            0x2200,
            0x2201,
            0x2204,
            0x2205,
            0x2208,
            0x2202,
            0x2203,
            0x0200,
            0x0201,
            0x031C,
            0x031E,
            0x0207,
            0x0120,
        )
    },
    # Multi/Quattro inverter/charger (kind "inverter")
    "multi": {
        v: REGISTERS[v].name
        for v in (
            0xED8D,
            0xED8F,
            0x2200,
            0x2201,
            0x2204,
            0x2205,
            0x2208,
            0x0233,
            0x0234,
            0x0235,
            0x0236,
            0x0237,
            0x0203,
            0x0204,
            0x0200,
            0x0201,
            0x0209,
            0x020A,
            0x031C,
            0x031E,
        )
    },
    # Phoenix Smart / Blue Smart AC charger (kind "charger")
    "ac_charger": {
        0xED8D: "battery_voltage",
        0xED8F: "battery_current",
        0xEDD5: "charger_voltage",
        0xEDD7: "charger_current",
        0xEDD6: "charger_power",
        0xEDDF: "charger_max_current",
        0xEDDA: "error_code",
        0xEDDB: "controller_temperature",
        0xEDEC: "battery_temperature",
        0x0201: "charge_state_code",
        0x0200: "device_mode",
        0x0205: "off_reason_bits",
    },
    # Orion Smart DC-DC (kind "dcdc"): DC input is the source, DC channel 1 the output
    "dcdc": {
        0xEDBB: "input_voltage",
        0xED8D: "output_voltage",
        0xEDDB: "controller_temperature",
        0xEDDA: "error_code",
        0x0201: "device_state_code",
        0x0207: "off_reason_bits",
        0x0120: "uptime",
    },
    # BMV / SmartShunt (kind "battery"): DC channel 1 is the battery itself
    "battery_monitor": {
        0xED8D: "voltage",
        0xED8C: "current",
        0xED8E: "power",
        0xED7D: "starter_voltage",
        0xEDEC: "battery_temperature",
        0x0FFF: "soc",
        0x0FFE: "time_to_go",
        0x0FFC: "consumed_ah",
        0x1000: "capacity_nominal",
        0x031E: "alarm_bits",
        0x0300: "deepest_discharge_ah",
        0x0301: "last_discharge_ah",
        0x0302: "average_discharge_ah",
        0x0303: "cycles",
        0x0304: "full_discharges",
        0x0305: "cumulative_ah_drawn",
        0x0306: "min_voltage",
        0x0307: "max_voltage",
        0x0308: "seconds_since_full_charge",
        0x0310: "discharged_energy",
        0x0311: "charged_energy",
    },
}


#: The reading kind (``docs/data-model.md``) of each family.
FAMILY_KINDS: dict[str, str] = {
    "solar_charger": "charger",
    "inverter": "inverter",
    "multi": "inverter",
    "ac_charger": "charger",
    "dcdc": "dcdc",
    "battery_monitor": "battery",
}


def decode_unknown(raw: bytes) -> int:
    """A register Sunbox does not know: its bytes as an unsigned little-endian integer."""
    return int.from_bytes(raw, "little")
