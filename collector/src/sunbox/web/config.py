"""Configuration of ``sunbox web`` (``/etc/sunbox/web.yaml``), validated once at start.

Errors name the offending key, e.g. ``influx.token_file: Field required``. Every key
with its default is listed in ``docs/configuration.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from sunbox.config import BrokerConfig, ConfigError, Strict, TokenConfig, read_yaml, validate

DEFAULT_PATH = Path("/etc/sunbox/web.yaml")


class WebMqttConfig(BrokerConfig):
    """The display's broker account: it only subscribes (read-only in the broker's ACL)."""

    client_id: str = "sunbox-web"


class WebInfluxConfig(TokenConfig):
    """InfluxDB for History and energy: the read-only dashboards token, never sent to a browser."""

    url: str = "http://localhost:8086"
    org: str = "sunbox"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 20.0


class WebConfig(Strict):
    """The whole ``sunbox web`` configuration."""

    #: address to listen on; the firewall decides who on the LAN reaches it
    listen: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    mqtt: WebMqttConfig
    influx: WebInfluxConfig
    #: a device with no reading for this long is shown orange (stale) ...
    stale_after_s: Annotated[float, Field(gt=0)] = 60.0
    #: ... and red after this long
    dead_after_s: Annotated[float, Field(gt=0)] = 300.0
    #: most points per series a History request returns (the chart's width is less)
    max_points: Annotated[int, Field(ge=50, le=5000)] = 720
    #: optional password for LAN viewers (HTTP Basic, any user name); the kiosk on the
    #: Pi itself (loopback) never needs it
    viewer_password_file: Path | None = None
    #: host names (besides IP addresses, ``localhost`` and the Pi's own host name, bare
    #: or with ``.local``) that browsers may use to reach the display; any
    #: other ``Host`` is refused (DNS rebinding, ``sunbox.web.origin``)
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")]] = Field(
        default_factory=list
    )
    #: origins (``scheme://host[:port]``) besides the display's own whose pages may call
    #: the API and open the live stream; any other ``Origin`` is refused
    allowed_origins: list[Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\[\]:-]+$")]] = Field(
        default_factory=list
    )
    #: the account whose browser on the Pi itself may beat ``/api/heartbeat`` (the
    #: kiosk's); a beat from any other local process is refused
    kiosk_user: Annotated[str, Field(min_length=1, max_length=32)] = "sunbox-kiosk"
    #: a path on the filesystem that holds the history (InfluxDB's data): when its card
    #: turns read-only or fills up, every page says so (``sunbox.disk``)
    disk_path: Annotated[str, Field(pattern=r"^/")] = "/var/lib/influxdb"
    #: below this much free space the card is shown as nearly full, MB
    disk_low_free_mb: Annotated[int, Field(ge=0)] = 1024
    #: how often the card (and the backup's state) is looked at, seconds
    disk_check_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: the nightly backup's last result (``sunbox backup``); absent = backups not set up
    backup_state_file: Path | None = Path("/var/lib/sunbox-backup/state.json")
    #: a last good backup older than this is an alarm, hours
    backup_max_age_h: Annotated[float, Field(gt=0)] = 48.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.dead_after_s <= self.stale_after_s:
            raise ValueError("dead_after_s must be longer than stale_after_s")
        return self

    def viewer_password(self) -> str | None:
        """The LAN viewers' password, or None when the display is open on the LAN."""
        if self.viewer_password_file is None:
            return None
        return self.viewer_password_file.read_text().strip() or None


def parse(data: Any) -> WebConfig:
    """Validate a loaded mapping.

    Raises:
        ConfigError: naming every offending key.
    """
    return validate(WebConfig, data)


def load(path: Path) -> WebConfig:
    """Read and validate ``web.yaml``.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid keys.
    """
    return parse(read_yaml(path))


__all__ = ["DEFAULT_PATH", "ConfigError", "WebConfig", "WebInfluxConfig", "WebMqttConfig", "load", "parse"]
