"""The storage layout: raw bucket, downsampled tiers and their Flux tasks, as data.

The tier list is data (the inventory's ``sunbox_storage_tiers``, rendered into
``/etc/sunbox/storage.yaml``); bucket names, retentions and tasks follow from it.
Defaults (see ``docs/storage.md``): raw 24 h; tiers 2 min / 7 d, 5 min / 31 d,
30 min / 366 d, 2 h / 3660 d; catch-up after downtime up to 23 h.

Tasks are rendered from ``influx_tasks/downsample.flux`` (one template, one task per tier).
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator

from sunbox.config import ConfigError, Strict, read_yaml, validate

from . import energy
from .points import FLAG_FIELDS, LAST_VALUE_FIELDS, NOT_MEASURED

DEFAULT_PATH = Path("/etc/sunbox/storage.yaml")
TEMPLATE_NAME = "downsample.flux"
#: Where the template is looked for when no path is given: the source tree (development)
#: and the place the collector role installs it.
TEMPLATE_SEARCH = (
    Path(__file__).resolve().parents[4] / "influx_tasks",
    Path("/opt/sunbox/influx_tasks"),
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_duration(value: Any) -> int:
    """``"2m"``, ``"24h"``, ``"3660d"`` (one unit of s, m, h, d or w) to seconds.

    Raises:
        ValueError: not such a duration.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 2m, 24h or 366d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def flux_duration(seconds: int) -> str:
    """Seconds as the shortest exact Flux duration literal (``120`` -> ``2m``)."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[int, BeforeValidator(parse_duration)]


class Tier(Strict):
    """One downsampled tier: window length ``every`` and how long its bucket keeps data."""

    name: str
    every: Duration
    retention: Duration
    bucket: str | None = None
    #: How often the tier's task runs (None: every window, ``every``). Each run fills every
    #: complete window since the tier's newest, so a longer interval writes the same points,
    #: only later: the tier lags the clock by up to ``run_every`` + ``every``. Each run is
    #: several synced writes on the SD card (the run's record, the tier's points), so the
    #: default layout runs the fine tiers less often than their window (issue 28).
    run_every: Duration | None = None
    #: InfluxDB shard group duration of the tier's bucket (None: InfluxDB's default, 7 d
    #: for retentions over 6 months). Each shard carries its own index, so a 10-year
    #: bucket in 7-day shards spends more on 522 indexes than on its data; retention
    #: deletes whole shard groups, so a bucket keeps up to one shard group more.
    shard_group: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> Tier:
        if not _NAME.match(self.name):
            raise ValueError(f"tier name {self.name!r}: use lower-case letters, digits and '_'")
        if self.every < 60 or 86400 % self.every:
            raise ValueError("every must be at least 1m and divide a day evenly")
        if self.retention < 2 * self.every:
            raise ValueError("retention must hold at least two windows")
        if self.shard_group is not None and not self.every <= self.shard_group <= self.retention:
            raise ValueError("shard_group must lie between every and retention")
        if self.bucket is not None and not _BUCKET.match(self.bucket):
            raise ValueError(f"bucket {self.bucket!r} is not a valid bucket name")
        if self.run_every is not None and (self.run_every % self.every or 86400 % self.run_every):
            raise ValueError("run_every must be a multiple of every and divide a day evenly")
        return self

    @property
    def run_every_s(self) -> int:
        """Seconds between two runs of the tier's task."""
        return self.run_every if self.run_every is not None else self.every


DEFAULT_TIERS = (
    Tier(name="2m", every=120, retention=7 * 86400, shard_group=86400, run_every=1800),
    Tier(name="5m", every=300, retention=31 * 86400, shard_group=7 * 86400, run_every=1800),
    Tier(name="30m", every=1800, retention=366 * 86400, shard_group=28 * 86400, run_every=7200),
    Tier(name="2h", every=7200, retention=3660 * 86400, shard_group=364 * 86400),
)


