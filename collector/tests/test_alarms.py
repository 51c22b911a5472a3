"""Alarm rules and the engine (issue 32) on recorded series: delay, hysteresis, stale,
clearing, unknown values, acknowledgement, a restart; and the configuration's errors,
each naming its key.

The series are readings as the collector publishes them (``time_ms`` every 5 s), with
the quantities' data-model names; the engine is pure, so the times are the readings'.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sunbox.alarms.engine import Engine, Event, value_of
from sunbox.alarms.outbox import Outbox
from sunbox.alarms.rules import DEFAULT_RULES, AlarmsConfig, Rule
from sunbox.alarms.system import NEVER_H, SystemFacts
from sunbox.config import ConfigError, validate

T0 = 1_765_000_000_000
MQTT = {"username": "alarms", "password": "x"}


def rule(**kw: Any) -> Rule:
    return Rule.model_validate(kw)


def feed(engine: Engine, device: str, kind: str, series: list[dict[str, Any]], step_s: float = 5) -> list[Event]:
    """Each reading of ``series`` ``step_s`` after the last, from T0; every event."""
    events: list[Event] = []
    for i, values in enumerate(series):
        events += engine.observe(device, kind, values, T0 + int(i * step_s * 1000))
    return events


def whats(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.what, e.alarm.id, (e.time_ms - T0) // 1000) for e in events]


SOC_LOW = rule(id="soc-low", quantity="soc", below=20, clear_at=25, for_s=120, kinds=["battery", "bank"])


def test_a_threshold_raises_only_after_its_delay_and_clears_past_its_hysteresis() -> None:
    engine = Engine([SOC_LOW], T0)
    soc = [30, 21] + [19.5] * 30 + [22, 24.9, 19] + [25.0]
    events = feed(engine, "house", "bank", [{"soc": s} for s in soc])
    # below 20 from t=10 s; 120 s later (t=130) it is raised, with the value then
    assert whats(events) == [("raised", "soc-low/house", 130), ("cleared", "soc-low/house", 175)]
    assert events[0].alarm.value == 19.5 and events[0].alarm.severity == "warning"
    # 22, 24.9 and 19 do not clear it (hysteresis); 25.0 does
    assert events[1].alarm.cleared_ms == T0 + 175_000 and not engine.alarms


def test_a_single_noisy_reading_never_raises() -> None:
    engine = Engine([SOC_LOW], T0)
    soc = [50] * 10 + [3] + [50] * 10 + [3, 3] + [50] * 30  # glitches of 1 and 2 readings
    assert feed(engine, "house", "bank", [{"soc": s} for s in soc]) == []


def test_the_delay_restarts_when_the_condition_lapses() -> None:
    engine = Engine([SOC_LOW], T0)
    soc = [19] * 20 + [21] + [19] * 30  # 100 s below, one reading above, then below again
    # without the lapse it would be raised at 120 s; with it, 120 s after the 105 s reading
    assert whats(feed(engine, "house", "bank", [{"soc": s} for s in soc])) == [("raised", "soc-low/house", 225)]


def test_an_unknown_value_neither_raises_nor_clears() -> None:
    engine = Engine([SOC_LOW], T0)
    events = feed(engine, "house", "bank", [{"soc": 10}] * 25 + [{"soc": None}, {"voltage": 13.1}] * 10)
    assert whats(events) == [("raised", "soc-low/house", 120)] and "soc-low/house" in engine.alarms


def test_a_rule_watches_the_kinds_it_names_or_the_devices_that_send_its_quantity() -> None:
    engine = Engine([SOC_LOW, rule(id="pv-low", quantity="pv_power", below=5, device="mppt")], T0)
    assert feed(engine, "mppt", "charger", [{"soc": 5, "pv_power": 100}] * 40) == []  # a charger's soc: not watched
    assert feed(engine, "other", "charger", [{"pv_power": 0}]) == []  # another charger
    assert whats(feed(engine, "mppt", "charger", [{"pv_power": 0}])) == [("raised", "pv-low/mppt", 0)]


def test_charging_below_freezing_needs_both_conditions_and_clears_when_charging_stops() -> None:
    cold = next(r for r in DEFAULT_RULES if r.id == "cold-charge")
    engine = Engine([cold], T0)
    # a pack: its sensors' lowest; discharging in the cold is fine
    series = [{"temperatures": [-3.0, 1.0], "current": -4.0}] * 20
    series += [{"temperatures": [-3.0, 1.0], "current": 6.0}] * 10  # charging, 45 s
    series += [{"temperatures": [-3.0, 1.0], "current": 0.0}]  # stops
    events = feed(engine, "battery", "battery", series)
    assert whats(events) == [("raised", "cold-charge/battery", 130), ("cleared", "cold-charge/battery", 150)]
    assert events[0].alarm.value == -3.0 and events[0].alarm.severity == "alarm"
    assert value_of({"temperatures": [None, 4.0]}, "temperature_min") == 4.0
    assert value_of({"temperatures": [None]}, "temperature_min") is None


def test_the_default_rules_on_a_pack_with_a_dead_cell_and_a_protection() -> None:
    engine = Engine(list(DEFAULT_RULES), T0)
    good = {"soc": 80.0, "cell_voltage_min": 3.30, "cell_voltage_max": 3.34, "cell_voltage_delta": 0.04,
            "temperatures": [18.0], "current": 2.0, "protection_bits": 0}  # fmt: skip
    dead = {**good, "cell_voltage_min": 0.0, "cell_voltage_delta": 3.34}
    events = feed(engine, "battery", "battery", [good] * 3 + [dead] * 3)
    # the 0 V cell is a fault at once; the low cell after its 10 s
    assert whats(events) == [
        ("raised", "cell-fault/battery", 15),
        ("raised", "cell-low/battery", 25),
    ]
    events = feed(engine, "battery", "battery", [{**good, "protection_bits": 0b10}])
    assert (events[-1].what, events[-1].alarm.id) == ("raised", "bms-protection/battery")
    assert {"cell-fault/battery", "cell-low/battery"} <= {e.alarm.id for e in events if e.what == "cleared"}
    assert [a.id for a in engine.active()] == ["bms-protection/battery"]


def test_a_switch_turned_off_in_the_bms_is_raised_after_its_delay_until_it_is_on_again() -> None:
    engine = Engine([r for r in DEFAULT_RULES if r.id in ("discharge-off", "charge-off")], T0)
    on = {"charge_fet_on": True, "discharge_fet_on": True}
    series = [on] * 2 + [{**on, "discharge_fet_on": False}] * 8 + [on]  # off from 10 s to 45 s
    events = feed(engine, "pack", "battery", series)
    assert whats(events) == [("raised", "discharge-off/pack", 40), ("cleared", "discharge-off/pack", 50)]
    assert events[0].alarm.severity == "alarm" and events[0].alarm.value == 0.0
    # charging off is a warning only once it lasted its 5 minutes (readings at 0 ... 305 s)
    fresh = Engine([r for r in DEFAULT_RULES if r.id == "charge-off"], T0)
    events = feed(fresh, "pack", "battery", [{**on, "charge_fet_on": False}] * 62)
    assert whats(events) == [("raised", "charge-off/pack", 300)] and events[0].alarm.severity == "warning"


def test_a_device_gone_silent_is_stale_until_its_next_reading() -> None:
    stale = rule(id="offline", stale_for_s=600)
    engine = Engine([stale], T0, expected={"mppt": None, "never": None})
    feed(engine, "mppt", "charger", [{"pv_power": 1}])
    assert engine.tick(T0 + 600_000) == []
    events = engine.tick(T0 + 601_000)
    # a device never heard since the start counts from the start
    assert sorted(whats(events)) == [("raised", "offline/mppt", 601), ("raised", "offline/never", 601)]
    assert engine.tick(T0 + 700_000) == []  # raised once
    assert whats(engine.observe("mppt", "charger", {"pv_power": 2}, T0 + 710_000)) == [("cleared", "offline/mppt", 710)]


def test_acknowledging_marks_an_alarm_seen_and_it_stays_until_it_clears() -> None:
    engine = Engine([SOC_LOW], T0)
    feed(engine, "house", "bank", [{"soc": 5}] * 30)
    event = engine.acknowledge("soc-low/house", T0 + 200_000)
    assert event is not None and event.what == "acked" and event.alarm.acked_ms == T0 + 200_000
    assert engine.acknowledge("soc-low/house", T0 + 201_000) is None  # once
    assert engine.acknowledge("soc-low/cabin", T0 + 201_000) is None  # no such alarm
    assert engine.alarms["soc-low/house"].acked_ms == T0 + 200_000


def test_a_restart_neither_raises_an_active_alarm_again_nor_forgets_it() -> None:
    engine = Engine([SOC_LOW], T0)
    feed(engine, "house", "bank", [{"soc": 5}] * 30)
    engine.acknowledge("soc-low/house", T0 + 200_000)
    saved = engine.to_dict()
    again = Engine([SOC_LOW], T0 + 300_000)
    again.load(saved)
    assert again.alarms == engine.alarms and list(again.history) == list(engine.history)
    assert feed(again, "house", "bank", [{"soc": 5}] * 30) == []  # still low: nothing new
    assert whats(again.observe("house", "bank", {"soc": 30}, T0 + 400_000)) == [("cleared", "soc-low/house", 400)]
    # an alarm of a rule no longer configured is dropped
    other = Engine([rule(id="pv-low", quantity="pv_power", below=5)], T0)
    other.load(saved)
    assert other.alarms == {}
    with pytest.raises(ValueError, match="version 1"):
        other.load({"active": []})


def config(**kw: Any) -> AlarmsConfig:
    return validate(AlarmsConfig, {"mqtt": MQTT, **kw})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": [{"id": "x", "quantity": "sco", "below": 1}]}, "rules.0: unknown quantity 'sco'"),
        ({"rules": [{"id": "x", "quantity": "cell_voltages", "below": 1}]}, "rules.0: unknown quantity"),
        ({"rules": [{"id": "x", "quantity": "soc"}]}, "rules.0: set exactly one of above or below"),
        ({"rules": [{"id": "x", "quantity": "soc", "below": 20, "clear_at": 10}]}, "clear_at 10 must be at or above"),
        ({"rules": [{"id": "x", "stale_for_s": 60, "quantity": "soc"}]}, "a stale rule (stale_for_s) takes no"),
        ({"rules": [{"id": "X y", "stale_for_s": 60}]}, "rules.0.id: use 1-63 lower-case"),
        ({"rules": [{"id": "soc-low", "stale_for_s": 60}]}, "rules.0.id: 'soc-low' is already a rule"),
        ({"rules": [{"id": "a", "stale_for_s": 9, "device": "nope"}], "devices": ["house"]}, "rules.0.device:"),
        ({"defaults": {"soc-lo": False}}, "defaults.soc-lo: not a default rule"),
        ({"rules": [{"id": "a", "stale_for_s": 9, "severity": "panic"}]}, "rules.0.severity:"),
        ({"notify": {"digest_s": -1}}, "notify.digest_s:"),
    ],
)
def test_a_bad_configuration_names_its_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(**data)
    assert message in str(error.value)


def test_defaults_switch_off_one_by_one_and_the_owners_rules_follow() -> None:
    rules = config(
        defaults={"offline": False, "soc-low": False},
        rules=[{"id": "soc-low", "quantity": "soc", "below": 30, "clear_at": 40, "device": "house"}],
        devices=["house"],
    ).all_rules()
    ids = [r.id for r in rules]
    assert "offline" not in ids and ids[-1] == "soc-low" and rules[-1].below == 30
    assert len(ids) == len(DEFAULT_RULES) - 1
    assert [r.id for r in config().all_rules()] == [r.id for r in DEFAULT_RULES]


def test_the_appliance_facts_say_unknown_until_known_and_the_writer_only_while_readings_come() -> None:
    facts = SystemFacts(started_ms=T0)
    assert set(facts.values(T0).values()) == {None}
    facts.last_reading_ms = T0 + 100_000
    assert facts.values(T0 + 110_000)["writer_report_age_s"] == 110.0  # no report since the start
    facts.last_store_report_ms = T0 + 105_000
    assert facts.values(T0 + 110_000)["writer_report_age_s"] == 5.0
    assert facts.values(T0 + 400_000)["writer_report_age_s"] is None  # no reading for minutes: no say
    facts.backup_state({"ok": False, "last_success": None})
    assert facts.values(T0)["backup_age_h"] == NEVER_H
    facts.backup_state({"ok": True, "last_success": "2025-12-06T06:00:00+00:00"})
    six = int(datetime(2025, 12, 6, 6, tzinfo=UTC).timestamp() * 1000)
    assert facts.values(six + 3_600_000)["backup_age_h"] == 1.0
    with pytest.raises(ValueError):
        facts.backup_state({"ok": "yes"})
    facts.disk_status = "read-only"
    assert facts.values(T0)["disk_writable"] is False


def test_the_appliance_rules_watch_only_the_appliance_and_stale_rules_skip_it() -> None:
    collector_down = next(r for r in DEFAULT_RULES if r.id == "collector-down")
    offline = next(r for r in DEFAULT_RULES if r.id == "offline")
    assert collector_down.applies_to("sunbox", "sunbox") and not collector_down.applies_to("house", "bank")
    assert not offline.applies_to("sunbox", "sunbox") and offline.applies_to("house", "bank")
    engine = Engine([collector_down], T0)
    series = [{"collector_online": False}] * 30  # every 5 s: 145 s down
    assert whats(feed(engine, "sunbox", "sunbox", series)) == [("raised", "collector-down/sunbox", 120)]
    assert config(rules=[{"id": "x", "quantity": "disk_free_pct", "below": 5, "device": "sunbox"}], devices=["a"])


async def test_the_outbox_digests_backs_off_and_survives_a_restart(tmp_path: Path) -> None:
    """The outbox's policy with a target that fails, then accepts (the real receivers are
    in test_alarms_e2e.py): one message per target carrying every line, retries after
    retry_first_s doubling to retry_max_s, nothing lost or sent twice across a reopen."""
    sent: list[tuple[str, str, str]] = []
    up = {"a": False, "b": True}

    async def send(url: str, title: str, body: str) -> bool:
        if up[url.split("://")[1]]:
            sent.append((url, title, body))
            return True
        return False

    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, ["json://a", "json://b"], send, digest_s=20, retry_first_s=30, retry_max_s=100)
    box.put("first", T0, T0)
    box.put("second", T0 + 1000, T0 + 1000)
    assert await box.deliver(T0 + 19_000) == 0 and box.pending() == 4  # the digest window
    assert await box.deliver(T0 + 20_000) == 1  # b: one message, both lines; a: refused
    assert sent == [("json://b", "Sunbox: 2 alarm changes", "first\nsecond")]
    assert box.next_due_ms() == T0 + 20_000 + 30_000 and box.pending() == 2
    assert await box.deliver(T0 + 50_000) == 0 and box.next_due_ms() == T0 + 50_000 + 60_000
    assert await box.deliver(T0 + 110_000) == 0 and box.next_due_ms() == T0 + 110_000 + 100_000  # capped
    box.close()
    up["a"] = True
    again = Outbox(path, ["json://a", "json://b"], send, digest_s=20, retry_first_s=30, retry_max_s=100)
    assert again.pending() == 2 and await again.deliver(T0 + 209_000) == 0  # not due yet: kept its time
    assert await again.deliver(T0 + 210_000) == 1
    assert sent[-1] == ("json://a", "Sunbox: 2 alarm changes", "first\nsecond") and len(sent) == 2
    assert await again.deliver(T0 + 999_000) == 0 and again.pending() == 0
    again.put("third", T0, T0)
    again.close()
    dropped = Outbox(path, ["json://b"], send)  # a no longer configured: its line goes
    assert dropped.pending() == 1
    dropped.close()
