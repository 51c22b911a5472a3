"""Which bucket a history query reads: raw or one tier, from the range's age and span.

One rule, used twice: the Grafana dashboards get it as Flux (:func:`flux`, pasted into
every time-series query by ``grafana/build_dashboards.py``) and ``sunbox web`` calls
:func:`pick_bucket` in Python. Both are generated from :data:`RULE`, so they cannot
drift apart; ``grafana/tests/test_dashboards.py`` and ``collector/tests/test_web*.py``
check each against the real InfluxDB.

The rule fits the default layout (``docs/storage.md``): raw holds 24 h, the tiers
2 min / 7 d, 5 min / 31 d, 30 min / 366 d and 2 h / 3660 d. A range goes to the first
bucket that still holds its start (``age``) and whose windows are fine enough for its
``span`` to be worth drawing from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    """Use ``bucket`` when the range starts at most ``max_age_s`` ago and spans at most ``max_span_s``.

    ``None`` means no limit; the last step has neither and always matches.
    """

    bucket: str
    window_s: int
    max_age_s: int | None
    max_span_s: int | None
    #: how far the bucket may lag behind now: its task's ``run_every`` plus one window
    #: (0 for raw); ``sunbox web`` reads the last ``lag_s`` of a range from raw instead
    lag_s: int = 0


HOUR = 3600
DAY = 86_400

#: The rule, first match wins. ``window_s`` is the bucket's resolution (raw: 0).
RULE: tuple[Step, ...] = (
    Step("sunbox_raw", 0, 24 * HOUR, 6 * HOUR),
    Step("sunbox_2m", 120, 7 * DAY, 2 * DAY, lag_s=1800 + 120),
    Step("sunbox_5m", 300, 31 * DAY, 14 * DAY, lag_s=1800 + 300),
    Step("sunbox_30m", 1800, 366 * DAY, None, lag_s=7200 + 1800),
    Step("sunbox_2h", 7200, None, None, lag_s=7200 + 7200),
)

#: The alarm engine's events (``StorageLayout.events_bucket`` of the default layout),
#: drawn as markers on History whatever bucket its series come from.
EVENTS_BUCKET = "sunbox_events"
#: Energy per device and hour (``StorageLayout.energy_bucket``, :mod:`sunbox.storage.energy`).
ENERGY_BUCKET = "sunbox_energy"


def pick(start_s: float, stop_s: float, now_s: float) -> Step:
    """The step (bucket and resolution) for a range from ``start_s`` to ``stop_s`` (Unix s)."""
    age = now_s - start_s
    span = stop_s - start_s
    for step in RULE:
        if (step.max_age_s is None or age <= step.max_age_s) and (step.max_span_s is None or span <= step.max_span_s):
            return step
    return RULE[-1]


def pick_bucket(start_s: float, stop_s: float, now_s: float) -> str:
    """The bucket name for a range (see :func:`pick`)."""
    return pick(start_s, stop_s, now_s).bucket


def _flux_duration(seconds: int) -> str:
    """Hours up to a day (``24h``, ``6h``), days above (``2d``, ``366d``)."""
    return f"{seconds // DAY}d" if seconds > DAY and seconds % DAY == 0 else f"{seconds // HOUR}h"


def flux() -> str:
    """The same rule as Flux: sets ``bucket`` from Grafana's ``v.timeRangeStart``/``Stop``."""
    lines = [
        "span = int(v: v.timeRangeStop) - int(v: v.timeRangeStart)",
        "age = int(v: now()) - int(v: v.timeRangeStart)",
        "bucket =",
    ]
    for index, step in enumerate(RULE):
        tests = []
        if step.max_age_s is not None:
            tests.append(f"age <= int(v: {_flux_duration(step.max_age_s)})")
        if step.max_span_s is not None:
            tests.append(f"span <= int(v: {_flux_duration(step.max_span_s)})")
        keyword = "if" if index == 0 else "else if"
        if tests:
            lines.append(f'    {keyword} {" and ".join(tests)} then "{step.bucket}"')
        else:
            lines.append(f'    else "{step.bucket}"')
    return "\n".join(lines) + "\n"