class StorageLayout(Strict):
    """Org, buckets, tiers and token descriptions (``/etc/sunbox/storage.yaml``)."""

    org: str = "sunbox"
    bucket_prefix: str = "sunbox"
    raw_bucket: str = "sunbox_raw"
    raw_retention: Duration = 24 * 3600
    #: shard group duration of the raw bucket: InfluxDB deletes whole shard groups once
    #: their end is older than the retention, so raw still holds every shard group that
    #: ends within ``raw_retention`` (source: InfluxDB 2 docs, "Data retention"). A day:
    #: each new shard group is a new WAL, index and TSM set on the card and the old one's
    #: cold compaction, which hourly groups paid 24 times a day (issue 28); raw then holds
    #: between one and two days.
    raw_shard_group: Duration = 86400
    #: longest downtime after which every tier still catches up completely
    catchup: Duration = 23 * 3600
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    #: the alarm engine's raised, acknowledged and cleared events, written by the writer
    #: and drawn on History (docs/alarms.md): a few a day, kept as long as the longest tier
    events_bucket: str = "sunbox_events"
    events_retention: Duration = 3660 * 86400
    events_shard_group: Duration = 364 * 86400
    #: energy per device and hour (:mod:`sunbox.storage.energy`), kept like the longest tier
    energy_bucket: str = "sunbox_energy"
    energy_retention: Duration = 3660 * 86400
    energy_shard_group: Duration = 364 * 86400
    energy_task: str = "sunbox_energy"
    #: a longer interval between two readings of a device is a gap: no energy, not covered
    energy_max_gap: Duration = 120
    task_prefix: str = "sunbox_downsample"

    @model_validator(mode="after")
    def _check(self) -> StorageLayout:
        if not self.tiers:
            raise ValueError("tiers: at least one tier is needed")
        widest = max(t.every for t in self.tiers)
        if self.catchup + widest > self.raw_retention + self.raw_shard_group:
            raise ValueError(
                "catchup plus the widest tier window must fit in raw_retention plus raw_shard_group "
                "(the tiers are computed from the raw bucket)"
            )
        if self.raw_retention % self.raw_shard_group:
            raise ValueError("raw_retention must be a multiple of raw_shard_group")
        slowest = max(t.run_every_s for t in self.tiers)
        if slowest + max(t.every for t in self.tiers) > self.catchup:
            raise ValueError("catchup must cover the longest run_every plus the widest tier window")
        for kind in ("events", "energy"):
            bucket, shard, retention = (getattr(self, f"{kind}_{k}") for k in ("bucket", "shard_group", "retention"))
            if not _BUCKET.match(bucket):
                raise ValueError(f"{kind}_bucket {bucket!r} is not a valid bucket name")
            if not 3600 <= shard <= retention:
                raise ValueError(f"{kind}_shard_group must lie between 1h and {kind}_retention")
        if not 10 <= self.energy_max_gap <= 3600:
            raise ValueError("energy_max_gap must lie between 10s and 1h")
        if self.energy_task.startswith(self.task_prefix + "_"):
            raise ValueError("energy_task must not start with task_prefix (those are the tiers' tasks)")
        names = [t.name for t in self.tiers]
        buckets = [self.bucket_of(t) for t in self.tiers] + [self.raw_bucket, self.events_bucket, self.energy_bucket]
        if len(set(names)) != len(names) or len(set(buckets)) != len(buckets):
            raise ValueError("tiers: names and buckets must be unique")
        return self

    def bucket_of(self, tier: Tier) -> str:
        """The bucket of a tier: its own ``bucket`` or ``<bucket_prefix>_<name>``."""
        return tier.bucket or f"{self.bucket_prefix}_{tier.name}"

    def task_name(self, tier: Tier) -> str:
        return f"{self.task_prefix}_{tier.name}"

    def data_buckets(self) -> dict[str, int]:
        """The readings' buckets (raw first, then the tiers) with their retentions in s."""
        out = {self.raw_bucket: self.raw_retention}
        for tier in self.tiers:
            out[self.bucket_of(tier)] = tier.retention
        return out

    def task_buckets(self) -> dict[str, int]:
        """The buckets the tasks read and write: the readings' and the energy's."""
        return {**self.data_buckets(), self.energy_bucket: self.energy_retention}

    def buckets(self) -> dict[str, int]:
        """Every bucket with its retention in seconds: the readings', the energy's, then
        the alarm events'."""
        return {**self.task_buckets(), self.events_bucket: self.events_retention}

    def shard_groups(self) -> dict[str, int | None]:
        """Every bucket with its shard group duration in seconds (None: InfluxDB's default)."""
        out: dict[str, int | None] = {self.raw_bucket: self.raw_shard_group}
        for tier in self.tiers:
            out[self.bucket_of(tier)] = tier.shard_group
        out[self.energy_bucket] = self.energy_shard_group
        out[self.events_bucket] = self.events_shard_group
        return out

    def energy_task_flux(self) -> str:
        """The hourly energy task's Flux (:mod:`sunbox.storage.energy`)."""
        return energy.task_flux(
            self.energy_task, self.raw_bucket, self.energy_bucket, self.catchup, self.energy_max_gap
        )


def _any_field(names: frozenset[str]) -> str:
    return " or ".join(f'r._field == "{n}"' for n in sorted(names))


def _no_field(names: frozenset[str]) -> str:
    return " and ".join(f'r._field != "{n}"' for n in sorted(names))


def find_template(path: Path | None = None) -> Path:
    """The downsampling template: ``path`` if given, else the first of :data:`TEMPLATE_SEARCH`.

    Raises:
        ConfigError: no template found.
    """
    candidates = [path] if path is not None else [d / TEMPLATE_NAME for d in TEMPLATE_SEARCH]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError("Flux template not found; looked at " + ", ".join(str(c) for c in candidates))


def render_task(layout: StorageLayout, tier: Tier, template: str) -> str:
    """The Flux script of one tier's task (the template's ``//`` comment lines left out,
    as InfluxDB logs the whole script on every run)."""
    code = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("//"))
    return Template(code.strip() + "\n").substitute(
        task_name=layout.task_name(tier),
        every=flux_duration(tier.every),
        run_every=flux_duration(tier.run_every_s),
        source_bucket=layout.raw_bucket,
        destination_bucket=layout.bucket_of(tier),
        catchup=flux_duration(layout.catchup),
        measured_predicate=_no_field(NOT_MEASURED),
        last_predicate=_any_field(LAST_VALUE_FIELDS),
        flag_predicate=_any_field(FLAG_FIELDS),
    )


def parse(data: Any) -> StorageLayout:
    """Validate a loaded mapping (``None`` gives the defaults).

    Raises:
        ConfigError: naming every offending key.
    """
    return validate(StorageLayout, {} if data is None else data)


def load(path: Path) -> StorageLayout:
    """Read and validate a storage layout YAML file.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid keys.
    """
    return parse(read_yaml(path))
