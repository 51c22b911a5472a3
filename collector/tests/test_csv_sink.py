"""The optional CSV sink: a file per device and UTC day, headers never change, restarts append."""

from __future__ import annotations

import csv
from pathlib import Path

from sunbox.model import Reading
from sunbox.sinks.csv_sink import CsvSink

DAY = 1_763_683_200_000  # 2025-11-21T00:00:00Z


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_files_per_device_and_day(tmp_path: Path) -> None:
    sink = CsvSink(tmp_path)
    sink.write(Reading("bat", "battery", DAY + 1000, {"voltage": 13.2, "cell_voltages": [3.3, 3.31], "soc": None}))
    sink.write(Reading("bat", "health", DAY + 1500, {"connected": True}))
    sink.write(Reading("bat", "battery", DAY + 2000, {"voltage": 13.3, "cell_voltages": [3.32, 3.33], "soc": 80.0}))
    sink.write(Reading("mppt", "charger", DAY + 2000, {"pv_voltage": 36.8, "charge_state": "bulk"}))
    sink.write(Reading("bat", "battery", DAY + 86_400_000, {"voltage": 13.1}))  # next UTC day
    sink.close()
    first = rows(tmp_path / "bat" / "2025-11-21.csv")
    assert [r["voltage"] for r in first] == ["13.2", "13.3"]
    assert first[0]["cell_voltage_02"] == "3.31" and first[0]["soc"] == "" and first[1]["soc"] == "80.0"
    assert first[0]["time_utc"] == "2025-11-21T00:00:01.000+00:00" and first[0]["kind"] == "battery"
    assert rows(tmp_path / "mppt" / "2025-11-21.csv")[0]["charge_state"] == "bulk"
    assert rows(tmp_path / "bat" / "2025-11-22.csv")[0]["voltage"] == "13.1"
    assert sink.rows == 4 and sink.errors == 0


def test_a_new_name_opens_a_wider_part_and_a_restart_appends(tmp_path: Path) -> None:
    sink = CsvSink(tmp_path)
    sink.write(Reading("bat", "battery", DAY, {"voltage": 13.2}))
    sink.write(Reading("bat", "battery", DAY + 1000, {"voltage": 13.2, "humidity": 40.0}))
    sink.close()
    assert list(rows(tmp_path / "bat" / "2025-11-21.csv")[0]) == ["time_utc", "time_ms", "kind", "voltage"]
    wider = rows(tmp_path / "bat" / "2025-11-21.2.csv")
    assert wider[0]["humidity"] == "40.0"
    again = CsvSink(tmp_path)  # the collector restarted
    again.write(Reading("bat", "battery", DAY + 2000, {"voltage": 13.4}))
    again.close()
    assert len(rows(tmp_path / "bat" / "2025-11-21.csv")) == 2  # the first file fits: appended, one header


def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    sink = CsvSink(blocker)
    sink.write(Reading("bat", "battery", DAY, {"voltage": 13.2}))
    assert sink.errors == 1 and sink.rows == 0


def test_old_files_are_pruned(tmp_path: Path) -> None:
    (tmp_path / "bat").mkdir()
    (tmp_path / "bat" / "2001-01-01.csv").write_text("time_utc\n")
    sink = CsvSink(tmp_path, keep_days=3650)  # 2001 is out, 2025 is in
    sink.write(Reading("bat", "battery", DAY, {"voltage": 13.2}))
    sink.close()
    assert not (tmp_path / "bat" / "2001-01-01.csv").exists()
    assert (tmp_path / "bat" / "2025-11-21.csv").exists()
