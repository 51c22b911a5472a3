"""The kiosk role's ``kiosk-output`` script (issue 27): which output the touchscreen is on.

A Pi 5's DSI display is ``DSI-1`` or ``DSI-2`` depending on the connector; the role used
to assume ``DSI-1`` and then changed nothing on a display on ``DSI-2``. The script is
rendered by Ansible's template module from the role's defaults and run with a
``wlr-randr`` stand-in on ``PATH`` that prints what labwc's wlr-randr prints (the
compositor is not available here; the layout is wlr-randr 0.3/0.4's: one unindented line
per output, its properties indented).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "kiosk"
PLAY_VENV = ROOT / ".play-venv" / "bin"

pytestmark = pytest.mark.skipif(not (PLAY_VENV / "ansible").exists(), reason="run ./play.sh prepare once")

HDMI_AND_DSI2 = """HDMI-A-1 "Dell Inc. DELL P2419H (HDMI-A-1)"
  Enabled: no
  Modes:
    1920x1080 px, 60.000000 Hz (preferred)
DSI-2 "(null) (null) (DSI-2)"
  Physical size: 154x86 mm
  Enabled: yes
  Modes:
    800x480 px, 60.002998 Hz (preferred, current)
  Position: 0,0
"""
HDMI_ONLY = 'HDMI-A-2 "Samsung (HDMI-A-2)"\n  Enabled: yes\n  Modes:\n    1920x1080 px, 60.000000 Hz\n'


def render(tmp_path: Path, output: str) -> Path:
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables["kiosk_output"] = output
    var_file = tmp_path / "vars.json"
    var_file.write_text(json.dumps(variables))
    script = tmp_path / f"kiosk-output-{output}"
    result = subprocess.run(
        [str(PLAY_VENV / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={PLAY_VENV / 'python'}", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / 'kiosk-output.j2'} dest={script} mode=0755", "-e", f"@{var_file}"],
        capture_output=True, text=True, check=False, timeout=120,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return script


def run(script: Path, tmp_path: Path, listing: str) -> str:
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "listing").write_text(listing)
    (stub / "wlr-randr").write_text(f"#!/bin/sh\ncat {stub / 'listing'}\n")
    (stub / "wlr-randr").chmod(0o755)
    env = dict(os.environ, PATH=f"{stub}:/usr/bin:/bin")
    return subprocess.run([str(script)], capture_output=True, text=True, env=env, check=True, timeout=30).stdout.strip()


def test_auto_finds_the_dsi_output_whichever_connector_it_is_on(tmp_path: Path) -> None:
    script = render(tmp_path, "auto")
    assert run(script, tmp_path, HDMI_AND_DSI2) == "DSI-2"
    assert run(script, tmp_path, HDMI_AND_DSI2.replace("DSI-2", "DSI-1")) == "DSI-1"
    assert run(script, tmp_path, HDMI_ONLY) == "HDMI-A-2"  # no DSI display: the one output there is
    assert run(script, tmp_path, "") == ""


def test_a_named_output_overrides(tmp_path: Path) -> None:
    assert run(render(tmp_path, "HDMI-A-1"), tmp_path, HDMI_AND_DSI2) == "HDMI-A-1"


def test_the_role_default_is_auto() -> None:
    assert yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["kiosk_output"] == "auto"
