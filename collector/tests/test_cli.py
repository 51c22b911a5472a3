"""``sunbox decode`` prints data-model JSON and exits 1 on a bad frame."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from sunbox.cli import SOLAR_ADVERT_KEY


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sunbox.cli", *args], capture_output=True, text=True, timeout=60)


def test_decode_jbd() -> None:
    result = run("decode", "jbd", "dd03001d0536ffcb4ff253340001309b00000000000044600304030bb70bbf0bb9f84c77")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["voltage"] == 13.34 and values["current"] == -0.53 and values["soc"] == 96


def test_decode_litime() -> None:
    frame = "0103260064008f05c900d31bff008f000200000321036804ba0000800400000003000017e000000000a884"
    result = run("decode", "litime", frame)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pv_voltage"] == 80.1


def test_decode_bad_frame_exits_1() -> None:
    result = run("decode", "jbd", "dd03001d0536ffcb4ff253340001309b00000000000044600304030bb70bbf0bb9f84d77")
    assert result.returncode == 1
    assert "checksum" in result.stderr
    assert run("decode", "litime", "zz").returncode == 1


def test_scan_lists_devices_with_their_driver(tmp_path: object) -> None:
    """`sunbox scan` against `sunbox sim` (bumble over TCP): every simulated device, its RSSI, its driver."""
    import socket
    import time
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sunbox.cli",
            "sim",
            "--hci",
            f"tcp-server:127.0.0.1:{port}",
            "--smartsolar-address",
            "F9:3E:4C:00:00:09",
            "--victron-advert-address",
            "D0:00:00:00:00:01",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        config = Path(str(tmp_path)) / "sunbox.yaml"
        config.write_text(
            "mqtt: {username: u, password: p}\n"
            f"ble: {{backend: bumble, bumble_transport: 'tcp-client:127.0.0.1:{port}'}}\n"
        )
        time.sleep(2)
        result = run("scan", "-c", str(config), "-t", "3")
        inventory = run("scan", "--inventory", "-c", str(config), "-t", "3")
    finally:
        sim.terminate()
        sim.wait(10)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ADDRESS", "RSSI", "DRIVER", "NAME", "NOTE"]
    lines = {line.split()[0]: line.split() for line in rows}
    assert lines["A4:C1:37:00:00:01"][3] == "jbd"
    assert lines["C8:47:80:00:00:02"][3] == "litime"
    assert lines["F9:3E:4C:00:00:09"][3] == "smartsolar"
    assert lines["D0:00:00:00:00:01"][3] == "victron-advert"
    assert "Instant Readout on (BlueSolar" in result.stdout
    assert all(int(parts[1]) < 0 and parts[2] == "dBm" for parts in lines.values()), "an RSSI in dBm"
    assert len({row.index(" dBm") for row in rows}) == 1, "the columns line up"

    snippet = yaml.safe_load(inventory.stdout)
    by_address = {d["address"]: d for d in snippet["sunbox_devices"]}
    assert {by_address[a]["driver"] for a in by_address} == {"jbd", "litime", "smartsolar"}
    assert by_address["A4:C1:37:00:00:01"]["password"] == "{{ vault_sunbox_battery_1_password }}"
    [advert] = snippet["sunbox_victron_adverts"]
    assert advert["address"] == "D0:00:00:00:00:01" and advert["key"] == "{{ vault_sunbox_victron_1_key }}"
    assert "Instant readout details" in inventory.stdout and "one connection at a time" in inventory.stdout
    # what the collector role renders from it is a valid collector configuration
    rendered = Path(str(tmp_path)) / "rendered.yaml"
    devices = [{**d, "password": "123456"} if "password" in d else d for d in snippet["sunbox_devices"]]
    adverts = [{**a, "key": SOLAR_ADVERT_KEY} for a in snippet["sunbox_victron_adverts"]]
    rendered.write_text(
        yaml.safe_dump({"mqtt": {"username": "u", "password": "p"}, "devices": devices, "victron_adverts": adverts})
    )
    assert run("run", "--check", "-c", str(rendered)).returncode == 0


def test_web_check_names_the_key_or_the_unreadable_secret(tmp_path: Path) -> None:
    bad_port = tmp_path / "port.yaml"
    bad_port.write_text("mqtt: {username: u, password: p}\ninflux: {token: t}\nport: 0\n")
    result = run("web", "--check", "-c", str(bad_port))
    assert result.returncode == 2 and "port:" in result.stderr and "Traceback" not in result.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"mqtt: {{username: u, password_file: {tmp_path}/nope}}\ninflux: {{token: t}}\n")
    result = run("web", "--check", "-c", str(missing))
    assert result.returncode == 2 and "nope" in result.stderr and "Traceback" not in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text("mqtt: {username: u, password: p}\ninflux: {token: t}\n")
    assert run("web", "--check", "-c", str(good)).returncode == 0


def test_no_user_error_ends_in_a_traceback(tmp_path: Path) -> None:
    """Every subcommand with bad input: one line on stderr, exit 1 or 2 (issue 18)."""
    no_devices = tmp_path / "empty.yaml"
    no_devices.write_text("mqtt: {username: u, password: p}\n")
    no_secret = tmp_path / "secret.yaml"
    no_secret.write_text(
        f"mqtt: {{username: u, password_file: {tmp_path}/gone}}\n"
        "devices: [{id: b1, driver: jbd, address: 'A4:C1:37:00:00:01'}]\n"
    )
    cases = [
        ((), "COMMAND"),
        (("influx",), "apply,render"),
        (("decode", "jbd", "zz"), "not hex"),
        (("decode", "vedirect", str(tmp_path / "none.dump")), "none.dump"),
        (("sim-vedirect", str(tmp_path / "none.dump")), "none.dump"),
        (("run", "-c", str(tmp_path / "none.yaml")), "none.yaml"),
        (("run", "--check", "-c", str(no_devices)), "devices:"),
        (("run", "--check", "-c", str(no_secret)), "mqtt.password_file"),
        (("store", "-c", str(tmp_path / "none.yaml")), "none.yaml"),
        (("web", "-c", str(tmp_path / "none.yaml")), "none.yaml"),
        (("scan", "--timeout", "soon"), "timeout"),
        (("influx", "apply", "--token-file", str(tmp_path / "none.token")), "none.token"),
    ]
    for args, words in cases:
        result = run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode in (1, 2), (args, result.returncode, result.stderr)
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, (args, result.stderr)


def test_version_and_defaults_in_help() -> None:
    assert run("--version").stdout.strip().startswith("sunbox ")
    assert "default: /etc/sunbox/sunbox.yaml" in run("run", "--help").stdout


def test_a_closed_pipe_is_not_an_error_message() -> None:
    fixture = Path(__file__).parent / "fixtures" / "vedirect_bvm702.dump"
    command = [sys.executable, "-m", "sunbox.cli", "decode", "vedirect", str(fixture)]
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert producer.stdout is not None and producer.stderr is not None
    first = producer.stdout.readline()
    producer.stdout.close()  # as `| head -1` does
    producer.wait(60)
    assert first.startswith(b"{") and b"Traceback" not in producer.stderr.read()
