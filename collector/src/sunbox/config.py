"""Collector configuration: loaded from YAML and validated once, at the edge.

Errors name the offending key, e.g. ``devices.1.address: not a Bluetooth MAC address``.
See ``docs/configuration.md`` for every key with its default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sunbox.topics import NAME_PATTERN

DEFAULT_PATH = Path("/etc/sunbox/sunbox.yaml")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
#: the device-id rule, shared with the storage writer
DEVICE_ID_PATTERN = NAME_PATTERN  # also a site name (sunbox.topics)


M = TypeVar("M", bound=BaseModel)


def _device_id(value: str) -> str:
    if not DEVICE_ID_PATTERN.match(value):
        raise ValueError("use 1-63 lower-case letters, digits, '-' or '_'")
    return value


def _mac(value: str) -> str:
    if not _MAC.match(value):
        raise ValueError("not a Bluetooth MAC address (AA:BB:CC:DD:EE:FF)")
    return value.upper()


#: a device id as used in MQTT topics and InfluxDB tags
DeviceId = Annotated[str, AfterValidator(_device_id)]
#: a Bluetooth MAC address, normalised to upper case
MacAddress = Annotated[str, AfterValidator(_mac)]


def resolve_secret(value: str | None, path: Path | None) -> str | None:
    """A secret given inline or in a file (the file's content, stripped, wins)."""
    return path.read_text().strip() if path is not None else value


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every offending key."""


class Strict(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(Strict):
    """Broker connection. Anonymous access is not supported: username and password are required."""

    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str
    password: str | None = None
    password_file: Path | None = None
    client_id: str = "sunbox-collector"
    tls: bool = False
    ca_file: Path | None = None
    topic_prefix: str = "sunbox"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password or password_file")
        return self

    def resolved_password(self) -> str:
        """The password, read from ``password_file`` when that is set."""
        password = resolve_secret(self.password, self.password_file)
        assert password is not None
        return password


class TokenConfig(Strict):
    """An InfluxDB API token given inline or in a file (exactly one of the two)."""

    token: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_token(self) -> Self:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("set exactly one of token or token_file")
        return self

    def resolved_token(self) -> str:
        """The token, read from ``token_file`` when that is set."""
        token = resolve_secret(self.token, self.token_file)
        assert token is not None
        return token


class MqttConfig(BrokerConfig):
    """The collector's broker connection and Home Assistant discovery."""

    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    #: keep each reading in the disk queue until ``sunbox store`` reports it stored in
    #: InfluxDB, not only until the broker took it (sunbox.mqtt.publisher); needs a writer
    hold_until_stored: bool = False
    #: send unreported readings again after this long without a report (doubling to 1 h)
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


class QueueConfig(Strict):
    """On-disk queue for readings while the broker is unreachable."""

    path: Path = Path("/var/lib/sunbox/queue.sqlite3")
    max_age_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    max_messages: Annotated[int, Field(ge=100)] = 2_000_000
    #: seconds a reading may wait for the writer in the fresh queue (never synced) before
    #: it is synced to ``path``; 0 syncs every reading as it is taken (an SSD). A pulled
    #: plug loses at most the readings of this many seconds plus one (docs/storage.md)
    sync_after_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    #: the fresh queue's file (the appliance: tmpfs under /run, which outlives a crash of
    #: the collector); None keeps it in memory
    fresh_path: Path | None = None


class BleConfig(Strict):
    """Bluetooth settings shared by every device on one adapter."""

    adapter: str = "hci0"
    backend: Literal["bluez", "bumble"] = "bluez"
    #: bumble HCI transport, e.g. ``tcp-client:127.0.0.1:9001`` (``sunbox sim`` serves one).
    bumble_transport: str = "tcp-client:127.0.0.1:9001"
    scanning_mode: Literal["passive", "active"] = "passive"
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 20.0
    operation_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    disconnect_timeout_s: Annotated[float, Field(gt=0, le=30)] = 5.0
    backoff_initial_s: Annotated[float, Field(gt=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 300.0
    #: a device that was out of reach or busy is retried once heard again, at the
    #: earliest this many seconds after the failure (never later than its backoff)
    advert_retry_floor_s: Annotated[float, Field(ge=0)] = 5.0
    #: consecutive failed connects (across devices) before the adapter is power-cycled
    power_cycle_after: Annotated[int, Field(ge=1)] = 6
    #: ... or this many in a row to devices the scanner has not heard since their link
    #: was last up (BlueZ deaf as well as failing; docs/ble.md)
    power_cycle_after_unheard: Annotated[int, Field(ge=1)] = 2
    power_cycle_min_interval_s: Annotated[float, Field(ge=0)] = 900.0
    #: the privileged helper's socket (``sunbox adapter-recovery serve``): when the D-Bus
    #: power-cycle fails, it power-cycles through the kernel, then rfkill; None = no helper
    recovery_socket: str | None = None
    device_wait_s: Annotated[float, Field(gt=0)] = 30.0


#: Drivers on the VictronConnect GATT protocol: passkey pairing, default 000000.
VICTRON_GATT_DRIVERS = frozenset({"smartsolar", "phoenix"})


class DeviceConfig(Strict):
    """One monitored device."""

    id: DeviceId
    driver: Literal["jbd", "litime", "smartsolar", "phoenix"]
    address: MacAddress
    name: str | None = None
    poll_interval_s: Annotated[float, Field(ge=0.5, le=3600)] = 5.0
    #: consecutive failed polls on an open link before it is dropped
    max_poll_errors: Annotated[int, Field(ge=1)] = 3
    #: JBD FF AA handshake user password (6 characters); None = no handshake
    password: str | None = None
    #: BLE passkey for devices that need pairing (newer JBD firmware; SmartSolar and
    #: Phoenix, default 000000)
    passkey: Annotated[int, Field(ge=0, le=999999)] | None = None
    #: LiTime: allow switching the load output (register 0x0120)
    control: bool = False

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 6 or not value.isascii()):
            raise ValueError("JBD passwords are 6 ASCII characters")
        return value

    @property
    def pairing_passkey(self) -> int | None:
        """The passkey to pair with: the configured one; 000000 for a SmartSolar without one."""
        if self.passkey is None and self.driver in VICTRON_GATT_DRIVERS:
            return 0
        return self.passkey

    @model_validator(mode="after")
    def _driver_options(self) -> DeviceConfig:
        if self.driver != "jbd" and self.password is not None:
            raise ValueError("password applies to the jbd driver only")
        if self.driver == "litime" and self.passkey is not None:
            raise ValueError("passkey applies to the jbd, smartsolar and phoenix drivers only")
        if self.driver != "litime" and self.control:
            raise ValueError("control applies to the litime driver only")
        return self


class VeDirectConfig(Strict):
    """A Victron device on a VE.Direct serial port (BMV/SmartShunt, MPPT, Phoenix)."""

    id: DeviceId
    #: a stable name: /dev/serial/by-id/usb-VictronEnergy_BV_VE_Direct_cable_<serial>-if00-port0
    port: str
    baudrate: int = 19200
    #: at most one reading per this many seconds (the device sends one block per second)
    publish_interval_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    #: reopen the port when no valid block arrived for this long
    silence_timeout_s: Annotated[float, Field(ge=2, le=600)] = 10.0


class VictronAdvertConfig(Strict):
    """A Victron device read from its Instant Readout adverts (no connection)."""

    id: DeviceId
    address: MacAddress
    #: the 16-byte advert key from VictronConnect (Product info > Instant readout details)
    key: str
    #: at most one reading per this many seconds (adverts come about once a second)
    interval_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    #: no advert for this long: the device is reported as not connected
    stale_after_s: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9A-Fa-f]{32}", value):
            raise ValueError("the advert key is 32 hex digits (16 bytes)")
        return value.lower()


class VenusConfig(Strict):
    """A Venus OS GX device read over its MQTT broker."""

    #: prefix of the device ids: <id>-<service>-<instance>, e.g. gx-solarcharger-279
    id: DeviceId
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    client_id: str = "sunbox-venus"
    #: found from N/+/system/0/Serial when not given
    portal_id: str | None = None
    keepalive_interval_s: Annotated[float, Field(gt=0, lt=60)] = 30.0
    publish_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    #: Venus OS 3.20 and later; set false for older versions
    suppress_republish: bool = True

    def resolved_password(self) -> str:
        """The password, read from ``password_file`` when that is set ("" when neither is)."""
        return resolve_secret(self.password, self.password_file) or ""


class CsvConfig(Strict):
    """Optional CSV files of every reading (one per device and UTC day)."""

    enabled: bool = False
    directory: Path = Path("/var/lib/sunbox/csv")
    #: delete files older than this many days; 0 keeps them forever
    keep_days: Annotated[int, Field(ge=0)] = 0


class BankConfig(Strict):
    """Parallel packs read as one battery (:mod:`sunbox.banks`, ``docs/banks.md``).

    ``packs`` are the bank's battery devices (JBD BMS, or a Victron battery read over
    VE.Direct, Instant Readout or Venus OS); ``meter``, when given, is the battery monitor
    (BMV, SmartShunt, Lynx, a Venus OS battery) whose current, power and SOC are the
    bank's.
    """

    id: DeviceId
    name: str | None = None
    packs: Annotated[list[DeviceId], Field(min_length=1)]
    meter: DeviceId | None = None
    #: seconds between two readings of the bank
    interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    #: a member with no reading for this long is not counted (the bank says "1 of 2")
    stale_after_s: Annotated[float, Field(gt=0, le=86400)] = 60.0


#: Drivers whose devices are charge controllers or inverters, never a bank's pack or meter.
NOT_A_BATTERY_DRIVERS = frozenset({"litime", "smartsolar", "phoenix"})


class Config(Strict):
    """The whole collector configuration (``/etc/sunbox/sunbox.yaml``)."""

    mqtt: MqttConfig
    queue: QueueConfig = QueueConfig()
    ble: BleConfig = BleConfig()
    devices: list[DeviceConfig] = []
    vedirect: list[VeDirectConfig] = []
    victron_adverts: list[VictronAdvertConfig] = []
    venus: list[VenusConfig] = []
    csv: CsvConfig = CsvConfig()
    banks: list[BankConfig] = []
    health_interval_s: Annotated[float, Field(ge=1)] = 30.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique(self) -> Config:
        seen: set[str] = set()
        ids = [d.id for d in self.devices] + [d.id for d in self.vedirect]
        ids += [d.id for d in self.victron_adverts] + [d.id for d in self.venus]
        for device_id in ids:
            if device_id in seen:
                raise ValueError(f"device id {device_id!r} is used twice")
            seen.add(device_id)
        for i, bank in enumerate(self.banks):
            if bank.id in seen:
                raise ValueError(f"banks.{i}.id: {bank.id!r} is already a device or bank id")
            seen.add(bank.id)
        self._check_banks()
        return self

    def _check_banks(self) -> None:
        """Each pack and meter is a configured battery device, in one bank only."""
        drivers = {d.id: d.driver for d in self.devices}
        monitors = {d.id for d in self.vedirect} | {d.id for d in self.victron_adverts}
        venus_batteries = tuple(f"{v.id}-battery-" for v in self.venus)
        owner: dict[str, str] = {}
        for i, bank in enumerate(self.banks):
            members = [(f"banks.{i}.packs.{j}", pack) for j, pack in enumerate(bank.packs)]
            if bank.meter is not None:
                members.append((f"banks.{i}.meter", bank.meter))
            for key, member in members:
                if member in owner:
                    raise ValueError(f"{key}: {member!r} is already in {owner[member]}")
                owner[member] = key
                driver = drivers.get(member)
                if driver is None and member not in monitors and not member.startswith(venus_batteries):
                    raise ValueError(
                        f"{key}: unknown device {member!r} (not in devices, vedirect or victron_adverts, "
                        "nor a Venus OS battery <venus id>-battery-<instance>)"
                    )
                if driver in NOT_A_BATTERY_DRIVERS:
                    raise ValueError(f"{key}: {member!r} is a {driver} charger or inverter, not a battery")
                if key.endswith(".meter") and driver == "jbd":
                    raise ValueError(
                        f"{key}: {member!r} is a JBD BMS, a pack; a meter is a battery monitor "
                        "(BMV, SmartShunt, Lynx, a Venus OS battery)"
                    )


def check_runtime(config: Config) -> str | None:
    """What the valid configuration still lacks to run, naming the key, or None.

    The secret files must be readable (a missing one would make the service crash-loop),
    and there must be something to read.
    """
    secrets: list[tuple[str, Path | None]] = [("mqtt.password_file", config.mqtt.password_file)]
    secrets += [(f"venus.{i}.password_file", v.password_file) for i, v in enumerate(config.venus)]
    for key, path in secrets:
        if path is None:
            continue
        try:
            path.read_text()
        except OSError as exc:
            return f"{key}: cannot read {path}: {exc.strerror}"
    if not (config.devices or config.vedirect or config.victron_adverts or config.venus):
        return "devices: nothing to read (devices, vedirect, victron_adverts and venus are all empty)"
    return None


_KEYED = re.compile(r"^[a-z_]+(\.[a-z0-9_]+)*: ")


def format_validation_error(error: ValidationError) -> str:
    """One line naming every offending key, e.g. ``devices.1.address: not a MAC``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        if not item["loc"] and _KEYED.match(message):  # a check across keys names its own key
            lines.append(message)
            continue
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse(data: Any) -> Config:
    """Validate an already-loaded mapping.

    Raises:
        ConfigError: naming every offending key.
    """
    return validate(Config, data)


def read_yaml(path: Path) -> Any:
    """Load a YAML file.

    Raises:
        ConfigError: unreadable file or YAML syntax error.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from None


def validate(model: type[M], data: Any) -> M:
    """Validate a loaded mapping against a configuration model.

    Raises:
        ConfigError: naming every offending key.
    """
    if not isinstance(data, dict):
        raise ConfigError("(top level): the configuration must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load(path: Path) -> Config:
    """Read and validate the collector's YAML configuration file.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid keys.
    """
    return parse(read_yaml(path))
