"""Configuration validation names the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sunbox.config import ConfigError, load, parse

GOOD = {
    "mqtt": {"username": "collector", "password": "secret"},
    "devices": [
        {"id": "house-battery", "driver": "jbd", "address": "a4:c1:37:00:00:01", "password": "123456"},
        {"id": "mppt", "driver": "litime", "address": "C8:47:80:00:00:02", "control": True},
    ],
}


def test_good_config() -> None:
    config = parse(GOOD)
    assert config.devices[0].address == "A4:C1:37:00:00:01"
    assert config.devices[0].poll_interval_s == 5.0
    assert config.mqtt.discovery is True


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"devices": [{"id": "x", "driver": "jbd", "address": "nope"}]}, "devices.0.address"),
        ({"devices": [{"id": "x", "driver": "victron", "address": "A4:C1:37:00:00:01"}]}, "devices.0.driver"),
        ({"mqtt": {"username": "u"}}, "mqtt"),
        ({"mqtt": {"username": "u", "password": "p", "prot": 1}}, "mqtt.prot"),
        (
            {"devices": [{"id": "x", "driver": "litime", "address": "A4:C1:37:00:00:01", "password": "123456"}]},
            "devices.0",
        ),
        ({"devices": [{"id": "Bad Id", "driver": "jbd", "address": "A4:C1:37:00:00:01"}]}, "devices.0.id"),
    ],
)
def test_errors_name_the_key(patch: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({**GOOD, **patch})
    assert str(info.value).startswith(key)


def test_duplicate_ids_rejected() -> None:
    device = GOOD["devices"][0]  # type: ignore[index]
    with pytest.raises(ConfigError, match="used twice"):
        parse({**GOOD, "devices": [device, device]})


def test_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "sunbox.yaml"
    path.write_text("mqtt: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_the_example_configuration_is_valid() -> None:
    from pathlib import Path

    from sunbox.config import load

    cfg = load(Path(__file__).parents[1] / "examples" / "sunbox.yaml")
    assert [d.id for d in cfg.vedirect] == ["shunt"] and cfg.venus[0].suppress_republish
    assert cfg.victron_adverts[0].key == "adeccb947395801a4dd45a2eaa44bf17"
