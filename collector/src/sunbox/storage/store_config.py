"""Configuration of ``sunbox store`` (``/etc/sunbox/store.yaml``), validated once at start.

Errors name the offending key, e.g. ``influx.url: Field required``. Every key with its
default is listed in ``docs/configuration.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from sunbox.config import BrokerConfig, ConfigError, Strict, TokenConfig, read_yaml, validate

DEFAULT_PATH = Path("/etc/sunbox/store.yaml")


class StoreMqttConfig(BrokerConfig):
    """The writer's broker session: persistent (clean start off), so the broker keeps its backlog."""

    client_id: str = "sunbox-store"
    #: how long the broker keeps the session (and its backlog) while the writer is away
    session_expiry_s: Annotated[int, Field(ge=60, le=4_294_967_294)] = 7 * 24 * 3600
    #: unacknowledged messages the broker may have in flight to the writer (MQTT 5
    #: Receive Maximum); at least one batch, so batches fill up
    receive_maximum: Annotated[int, Field(ge=10, le=65535)] = 20_000
    dead_letter_topic: str = "sunbox/deadletter"
    #: after each write, report on ``<prefix>/_store/stored`` what InfluxDB now holds, so
    #: collectors holding readings until stored can let them go (sunbox.mqtt.publisher)
    report_stored: bool = True


class InfluxConfig(TokenConfig):
    """Where the writer writes: the raw bucket and the alarm events' bucket, with the
    writer's write-only token."""

    url: str = "http://localhost:8086"
    org: str = "sunbox"
    bucket: str = "sunbox_raw"
    #: where the alarm engine's events (``<prefix>/_alarms/events``) are stored; None:
    #: not subscribed, not stored
    events_bucket: str | None = "sunbox_events"
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0


class StoreConfig(Strict):
    """The whole ``sunbox store`` configuration."""

    mqtt: StoreMqttConfig
    influx: InfluxConfig
    #: points per write request (also the most messages held unacknowledged per batch)
    batch_size: Annotated[int, Field(ge=1, le=50_000)] = 5000
    #: how long a batch may wait to fill up before it is written
    batch_delay_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    #: retry delays for a failing InfluxDB: exponential from initial to max
    retry_initial_s: Annotated[float, Field(gt=0)] = 1.0
    retry_max_s: Annotated[float, Field(gt=0)] = 60.0
    stats_interval_s: Annotated[float, Field(ge=1)] = 60.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _batch_fits(self) -> Self:
        if self.mqtt.receive_maximum < self.batch_size:
            raise ValueError("mqtt.receive_maximum must be at least batch_size")
        return self


def parse(data: Any) -> StoreConfig:
    """Validate a loaded mapping.

    Raises:
        ConfigError: naming every offending key.
    """
    return validate(StoreConfig, data)


def load(path: Path) -> StoreConfig:
    """Read and validate ``store.yaml``.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid keys.
    """
    return parse(read_yaml(path))


__all__ = ["DEFAULT_PATH", "ConfigError", "InfluxConfig", "StoreConfig", "StoreMqttConfig", "load", "parse"]
