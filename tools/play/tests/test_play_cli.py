"""./play.sh and the example inventory, without a Pi: the first-run guidance and the checks
that run before anything is changed (with the pinned ansible that ./play.sh installs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAY_VENV = ROOT / ".play-venv" / "bin"

needs_play_venv = pytest.mark.skipif(
    not (PLAY_VENV / "ansible-playbook").exists(), reason="run ./play.sh lint once to create .play-venv"
)


def run(*cmd: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PATH=f"{PLAY_VENV}:{os.environ['PATH']}", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    environ.update(env)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=environ)


def site_play(*options: str) -> subprocess.CompletedProcess[str]:
    """playbooks/site.yml against the example inventory (whose Pi does not exist)."""
    return run(
        str(PLAY_VENV / "ansible-playbook"), "-i", "inventories/example/hosts.yml", "playbooks/site.yml", *options
    )


def test_help_explains_the_first_run() -> None:
    result = run(str(ROOT / "play.sh"), "--help")
    assert result.returncode == 0
    for step in ("Imager", "cp -r inventories/example", "./play.sh vault create", "virtual-pi"):
        assert step in result.stdout


def test_without_an_inventory_it_says_which_option_is_missing() -> None:
    result = run(str(ROOT / "play.sh"), "--check")
    assert result.returncode == 2
    assert "-i" in result.stderr and "--help" in result.stderr


@needs_play_venv
def test_example_inventory_puts_the_single_pi_in_every_group() -> None:
    result = run(str(PLAY_VENV / "ansible-inventory"), "-i", "inventories/example/hosts.yml", "--list")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)
    for group in ("sunbox_central", "sunbox_field", "sunbox_kiosk"):
        assert groups[group]["hosts"] == ["target"]


@needs_play_venv
def test_missing_vault_stops_the_play_with_the_keys_and_the_file_to_create() -> None:
    result = site_play("--tags", "always")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "Missing sunbox_mqtt_collector_password" in out
    assert "sunbox_influxdb_admin_token" in out
    assert "group_vars/all/vault.yml" in out and "./play.sh vault create" in out


@needs_play_venv
def test_site_playbook_syntax() -> None:
    result = site_play("--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_play_venv
def test_with_every_secret_given_the_check_passes(tmp_path: Path) -> None:
    secrets = tmp_path / "vault.yml"
    secrets.write_text(
        "".join(
            f"vault_sunbox_{name}: test-value-{name}\n"
            for name in (
                "mqtt_collector_password",
                "mqtt_store_password",
                "mqtt_web_password",
                "influxdb_admin_password",
                "influxdb_admin_token",
                "grafana_admin_password",
                "jbd_password",
            )
        )
    )
    devices = tmp_path / "devices.yml"
    devices.write_text("sunbox_devices: [{id: b1, driver: jbd, address: 'A4:C1:37:12:34:56'}]\n")
    result = site_play("--tags", "always", "-e", f"@{secrets}", "-e", f"@{devices}")
    # the checks pass; the play then stops only because the example's Pi is not there
    check = result.stdout.split("TASK [Every secret comes from the vault]")[1].split("PLAY [")[0]
    assert "ok: [target]" in check, result.stdout
    assert "Missing" not in result.stdout


@needs_play_venv
def test_the_examples_placeholders_and_short_secrets_are_refused_by_name(tmp_path: Path) -> None:
    secrets = tmp_path / "vault.yml"
    example = ROOT / "inventories" / "example" / "group_vars" / "all" / "vault.yml.example"
    text = example.read_text().replace(
        "vault_sunbox_mqtt_store_password: CHANGE-ME", "vault_sunbox_mqtt_store_password: short"
    )
    secrets.write_text(text)
    result = site_play("--tags", "always", "-e", f"@{secrets}")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    check = out.split("TASK [No secret is an example value or too short]")[1]
    assert "sunbox_mqtt_collector_password" in check and "sunbox_mqtt_store_password" in check
    assert "CHANGE-ME" in check and "12 characters" in check


@needs_play_venv
def test_a_collector_with_nothing_to_read_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    secrets = tmp_path / "vault.yml"
    names = ("mqtt_collector_password", "mqtt_store_password", "mqtt_web_password", "influxdb_admin_password")
    names += ("influxdb_admin_token", "grafana_admin_password", "jbd_password")
    secrets.write_text("".join(f"vault_sunbox_{name}: long-enough-{name}\n" for name in names))
    result = site_play("--tags", "always", "-e", f"@{secrets}")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "sunbox_devices, sunbox_vedirect" in out and "./play.sh discover" in out


def test_the_helps_vault_step_works_from_a_fresh_clone() -> None:
    result = run(str(ROOT / "play.sh"), "vault", "--help")
    assert result.returncode == 0 and "create" in result.stdout, result.stderr[-2000:]


def test_the_helps_discover_step_runs_the_discovery_play() -> None:
    """`./play.sh discover -i ...` plays playbooks/discover.yml on the field Pis (here: only listed)."""
    assert "./play.sh discover -i inventories/mysite/hosts.yml" in run(str(ROOT / "play.sh"), "--help").stdout
    missing = run(str(ROOT / "play.sh"), "discover")
    assert missing.returncode == 2 and "-i" in missing.stderr
    result = run(str(ROOT / "play.sh"), "discover", "-i", "inventories/example/hosts.yml", "--list-tasks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Discover the devices near each field Pi" in result.stdout
    assert "Listen for devices" in result.stdout and "Write the snippet beside the inventory" in result.stdout
