"""The influxdb role's config.toml, rendered by Ansible, run by the real influxd.

A Flux query must not reach the network: with the rendered file, ``http.get`` and
``http.post`` against a server on loopback fail inside InfluxDB and the server sees no
request (issue 16, finding 2). Without ``hardening-enabled`` both calls arrive.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sunbox_stack.servers import InfluxDB, free_port

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "influxdb"
PLAY_VENV = ROOT / ".play-venv" / "bin"

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(not (PLAY_VENV / "ansible").exists(), reason="run ./play.sh lint once to create .play-venv"),
]


def render_config(dest: Path) -> None:
    """roles/influxdb/templates/config.toml.j2 with the role's defaults, by ansible's template module."""
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    var_file = dest.parent / "influxdb-vars.json"
    var_file.write_text(json.dumps(variables))
    result = subprocess.run(
        [str(PLAY_VENV / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={PLAY_VENV / 'python'}", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / 'config.toml.j2'} dest={dest} mode=0600", "-e", f"@{var_file}"],
        capture_output=True, text=True, check=False, timeout=120,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def recorder(hits: list[str]) -> type[http.server.BaseHTTPRequestHandler]:
    """A handler that notes the path of every request it gets."""

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            return None

    return Recorder


def flux(db: InfluxDB, query: str) -> str:
    request = urllib.request.Request(
        f"{db.url}/api/v2/query?org={db.org}",
        data=query.encode(),
        headers={"Authorization": f"Token {db.token}", "Content-Type": "application/vnd.flux"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


@pytest.mark.parametrize("hardened", [False, True], ids=["without-the-role", "with-the-role"])
def test_flux_cannot_reach_the_network(tmp_path: Path, hardened: bool) -> None:
    if hardened:
        # influxd reads config.toml from INFLUXD_CONFIG_PATH (the stack sets it to the
        # work directory); the stack's flags still choose the paths and the port
        render_config(tmp_path / "config.toml")
        assert "hardening-enabled = true" in (tmp_path / "config.toml").read_text()
    hits: list[str] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), recorder(hits))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = InfluxDB("influxd", free_port(), tmp_path)
    db.start()
    try:
        target = f"http://127.0.0.1:{server.server_port}"
        rows = 'import "array"\narray.from(rows: [{{v: {}}}])'
        get = flux(db, 'import "experimental/http"\n' + rows.format(f'http.get(url: "{target}/get").statusCode'))
        post = flux(db, 'import "http"\n' + rows.format(f'http.post(url: "{target}/post", data: bytes(v: "x"))'))
    finally:
        db.stop()
        server.shutdown()
    if hardened:
        assert hits == [], f"Flux reached {hits}"
        assert "error calling function" in get and "error calling function" in post, (get, post)
    else:  # the control: the same queries do reach the network without the role's file
        assert sorted(hits) == ["/get", "/post"], (hits, get, post)
