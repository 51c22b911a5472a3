"""``sunbox backup``: the real CLI against real InfluxDB servers (issue 28).

A source InfluxDB seeded like the display's tests (23 h of raw readings for three
devices, every tier back to its retention), backed up into a target directory, then
restored into a second, freshly set up InfluxDB: every reading per device and every tier
point must be there, the downsampling tasks too, and the archived files unpacked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from influxdb_client import InfluxDBClient
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.backup import generations
from sunbox.backup import state as backup_state
from sunbox.storage import layout
from sunbox_stack import seed
from sunbox_stack.servers import InfluxDB, Mosquitto, free_port

from .mounts import ssh_host, sshfs, tmpfs

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("backup")]

LAYOUT = layout.parse(None)
BUCKETS = list(LAYOUT.buckets())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB("influxd", free_port(), tmp_path_factory.mktemp("source"))
    server.start()
    seed.seed_history(server)
    yield server
    server.stop()


def sunbox(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sunbox.cli", "backup", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def write_config(where: Path, influx: InfluxDB, target: Path, **extra: Any) -> Path:
    """A backup.yaml with the operator token in a 0600 file, the layout, and two
    directories of "configuration and state" to archive."""
    where.mkdir(parents=True, exist_ok=True)
    token = where / "operator-token"
    token.write_text(influx.token)
    token.chmod(0o600)
    storage = where / "storage.yaml"
    storage.write_text(yaml.safe_dump({"org": "sunbox"}))
    etc = where / "etc-sunbox"
    etc.mkdir(exist_ok=True)
    (etc / "sunbox.yaml").write_text("mqtt: {host: localhost}\n")
    state = where / "var-lib-sunbox"
    state.mkdir(exist_ok=True)
    (state / "queue.sqlite3").write_bytes(b"live sqlite, never archived")
    (state / "bonds.json").write_text('{"bat1": "key"}\n')
    config = {
        "influx": {"url": influx.url, "token_file": str(token)},
        "target": str(target),
        "require_mount": False,
        "layout": str(storage),
        "include": [str(etc), str(state), str(where / "absent")],
        "state_file": str(where / "state" / "state.json"),
        **extra,
    }
    path = where / "backup.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def contents(influx: InfluxDB, token: str, bucket: str) -> dict[tuple[str, str, str, str], Any]:
    """Every point of a bucket over 11 years: (measurement, device, field, time) -> value."""
    query = f'from(bucket: "{bucket}") |> range(start: -4020d)'
    with InfluxDBClient(url=influx.url, token=token, org="sunbox", timeout=120_000) as client:
        tables = client.query_api().query(query)
    return {
        (r.get_measurement(), r.values.get("device", ""), r.get_field(), r.get_time().isoformat()): r.get_value()
        for t in tables
        for r in t.records
    }


def readings_per_device(points: dict[tuple[str, str, str, str], Any]) -> dict[str, int]:
    times: dict[str, set[str]] = {}
    for measurement, device, _field, when in points:
        if measurement != "health":
            times.setdefault(device, set()).add(when)
    return {device: len(t) for device, t in times.items()}


def test_a_backup_restores_onto_a_fresh_influxdb_with_every_reading(source: InfluxDB, tmp_path: Path) -> None:
    before = {bucket: contents(source, source.token, bucket) for bucket in BUCKETS}
    config = write_config(tmp_path / "pi", source, tmp_path / "stick")
    (tmp_path / "stick").mkdir()
    started = time.monotonic()
    run = sunbox("run", "-c", str(config))
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    (generation,) = generations.generations(tmp_path / "stick")
    assert oct(generation.stat().st_mode & 0o777) == "0o700", "the backup holds tokens and keys"
    state = json.loads((tmp_path / "pi" / "state" / "state.json").read_text())
    assert state["ok"] and state["last_success"]["path"] == str(generation)
    size = state["last_success"]["size_bytes"]
    print(f"backup of 23 h raw + every tier to its retention: {size / 1e6:.1f} MB in {took:.1f} s")
    check = sunbox("verify", str(generation), "--layout", str(tmp_path / "pi" / "storage.yaml"))
    assert check.returncode == 0 and json.loads(check.stdout)["size_bytes"] == size, check.stderr

    # a freshly set up InfluxDB (as a new Pi's play leaves it), then the restore
    fresh = InfluxDB("influxd", free_port(), tmp_path / "fresh")
    fresh.start()
    try:
        root = tmp_path / "new-pi"
        restore = sunbox(
            "restore",
            str(generation),
            "--url",
            fresh.url,
            "--token-file",
            "-",
            "--root",
            str(root),
            "--layout",
            str(tmp_path / "pi" / "storage.yaml"),
            stdin=fresh.token,
        )
        assert restore.returncode == 0, restore.stderr
        # the restored metadata carries the source's operator token
        after = {bucket: contents(fresh, source.token, bucket) for bucket in BUCKETS}
        for bucket in BUCKETS:
            assert after[bucket] == before[bucket], (
                f"{bucket}: {len(after[bucket])} points, {len(before[bucket])} before"
            )
        raw = readings_per_device(after[LAYOUT.raw_bucket])
        assert raw == readings_per_device(before[LAYOUT.raw_bucket]) and set(raw) == {"bat1", "bat2", "mppt", "bank1"}
        assert min(raw.values()) >= 23 * 60 - 2
        with InfluxDBClient(url=fresh.url, token=source.token, org="sunbox") as client:
            tasks = {t.name for t in client.tasks_api().find_tasks(org="sunbox")}
        assert tasks == {LAYOUT.task_name(t) for t in LAYOUT.tiers} | {LAYOUT.energy_task}
        unpacked = root / (tmp_path / "pi" / "var-lib-sunbox").relative_to("/")
        assert (unpacked / "bonds.json").read_text() == '{"bat1": "key"}\n'
        assert not (unpacked / "queue.sqlite3").exists(), "the live queue is not archived"
    finally:
        fresh.stop()


def test_generations_rotate_and_a_damaged_one_fails_verification(source: InfluxDB, tmp_path: Path) -> None:
    target = tmp_path / "stick"
    target.mkdir()
    config = write_config(tmp_path / "pi", source, target, generations=2)
    (target / f".sunbox-{os.uname().nodename}-20000101T000000Z.partial").mkdir()  # left by a crash
    for _ in range(3):
        assert sunbox("run", "-c", str(config)).returncode == 0
        time.sleep(1.1)  # generations are named by the second
    kept = generations.generations(target)
    assert len(kept) == 2 and not [p for p in target.iterdir() if p.name.endswith(".partial")]
    shard = sorted((kept[-1] / "influxdb").glob("*.tar.gz"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    check = sunbox("verify", str(kept[-1]))
    assert check.returncode == 1 and shard.name in check.stderr and "checksum" in check.stderr


def test_a_failed_run_is_recorded_and_keeps_the_last_success(source: InfluxDB, tmp_path: Path) -> None:
    target = tmp_path / "stick"
    target.mkdir()
    config = write_config(tmp_path / "pi", source, target)
    assert sunbox("run", "-c", str(config)).returncode == 0
    state_file = tmp_path / "pi" / "state" / "state.json"
    success = json.loads(state_file.read_text())["last_success_ms"]
    # the stick is not mounted
    unplugged = write_config(tmp_path / "pi", source, target, require_mount=True)
    run = sunbox("run", "-c", str(unplugged))
    assert run.returncode == 1 and "not a mount point" in run.stderr
    state = json.loads(state_file.read_text())
    assert not state["ok"] and "not a mount point" in state["error"] and state["last_success_ms"] == success
    # InfluxDB does not answer: nothing half-made is left behind
    away = write_config(tmp_path / "pi", source, target)
    text = away.read_text().replace(source.url, f"http://127.0.0.1:{free_port()}")
    away.write_text(text)
    run = sunbox("run", "-c", str(away))
    assert run.returncode == 1 and "backup into" in run.stderr
    assert len(generations.generations(target)) == 1 and not [p for p in target.iterdir() if p.name.startswith(".")]
    bad = sunbox("run", "-c", str(tmp_path / "pi" / "missing.yaml"))
    assert bad.returncode == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs as the USB stick (root)")
def test_a_mounted_stick_is_written_and_a_full_one_fails_cleanly(source: InfluxDB, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "stick", size="64m") as stick:
        config = write_config(tmp_path / "pi", source, stick, require_mount=True)
        assert sunbox("run", "-c", str(config)).returncode == 0
    with tmpfs(tmp_path / "tiny", size="256k") as tiny:
        config = write_config(tmp_path / "pi2", source, tiny, require_mount=True)
        run = sunbox("run", "-c", str(config))
        assert run.returncode == 1 and "No space left" in run.stderr
        assert list(tiny.iterdir()) == [], "a partial generation is removed"


ROLE_DEFAULTS = yaml.safe_load((Path(__file__).parents[2] / "roles/backup/defaults/main.yml").read_text())


def role_ssh_options(port: int, key: Path, known_hosts: Path) -> str:
    """The options of the role's fstab line (roles/backup/tasks/main.yml), with this
    host's port, key and known_hosts in place of /etc/sunbox's."""
    options = ROLE_DEFAULTS["backup_ssh_options"].replace(" ", "")
    return f"{options},port={port},IdentityFile={key},UserKnownHostsFile={known_hosts}"


@pytest.mark.skipif(os.geteuid() != 0, reason="runs sshd and mounts with sshfs (root)")
def test_a_lan_host_over_ssh_receives_verified_generations(source: InfluxDB, tmp_path: Path) -> None:
    """The SSH target as the role sets it up: a real OpenSSH server, Debian's sshfs with
    the role's options, ``sunbox backup run`` into the mount; the generations land on the
    host's own disk, whole and verified, rotated; a host showing another key is refused."""
    with ssh_host(tmp_path / "nas", free_port()) as nas:
        options = role_ssh_options(nas.port, nas.client_key, nas.known_hosts)
        with sshfs(nas.target, tmp_path / "mnt", options) as mount:
            config = write_config(tmp_path / "pi", source, mount, require_mount=True, generations=2)
            for _ in range(3):
                run = sunbox("run", "-c", str(config))
                assert run.returncode == 0, run.stderr
                time.sleep(1.1)  # generations are named by the second
        kept = generations.generations(nas.root)  # read on the host's side, not through the mount
        assert len(kept) == 2 and sorted(p.name for p in nas.root.iterdir()) == [p.name for p in kept]
        assert all(oct(p.stat().st_mode & 0o777) == "0o700" for p in kept), "the backup holds tokens and keys"
        for generation in kept:
            check = sunbox("verify", str(generation), "--layout", str(tmp_path / "pi" / "storage.yaml"))
            assert check.returncode == 0, check.stderr
        state = json.loads((tmp_path / "pi" / "state" / "state.json").read_text())
        assert state["ok"] and state["last_success"]["size_bytes"] > 100_000

        other = tmp_path / "other_known_hosts"  # the host's name with another host's key
        other.write_text(nas.known_hosts.read_text().split()[0] + " " + nas.client_key.with_suffix(".pub").read_text())
        logins = nas.log.read_text().count("Accepted publickey")
        with (
            pytest.raises(subprocess.CalledProcessError),
            sshfs(nas.target, tmp_path / "mnt2", role_ssh_options(nas.port, nas.client_key, other)),
        ):
            pass
        assert not (tmp_path / "mnt2").is_mount()
        assert nas.log.read_text().count("Accepted publickey") == logins, "refused before it logged in"


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (None, "none"),
        ({"ok": True, "last_success_ms": 1_000_000_000_000 - 3600_000, "last_success": {"size_bytes": 5}}, "ok"),
        ({"ok": True, "last_success_ms": 1_000_000_000_000 - 3 * 86_400_000}, "overdue"),
        ({"ok": False, "error": "not a mount point"}, "overdue"),
        ([1, 2], "unknown"),
    ],
)
def test_the_display_summary_of_the_last_run(state: Any, status: str) -> None:
    summary = backup_state.summary(state, now_ms=1_000_000_000_000, max_age_s=2 * 86_400)
    assert summary["status"] == status
    if status == "ok":
        assert summary["age_s"] == 3600 and summary["size_bytes"] == 5


