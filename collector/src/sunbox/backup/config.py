"""Configuration of ``sunbox backup`` (``/etc/sunbox/backup.yaml``), validated once at start.

Errors name the offending key. Every key with its default is listed in
``docs/configuration.md``; what a backup holds and how to restore it is in
``docs/backup.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from sunbox.config import BrokerConfig, Strict, TokenConfig, read_yaml, validate

DEFAULT_PATH = Path("/etc/sunbox/backup.yaml")


class BackupInfluxConfig(TokenConfig):
    """InfluxDB, with its operator token: its backup API answers no lesser token."""

    url: str = "http://localhost:8086"
    #: longest wait for one chunk of an answer, seconds
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 600.0


class BackupMqttConfig(BrokerConfig):
    """Where the last run's state is published (``sunbox/backup/state``, retained) and
    announced to Home Assistant (sunbox.backup.announce)."""

    client_id: str = "sunbox-backup"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


class BackupConfig(Strict):
    """The whole ``sunbox backup`` configuration."""

    influx: BackupInfluxConfig
    #: the directory that receives the generations: a USB stick's mount point, a LAN
    #: share, or any local directory
    target: Path
    #: refuse to write unless ``target`` is a mount point (a USB stick that is not
    #: plugged in must not fill the SD card instead)
    require_mount: bool = True
    #: complete generations kept; older ones are deleted after a new one is verified
    generations: Annotated[int, Field(ge=1, le=365)] = 7
    #: files and directories archived besides InfluxDB (missing ones are skipped)
    include: list[Path] = Field(
        default_factory=lambda: [
            Path("/etc/sunbox"),
            Path("/var/lib/sunbox"),
            Path("/var/lib/sunbox-alarms"),
            Path("/var/lib/bluetooth"),
        ]
    )
    #: names never archived (a live SQLite file is not a consistent copy; the queue only
    #: holds readings on their way into InfluxDB; the alarm outbox's notifications, sent
    #: again from a restored card, would reach the owner twice)
    exclude: list[str] = Field(
        default_factory=lambda: [
            f"{name}.sqlite3{suffix}" for name in ("queue", "outbox") for suffix in ("", "-wal", "-shm")
        ]
    )
    #: the storage layout: every bucket it names must be in a backup for it to verify
    layout: Path | None = Path("/etc/sunbox/storage.yaml")
    #: the last run's result (JSON), read by the display's Health page
    state_file: Path = Path("/var/lib/sunbox-backup/state.json")
    #: publish each run's state on MQTT for Home Assistant; None = only the state file
    mqtt: BackupMqttConfig | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def load(path: Path) -> BackupConfig:
    """Read and validate ``path``.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid keys.
    """
    return validate(BackupConfig, read_yaml(path))
