"""Alarm rules: what the owner configures, validated once at start (issue 32).

A rule watches one quantity of the data model (``sunbox.quantities``) on one device or
bank, or on every device of some kinds, or watches a device going silent::

    - id: soc-low                  # [a-z0-9][a-z0-9_-]*, unique
      quantity: soc                # a data-model name (or temperature_min/_max of a pack)
      below: 20                    # or above:
      clear_at: 25                 # hysteresis: cleared once past this (default: the threshold)
      for_s: 120                   # raised only when true this long (no alarm from one reading)
      while: {quantity: current, above: 0.5}   # optional second condition, same reading
      device: house                # or kinds: [battery, bank] (default: every kind that sends it)
      severity: warning            # or alarm
    - id: mppt-silent
      stale_for_s: 600             # no reading for this long
      device: mppt

The defaults (:data:`DEFAULT_RULES`, each one off with ``defaults: {<id>: false}``) are
the LiFePO4 owner's minimum: low SOC, cells out of their limits, a 0 V cell (a broken
sense lead or a dead cell), charging below freezing, a BMS protection, a device silent
for ten minutes; and the appliance's own: collector, broker, writer or InfluxDB down, the
card read-only or almost full, the last good backup too old (:mod:`sunbox.alarms.system`).
Their numbers and sources are in ``docs/alarms.md``.

Errors name the offending key, e.g. ``rules.2.quantity: unknown quantity 'sco'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from sunbox.config import BrokerConfig, DeviceId, Strict
from sunbox.quantities import DEVICE_KINDS, QUANTITIES

from .system import DEVICE as SYSTEM_DEVICE
from .system import KIND as SYSTEM_KIND
from .system import SYSTEM_QUANTITIES

Severity = Literal["warning", "alarm"]

#: quantities a rule may name besides the table's scalars: a pack's range of its
#: temperature sensors, as a bank reports it (``temperature_min``/``_max``)
DERIVED = {"temperature_min": ("temperatures", min), "temperature_max": ("temperatures", max)}


def _scalar(name: str) -> str:
    q = QUANTITIES.get(name)
    if name in SYSTEM_QUANTITIES:
        return name
    if name not in DERIVED and (q is None or q.type not in ("number", "flags", "bool")):
        raise ValueError(f"unknown quantity {name!r}: a number, flag word or switch of docs/data-model.md")
    return name


Quantity = Annotated[str, Field(min_length=1)]


class Condition(Strict):
    """``quantity`` above or below a number (a switch counts as 1 on, 0 off)."""

    quantity: Quantity
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_side(self) -> Self:
        _scalar(self.quantity)
        if (self.above is None) == (self.below is None):
            raise ValueError("set exactly one of above or below")
        return self

    def holds(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < self.below  # type: ignore[operator]


class Rule(Strict):
    """One alarm rule (see the module docstring)."""

    id: DeviceId
    quantity: Quantity | None = None
    above: float | None = None
    below: float | None = None
    clear_at: float | None = None
    for_s: Annotated[float, Field(ge=0, le=86400)] = 0.0
    while_: Condition | None = Field(default=None, alias="while")
    stale_for_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    device: str | None = None
    kinds: list[Literal[(*DEVICE_KINDS, SYSTEM_KIND)]] | None = None  # type: ignore[valid-type]
    severity: Severity = "warning"
    #: the words the owner reads; default: the rule's quantity and threshold
    text: Annotated[str, Field(max_length=120)] | None = None

    model_config = Strict.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.stale_for_s is not None:
            if self.quantity is not None or self.while_ is not None:
                raise ValueError("a stale rule (stale_for_s) takes no quantity or while")
            return self
        if self.quantity is None:
            raise ValueError("set quantity (with above or below) or stale_for_s")
        _scalar(self.quantity)
        if (self.above is None) == (self.below is None):
            raise ValueError("set exactly one of above or below")
        condition = Condition.model_construct(quantity=self.quantity, above=self.above, below=self.below)
        if self.clear_at is not None and condition.holds(self.clear_at):
            side = "below" if self.above is not None else "above"
            raise ValueError(f"clear_at {self.clear_at:g} must be at or {side} the threshold")
        return self

    @property
    def condition(self) -> Condition | None:
        """The raising condition (None for a stale rule)."""
        if self.quantity is None:
            return None
        return Condition.model_construct(quantity=self.quantity, above=self.above, below=self.below)

    def cleared_by(self, value: float) -> bool:
        """Whether ``value`` clears a raised alarm (past ``clear_at``, or no longer true)."""
        if self.clear_at is None:
            return not self.condition.holds(value)  # type: ignore[union-attr]
        return value >= self.clear_at if self.below is not None else value <= self.clear_at

    def describe(self) -> str:
        """The rule in words, for a notification and the Alarms page."""
        if self.text:
            return self.text
        if self.stale_for_s is not None:
            return f"no reading for {self.stale_for_s / 60:g} min"
        side = f"above {self.above:g}" if self.above is not None else f"below {self.below:g}"
        name = self.quantity or ""
        q = QUANTITIES.get(name)
        label, unit = (
            (q.label, q.unit) if q else SYSTEM_QUANTITIES.get(name, (name.replace("_", " ").capitalize(), "°C"))
        )
        return f"{label} {side}{' ' + unit if unit else ''}"

    def applies_to(self, device: str, kind: str | None) -> bool:
        if self.device is not None:
            return device == self.device
        if self.kinds is not None:
            return kind in self.kinds
        if self.quantity is None:  # a stale rule: every device but the appliance itself
            return kind != SYSTEM_KIND
        if self.quantity in SYSTEM_QUANTITIES:
            return kind == SYSTEM_KIND
        q = QUANTITIES.get(self.quantity)
        return kind in (q.kinds if q else {"battery", "bank"})


def _rule(**kw: object) -> Rule:
    return Rule.model_validate(kw)


#: The rules in force unless switched off (``defaults: {<id>: false}``). LiFePO4 limits:
#: docs/alarms.md gives each number's source.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule(id="soc-low", quantity="soc", below=20, clear_at=25, for_s=120, kinds=["battery", "bank"],
          text="battery low"),
    _rule(id="cell-low", quantity="cell_voltage_min", below=2.8, clear_at=3.0, for_s=10, severity="alarm",
          text="a cell below 2.8 V"),
    _rule(id="cell-high", quantity="cell_voltage_max", above=3.65, clear_at=3.45, for_s=10, severity="alarm",
          text="a cell above 3.65 V"),
    _rule(id="cell-spread", quantity="cell_voltage_delta", above=0.3, clear_at=0.15, for_s=300,
          text="cells out of balance (over 0.3 V apart)"),
    _rule(id="cell-fault", quantity="cell_voltage_min", below=0.5, clear_at=2.0, severity="alarm",
          text="a cell reads 0 V: broken sense lead or dead cell"),
    _rule(id="cold-charge", quantity="temperature_min", below=0, clear_at=2, for_s=30,
          **{"while": {"quantity": "current", "above": 0.5}}, kinds=["battery", "bank"], severity="alarm",
          text="charging below 0 °C"),
    _rule(id="bms-protection", quantity="protection_bits", above=0, kinds=["battery", "bank"], severity="alarm",
          text="BMS protection active"),
    _rule(id="discharge-off", quantity="discharge_fet_on", below=1, for_s=30, kinds=["battery"], severity="alarm",
          text="discharging switched off in the BMS: no power to the loads"),
    _rule(id="charge-off", quantity="charge_fet_on", below=1, for_s=300, kinds=["battery"],
          text="charging switched off in the BMS"),
    _rule(id="offline", stale_for_s=600, text="no reading for 10 min"),
    # the appliance itself (sunbox.alarms.system): what stops the readings or the history
    _rule(id="collector-down", quantity="collector_online", below=1, for_s=120, severity="alarm",
          text="the collector has stopped: nothing is read"),
    _rule(id="broker-down", quantity="broker_connected", below=1, for_s=120, severity="alarm",
          text="the broker is unreachable: nothing is published"),
    _rule(id="writer-down", quantity="writer_report_age_s", above=600, clear_at=120, severity="alarm",
          text="the writer stores nothing"),
    _rule(id="storage-down", quantity="storage_up", below=1, for_s=300, severity="alarm",
          text="InfluxDB is not answering: nothing is stored"),
    _rule(id="disk-read-only", quantity="disk_writable", below=1, severity="alarm",
          text="the card is read-only: nothing is stored"),
    _rule(id="disk-low", quantity="disk_free_pct", below=10, clear_at=12, text="the card is almost full"),
    _rule(id="backup-old", quantity="backup_age_h", above=48, clear_at=30, text="no good backup for 2 days"),
)  # fmt: skip


class NotifyConfig(Strict):
    """Where notifications go: Apprise URLs, one per line, in a file the vault fills."""

    #: Apprise URLs (ntfy://, tgram://, mailto://, json://, ...), one per line; ``#`` comments
    urls_file: Path | None = None
    #: alarms raised within this many seconds of each other go out as one digest
    digest_s: Annotated[float, Field(ge=0, le=3600)] = 20.0
    #: a failed delivery is retried after this long, doubling up to ``retry_max_s``
    retry_first_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    retry_max_s: Annotated[float, Field(gt=0, le=86400)] = 1800.0
    #: send a notification when an alarm clears, too
    on_clear: bool = True

    def urls(self) -> list[str]:
        """The configured URLs (none without a file).

        Raises:
            OSError: the file cannot be read.
        """
        if self.urls_file is None:
            return []
        lines = self.urls_file.read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


class SystemConfig(Strict):
    """Where the service looks at the appliance itself (sunbox.alarms.system); None: not looked at."""

    #: InfluxDB, asked ``/health`` (no token needed)
    influx_url: str | None = "http://localhost:8086"
    #: a path on the card that holds the history
    disk_path: str | None = "/var/lib/influxdb"
    #: seconds between looks (and between observations of the ``sunbox`` device)
    check_s: Annotated[float, Field(ge=1, le=3600)] = 30.0


class AlarmsMqttConfig(BrokerConfig):
    """The alarms service's broker account: reads every reading, writes ``<prefix>/_alarms/#``."""

    client_id: str = "sunbox-alarms"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