def test_an_unreadable_state_file_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    assert backup_state.read_summary(tmp_path / "state.json", 0)["status"] == "unknown"
    assert backup_state.read_summary(tmp_path / "absent.json", 0)["status"] == "none"


def retained(server: Mosquitto, topic_filter: str, expect: int, timeout: float = 20.0) -> dict[str, Any]:
    """The retained messages under ``topic_filter`` (JSON), once ``expect`` of them arrived."""
    got: dict[str, Any] = {}
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(server.username, server.password)
    client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(topic_filter, 1)
    client.on_message = lambda _c, _u, m: got.__setitem__(m.topic, json.loads(m.payload)) if m.retain else None
    client.connect("127.0.0.1", server.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def test_each_run_is_published_retained_for_home_assistant(
    source: InfluxDB, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    prefix, discovery = f"t{uuid.uuid4().hex[:6]}", f"ha{uuid.uuid4().hex[:6]}"
    target = tmp_path / "stick"
    target.mkdir()
    broker = {
        "host": "127.0.0.1",
        "port": mosquitto.port,
        "username": mosquitto.username,
        "password": mosquitto.password,
        "topic_prefix": prefix,
        "discovery_prefix": discovery,
    }
    config = write_config(tmp_path / "pi", source, target, mqtt=broker)
    assert sunbox("run", "-c", str(config)).returncode == 0
    state = retained(mosquitto, f"{prefix}/backup/state", 1)[f"{prefix}/backup/state"]
    assert state["ok"] is True and state["error"] is None and state["size_bytes"] > 100_000
    assert state["last_success"].endswith("+00:00") and state["last_success"] <= state["time"]
    configs = retained(mosquitto, f"{discovery}/#", 3)
    assert sorted(configs) == [
        f"{discovery}/binary_sensor/sunbox_backup/problem/config",
        f"{discovery}/sensor/sunbox_backup/last_success/config",
        f"{discovery}/sensor/sunbox_backup/size_bytes/config",
    ]
    stamp = configs[f"{discovery}/sensor/sunbox_backup/last_success/config"]
    assert stamp["device_class"] == "timestamp" and stamp["state_topic"] == f"{prefix}/backup/state"
    assert stamp["default_entity_id"] == "sensor.sunbox_backup_last_success"

    # a failed run says so and keeps the last success
    unplugged = write_config(tmp_path / "pi", source, target, mqtt=broker, require_mount=True)
    assert sunbox("run", "-c", str(unplugged)).returncode == 1
    failed = retained(mosquitto, f"{prefix}/backup/state", 1)[f"{prefix}/backup/state"]
    assert failed["ok"] is False and "not a mount point" in failed["error"]
    assert failed["last_success"] == state["last_success"] and failed["size_bytes"] == state["size_bytes"]

    # a broker away never fails the backup
    away = write_config(tmp_path / "pi", source, target, mqtt=broker | {"port": free_port()})
    run = sunbox("run", "-c", str(away))
    assert run.returncode == 0 and "backup state not published to MQTT" in run.stderr