class AlarmsConfig(Strict):
    """The whole ``sunbox alarms`` configuration (``/etc/sunbox/alarms.yaml``)."""

    mqtt: AlarmsMqttConfig
    rules: list[Rule] = Field(default_factory=list)
    #: default rules switched on (true) or off (false) by id
    defaults: dict[str, bool] = Field(default_factory=dict)
    notify: NotifyConfig = NotifyConfig()
    system: SystemConfig = SystemConfig()
    #: the alarms' state (raised, acknowledged), rewritten on each change only
    state_path: Path = Path("/var/lib/sunbox/alarms/state.json")
    #: the notifications not yet delivered (SQLite)
    outbox_path: Path = Path("/var/lib/sunbox/alarms/outbox.sqlite3")
    #: device and bank ids the collector reads (the role fills it): a rule's ``device``
    #: must be one of them; empty = not checked
    devices: list[str] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check(self) -> Self:
        known = {r.id for r in DEFAULT_RULES}
        for rule_id in self.defaults:
            if rule_id not in known:
                raise ValueError(f"defaults.{rule_id}: not a default rule ({', '.join(sorted(known))})")
        seen = {r.id for r in self.active_defaults()}
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(f"rules.{i}.id: {rule.id!r} is already a rule (switch a default off to replace it)")
            seen.add(rule.id)
            if self.devices and rule.device not in (None, SYSTEM_DEVICE, *self.devices):
                raise ValueError(f"rules.{i}.device: unknown device {rule.device!r}")
        return self

    def active_defaults(self) -> list[Rule]:
        return [r for r in DEFAULT_RULES if self.defaults.get(r.id, True)]

    def all_rules(self) -> list[Rule]:
        """The defaults in force, then the owner's rules."""
        return self.active_defaults() + list(self.rules)
