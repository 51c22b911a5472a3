"""The virtual Pi after the play: what a user would check on a real one (testinfra).

Runs from molecule's verify step, after a converge and a second converge that changed
nothing (molecule's idempotence step). Commands run inside the guest over SSH.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

SERVICES = [
    "mosquitto",
    "influxdb",
    "sunbox-store",
    "sunbox-collector",
    "sunbox-web",
    "sunbox-alarms",
    "bluetooth",
    "nftables",
    "ssh",
]
DEVICES = {"advert", "battery", "mppt", "paired", "shunt", "solar"}
TIERS = ["2m", "5m", "30m", "2h"]
#: How long the services must run before the restart check and the memory report, in s
#: from the collector's start. The test command keeps it short; the memory benchmark
#: sets SUNBOX_VPI_SOAK_S=600 (`./play.sh virtual-pi --soak 600`, docs/virtual-pi.md).
SOAK_S = float(os.environ.get("SUNBOX_VPI_SOAK_S", "120"))


@pytest.fixture(scope="module")
def secrets() -> dict[str, Any]:
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "vm" / "vars.yml"
    return yaml.safe_load(path.read_text())


def influx(host: Any, token: str, method: str, path: str, body: str | None = None, flux: bool = False) -> Any:
    cmd = ["curl", "-sS", "--fail-with-body", "-X", method, "-H", f"Authorization: Token {token}"]
    if body is not None:
        kind = "application/vnd.flux" if flux else "application/json"
        cmd += ["-H", f"Content-Type: {kind}", "-H", "Accept: application/csv", "--data-binary", body]
    result = host.run(" ".join(shlex.quote(c) for c in cmd) + " " + shlex.quote(f"http://localhost:8086{path}"))
    assert result.rc == 0, f"{method} {path}: {result.stdout} {result.stderr}"
    return result.stdout if flux else json.loads(result.stdout or "null")


def show(host: Any, units: list[str], props: list[str]) -> dict[str, dict[str, str]]:
    """`systemctl show` of several units in one command (each command is a round trip to an
    emulated guest, 1-2 s while its services run): unit -> property -> value."""
    argv = ["systemctl", "show", *[f"--property={p}" for p in ["Id", *props]], *units]
    out = host.run(" ".join(shlex.quote(a) for a in argv))
    assert out.rc == 0, out.stderr
    shown = {}
    for block in out.stdout.strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        shown[values["Id"]] = values
    return shown


@pytest.fixture(scope="module")
def release(host: Any) -> str:
    """The guest's Debian release (trixie: today's Raspberry Pi OS; bookworm: its Legacy)."""
    codename = host.run(". /etc/os-release && echo $VERSION_CODENAME").stdout.strip()
    print(f"release: {codename}")
    return str(codename)


@pytest.fixture(scope="module")
def unit_states(host: Any) -> dict[str, dict[str, str]]:
    return show(host, [f"{s}.service" for s in SERVICES], ["ActiveState", "UnitFileState"])


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_active_and_enabled(unit_states: dict[str, dict[str, str]], name: str) -> None:
    state = unit_states[f"{name}.service"]
    assert state["ActiveState"] == "active", f"{name} is not running: {state}"
    assert state["UnitFileState"] == "enabled", f"{name} does not start at boot: {state}"


def test_sunbox_services_run_unprivileged_and_hardened(host: Any) -> None:
    # issue 16, item 12: a user per service; none reads another's configuration or token;
    # systemd's watchdog on each (READY=1 and pings, sunbox.systemd); the writer on loopback
    users = {
        "sunbox-collector": "sunbox",
        "sunbox-store": "sunbox-store",
        "sunbox-web": "sunbox-web",
        "sunbox-alarms": "sunbox-alarms",
    }
    props = [
        "User",
        "ProtectSystem",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "Type",
        "WatchdogUSec",
        "NotifyAccess",
    ]
    shown = show(host, [f"{u}.service" for u in users], [*props, "IPAddressDeny", "IPAddressAllow"])
    for unit, user in users.items():
        unit_props = shown[f"{unit}.service"]
        assert unit_props["User"] == user, unit_props
        assert unit_props["ProtectSystem"] == "strict", unit_props
        assert unit_props["NoNewPrivileges"] == "yes", unit_props
        assert unit_props["CapabilityBoundingSet"] == "", unit_props
        assert unit_props["Type"] == "notify" and unit_props["NotifyAccess"] == "main", unit_props
        assert unit_props["WatchdogUSec"] not in ("0", "infinity"), unit_props
    store = shown["sunbox-store.service"]
    assert "0.0.0.0/0" in store["IPAddressDeny"] and "127.0.0.0/8" in store["IPAddressAllow"], store
    secrets_of = {
        "sunbox": ["/etc/sunbox/sunbox.yaml"],
        "sunbox-store": ["/etc/sunbox/store.yaml", "/etc/sunbox/influx-writer-token"],
        "sunbox-web": ["/etc/sunbox/web.yaml", "/etc/sunbox/influx-dashboards-token"],
        "sunbox-alarms": ["/etc/sunbox/alarms.yaml"],
    }
    pairs = [(user, path) for user in secrets_of for files in secrets_of.values() for path in files]
    script = "; ".join(
        f"runuser -u {user} -- head -c1 {path} >/dev/null 2>&1 && echo {user} {path} yes || echo {user} {path} no"
        for user, path in pairs
    )
    with host.sudo():
        out = host.run(script)
    readable = {(user, path): ok == "yes" for user, path, ok in (line.split() for line in out.stdout.splitlines())}
    assert len(readable) == len(pairs), out.stdout + out.stderr
    for user, path in pairs:
        mine = path in secrets_of[user]
        assert readable[(user, path)] == mine, f"{user} reading {path}: {readable[(user, path)]}"


def flux_records(host: Any, token: str, query: str) -> list[dict[str, str]]:
    """The rows a Flux query returns, as mappings of column to value (each table of the
    CSV has its own header, after a blank line)."""
    records = []
    header: list[str] = []
    for row in csv.reader(influx(host, token, "POST", "/api/v2/query?org=sunbox", query, flux=True).splitlines()):
        if not row or not any(row):
            header = []
        elif not header:
            header = row
        else:
            records.append(dict(zip(header, row, strict=False)))
    return records


def devices_in_the_last_minute(host: Any, token: str) -> set[str]:
    """The devices with at least one reading in the raw bucket in the last minute."""
    query = (
        'from(bucket: "sunbox_raw") |> range(start: -1m) '
        '|> filter(fn: (r) => r._field == "rssi" or r._field == "voltage" or r._field == "battery_voltage" '
        'or r._field == "soc" or r._field == "pv_power") '
        '|> keep(columns: ["device"]) |> group() |> distinct(column: "device")'
    )
    csv = influx(host, token, "POST", "/api/v2/query?org=sunbox", query, flux=True)
    return {line.split(",")[-1].strip() for line in csv.splitlines()[1:] if line.strip()}


def test_every_simulated_device_reaches_the_raw_bucket_within_a_minute(host: Any, secrets: dict[str, Any]) -> None:
    token = secrets["sunbox_influxdb_admin_token"]
    seen: set[str] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        seen = devices_in_the_last_minute(host, token)
        if seen >= DEVICES:
            break
        time.sleep(10)
    assert seen >= DEVICES, f"devices with readings in the last minute: {sorted(seen)}; expected {sorted(DEVICES)}"


def test_the_bank_is_stored_with_both_packs_and_the_meters_soc(host: Any, secrets: dict[str, Any]) -> None:
    """Issue 31: the bank ``house`` (packs ``battery`` and ``paired``, meter ``shunt``)
    reaches the raw bucket like any device, counts both packs, takes the BMV's SOC and
    sums the packs' capacities."""
    token = secrets["sunbox_influxdb_admin_token"]
    query = (
        'from(bucket: "sunbox_raw") |> range(start: -3m) '
        '|> filter(fn: (r) => (r._measurement == "bank" and r.device == "house") '
        'or (r.device == "shunt" and r._field == "soc") '
        'or ((r.device == "battery" or r.device == "paired") and r._field == "capacity_nominal")) '
        '|> keep(columns: ["_time", "_value", "_field", "device"])'
    )
    bank: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = flux_records(host, token, query)
        newest: dict[str, tuple[str, str]] = {}
        for row in rows:
            if row.get("device") == "house" and row["_time"] >= newest.get(row["_field"], ("", ""))[0]:
                newest[row["_field"]] = (row["_time"], row["_value"])
        bank = {field: value for field, (_, value) in newest.items()}
        if bank.get("packs_fresh") in ("2", "2.0") and bank.get("meter_fresh") == "true":
            break
        time.sleep(10)
    assert bank.get("packs_fresh") in ("2", "2.0") and bank.get("packs_total") in ("2", "2.0"), bank
    assert bank.get("partial") == "false" and bank.get("meter_fresh") == "true", bank
    shunt_socs = {float(r["_value"]) for r in rows if r.get("device") == "shunt"}
    assert float(bank["soc"]) in shunt_socs, f"the bank's SOC {bank['soc']} is not one the meter sent: {shunt_socs}"
    packs = {r["device"]: float(r["_value"]) for r in rows if r["_field"] == "capacity_nominal"}
    assert float(bank["capacity_nominal"]) == pytest.approx(packs["battery"] + packs["paired"]), (bank, packs)


def test_downsampling_tasks_exist_and_succeed(host: Any, secrets: dict[str, Any]) -> None:
    token = secrets["sunbox_influxdb_admin_token"]
    tasks = influx(host, token, "GET", "/api/v2/tasks?org=sunbox")["tasks"]
    by_name = {t["name"]: t for t in tasks}
    assert set(by_name) == {f"sunbox_downsample_{t}" for t in TIERS} | {"sunbox_energy"}, sorted(by_name)
    assert all(t["status"] == "active" for t in tasks)
    runs = {}
    for task in tasks:  # every tier and the energy now, rather than waiting up to 2 h for its schedule
        runs[task["name"]] = (task["id"], influx(host, token, "POST", f"/api/v2/tasks/{task['id']}/runs", "{}")["id"])
    pending = dict(runs)
    deadline = time.monotonic() + 180
    statuses: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for name, (task_id, run_id) in list(pending.items()):
            run = influx(host, token, "GET", f"/api/v2/tasks/{task_id}/runs/{run_id}")
            statuses[name] = run["status"]
            if run["status"] in ("success", "failed", "canceled"):
                pending.pop(name)
        time.sleep(3)
    assert statuses and all(s == "success" for s in statuses.values()), statuses
    # energy counted once (issue 31): the hours the task has not reached, from raw, on the display
    energy = json.loads(host.check_output("curl -fsS 'http://localhost:8080/api/energy?range=24h'"))
    recent = energy["rows"][-2:]  # this hour and the last: this one may have just begun
    assert energy["every"] == "1h" and len(energy["rows"]) == 24, energy
    assert any(r["charged"] is not None and r["solar"] is not None and r["coverage"] > 0 for r in recent), recent


def test_mqtt_refuses_anonymous_clients_wrong_passwords_and_session_takeovers(host: Any) -> None:
    anonymous = host.run("mosquitto_pub -h localhost -t sunbox/intruder/state -m x")
    assert anonymous.rc != 0
    assert "not authori" in (anonymous.stdout + anonymous.stderr).lower()
    wrong = host.run("mosquitto_pub -h localhost -u sunbox-collector -P wrong -t sunbox/x/state -m x")
    assert wrong.rc != 0
    # A right password is shown by every device's readings reaching InfluxDB through the
    # writer's account. It is not tried here: with use_username_as_clientid (issue 16) a
    # second login as any service account takes over that service's session.
    with host.sudo():
        config = host.run("cat /etc/mosquitto/conf.d/sunbox.conf").stdout
    listeners = config.split("\nlistener ")[1:]
    assert listeners and all("use_username_as_clientid true" in block for block in listeners), config


#: Where a leaked operator token would be: configuration, homes, the services' state,
#: logs and temporary files. InfluxDB's own store (/var/lib/influxdb/influxd.bolt) holds
#: it by design, readable by InfluxDB alone (checked below), and is not searched.
TOKEN_SEARCHED = ["/etc", "/root", "/home", "/var/lib/sunbox", "/var/log", "/tmp", "/var/tmp"]
#: the backup service's copy of the operator token (roles/backup), when backups are set up
BACKUP_TOKEN = "/etc/sunbox/backup-influx-token"


def test_the_operator_token_is_in_no_log_and_no_file(host: Any, secrets: dict[str, Any]) -> None:
    """Issue 16, finding 7, and issue 29, finding 6: two plays later, the InfluxDB operator
    token is in no file under :data:`TOKEN_SEARCHED` and not in the journal, and the one
    file that holds it, InfluxDB's bolt store, is 0600 and InfluxDB's.

    It used to be passed in `sunbox influx apply`'s environment, which sudo logs with the
    command, and the tokens it made were left in /root. The journal is read back here, so
    the token never appears on a command line of this test either; the file search names
    only a fragment of it.
    """
    token = secrets["sunbox_influxdb_admin_token"]
    fragment = token[8:32]  # searched for: 24 random characters, not a usable token
    with host.sudo():
        journal = host.run("journalctl -o cat --no-pager").stdout
        leftover = host.file("/root/.sunbox-influx-tokens.json").exists
        found = host.run(f"grep -rlsIF -e {shlex.quote(fragment)} {' '.join(TOKEN_SEARCHED)}")
        bolt = host.run("stat -c '%a %U %G' /var/lib/influxdb/influxd.bolt")
    assert len(journal) > 1000, "the journal was read"
    assert token not in journal, "the operator token is in the journal"
    assert not leftover, "/root/.sunbox-influx-tokens.json was left behind"
    # one exception, only where backups are set up (docs/backup.md): InfluxDB's backup
    # API answers the operator token alone, so the backup service's token file holds it,
    # root's and 0600, read by that service only
    holders = set(found.stdout.split())
    assert holders <= {BACKUP_TOKEN}, f"files holding the operator token: {holders}"
    if BACKUP_TOKEN in holders:
        with host.sudo():
            mode = host.run(f"stat -c '%a %U %G' {BACKUP_TOKEN}").stdout.split()
        assert mode == ["600", "root", "root"], mode
    assert bolt.stdout.split() == ["600", "influxdb", "influxdb"], bolt.stdout + bolt.stderr


#: The issue-29 probe: a GATT write that would reach a BMS over the collector's link (the
#: path need not exist: the bus refuses the message before BlueZ sees it), a scan, and the
#: object tree. Each must be refused for any account but root and the collector.
BLUEZ_CALLS = [
    "org.bluez /org/bluez/hci0/dev_C0_00_00_00_00_01/service000e/char0012 org.bluez.GattCharacteristic1 "
    "WriteValue 'aya{sv}' 7 0xdd 0xa5 0x03 0x00 0xff 0xfd 0x77 0",
    "org.bluez /org/bluez/hci0 org.bluez.Adapter1 StartDiscovery",
    "org.bluez / org.freedesktop.DBus.ObjectManager GetManagedObjects",
    "org.bluez /org/bluez org.bluez.AgentManager1 RegisterAgent os /sunbox/probe KeyboardDisplay",
]


@pytest.mark.parametrize("user", ["sunbox-kiosk", "nobody"])
def test_no_other_local_account_may_send_to_bluez(host: Any, user: str) -> None:
    """Issue 29, finding 1: the kiosk's account and an unprivileged one are refused by the
    bus itself (AccessDenied) for every call to BlueZ; root still reaches it. That the
    collector still reads every device is the device checks' job."""
    script = "; ".join(
        f"runuser -u {user} -- busctl --system call {call} >/dev/null 2>/tmp/bluez-probe; "
        "echo rc=$? $(tr '\\n' ' ' </tmp/bluez-probe)"
        for call in BLUEZ_CALLS
    )
    with host.sudo():
        out = host.run(script + "; rm -f /tmp/bluez-probe")
        root = host.run("busctl --system call org.bluez / org.freedesktop.DBus.ObjectManager GetManagedObjects")
        policy = host.file("/etc/dbus-1/system.d/sunbox-bluez.conf").exists
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(BLUEZ_CALLS), out.stdout + out.stderr
    for call, line in zip(BLUEZ_CALLS, lines, strict=True):
        assert not line.startswith("rc=0") and "access denied" in line.lower(), f"{user}: {call}: {line}"
    assert policy
    assert root.rc == 0 and "org.bluez.Adapter1" in root.stdout, root.stderr


RECOVERY_PROBE = (
    "/opt/sunbox/venv/bin/python -c 'import asyncio, pathlib; from sunbox.ble.kernel_recovery import request; "
    'asyncio.run(request(pathlib.Path("/run/sunbox-adapter-recovery.sock"), "hci0", "probe"))\''
)


def test_only_the_collector_may_ask_for_an_adapter_recovery(host: Any) -> None:
    """Issue 35: the recovery helper's socket is open to the collector's group alone; the
    helper holds CAP_NET_ADMIN and nothing else, and no IP. The probe names no rung, so
    the radio is left alone: the collector's account gets the helper's refusal, any
    other account is refused at connect."""
    with host.sudo():
        sock = host.file("/run/sunbox-adapter-recovery.sock")
        assert sock.is_socket and sock.user == "root" and sock.group == "sunbox" and sock.mode == 0o660
        props = show(
            host,
            ["sunbox-adapter-recovery.service"],
            [
                "CapabilityBoundingSet",
                "AmbientCapabilities",
                "RestrictAddressFamilies",
                "ProtectSystem",
                "NoNewPrivileges",
                "IPAddressDeny",
            ],
        )["sunbox-adapter-recovery.service"]
        collector = host.run(f"runuser -u sunbox -- {RECOVERY_PROBE}")
        nobody = host.run(f"runuser -u nobody -- {RECOVERY_PROBE}")
    assert props["CapabilityBoundingSet"] == "cap_net_admin" == props["AmbientCapabilities"], props
    assert props["ProtectSystem"] == "strict" and props["NoNewPrivileges"] == "yes", props
    assert "AF_BLUETOOTH" in props["RestrictAddressFamilies"] and "AF_INET" not in props["RestrictAddressFamilies"]
    assert "0.0.0.0/0" in props["IPAddressDeny"] or "any" in props["IPAddressDeny"], props
    assert collector.rc != 0 and "not one of mgmt, rfkill" in collector.stderr, collector.stderr
    assert nobody.rc != 0 and "Permission denied" in nobody.stderr, nobody.stderr


def test_influxdb_has_no_profiling_or_metrics_endpoint(host: Any) -> None:
    """Issue 29, finding 2: /metrics and /debug/pprof/* answered any local process."""
    codes = {}
    for path in ("/metrics", "/debug/pprof/cmdline", "/debug/pprof/heap", "/debug/pprof/"):
        out = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8086{path}")
        codes[path] = out.stdout.strip()
    assert all(code not in ("200", "") for code in codes.values()), codes
    assert host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8086/health").stdout.strip() == "200"


#: Reads the display's live stream (a WebSocket) with the venv's aiohttp: prints the
#: device ids of the first (snapshot) message that names every one, within 60 s.
LIVE_STREAM = """
import asyncio, json, sys, aiohttp
want = set(sys.argv[1].split(","))
async def main():
    async with aiohttp.ClientSession() as s:
        for _ in range(12):
            async with s.ws_connect("http://localhost:8080/api/live") as ws:
                ids = {d["device_id"] for d in json.loads((await ws.receive()).data)["devices"]}
            if want <= ids:
                print(",".join(sorted(ids))); return
            await asyncio.sleep(5)
        print("missing", sorted(want - ids)); sys.exit(1)
asyncio.run(main())
"""


def test_the_display_serves_every_page_and_streams_every_device(host: Any) -> None:
    page = host.run("curl -fsS http://localhost:8080/")
    assert page.rc == 0 and "<title>Sunbox</title>" in page.stdout, page.stderr
    for href in ('data-page="now"', 'data-page="history"', 'data-page="cells"', 'data-page="health"'):
        assert href in page.stdout
    for asset in ("/static/app.js", "/static/app.css", "/api/health", "/api/history?quantity=soc&range=1h"):
        assert host.run(f"curl -fsS -o /dev/null http://localhost:8080{asset}").rc == 0, asset
    state = json.loads(host.run("curl -fsS http://localhost:8080/api/state").stdout)
    assert state["broker"]["connected"], state["broker"]
    live = host.run(f"/opt/sunbox/venv/bin/python -c {shlex.quote(LIVE_STREAM)} {','.join(sorted(DEVICES))}")
    assert live.rc == 0, live.stdout + live.stderr
    refused = host.run("curl -s -o /dev/null -w '%{http_code}' -X POST http://localhost:8080/api/state")
    assert refused.stdout.strip() == "405", "the display changes nothing"


def test_the_nightly_backup_reaches_the_stick_and_verifies(host: Any, secrets: dict[str, Any]) -> None:
    """Issue 28: the backup role's service, confined as played, backs up InfluxDB and the
    configuration to the "USB stick" found by its label; the generation verifies against
    the storage layout, the display reports it, and so does MQTT (retained, published as
    the account sunbox-backup; its discovery messages are checked in test_backup.py)."""
    with host.sudo():
        assert host.service("sunbox-backup.timer").is_enabled
        assert "LABEL=SUNBOX-BKP /media/sunbox-backup auto nofail,noauto" in host.file("/etc/fstab").content_string
        assert oct(host.file("/etc/sunbox/backup-influx-token").mode) == "0o600"
        before = _sample_writes(host)
        started = time.monotonic()
        run = host.run("systemctl start sunbox-backup.service")
        took = time.monotonic() - started
        after = _sample_writes(host)
        assert run.rc == 0, run.stderr + host.run("journalctl -u sunbox-backup --no-pager -n 30").stdout
        state = json.loads(host.file("/var/lib/sunbox-backup/state.json").content_string)
        assert state["ok"], state
        generation = state["last_success"]["path"]
        assert generation.startswith("/media/sunbox-backup/sunbox-"), generation
        check = host.run(f"/opt/sunbox/venv/bin/sunbox backup verify {generation} --layout /etc/sunbox/storage.yaml")
        assert check.rc == 0, check.stderr
        assert host.file(generation).mode == 0o700
    print(
        f"backup on the virtual Pi: {state['last_success']['size_bytes'] / 1e6:.1f} MB, "
        f"{state['duration_s']} s in the service, {took:.0f} s for systemctl start; the SD card "
        f"took {(after['disk']['bytes'] - before['disk']['bytes']) / 1000:.0f} kB meanwhile (every service)"
    )
    shown = json.loads(host.check_output("curl -fsS http://localhost:8080/api/health"))["backup"]
    deadline = time.monotonic() + 60  # the display looks every 30 s
    while shown["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(5)
        shown = json.loads(host.check_output("curl -fsS http://localhost:8080/api/health"))["backup"]
    assert shown["status"] == "ok" and shown["size_bytes"] == state["last_success"]["size_bytes"], shown
    password = shlex.quote(secrets["sunbox_mqtt_collector_password"])
    published = json.loads(
        host.check_output(
            f"mosquitto_sub -h localhost -u sunbox-collector -P {password} -t sunbox/backup/state -C 1 -W 10"
        )
    )
    assert published["ok"] and published["size_bytes"] == state["last_success"]["size_bytes"], published


#: The "LAN host" of the SSH backup check: an account on the guest's own sshd.
LAN_HOST_USER = "sunbox-lan-host"
LAN_HOST_DIR = "/srv/sunbox-lan-host"


def test_the_backup_reaches_a_lan_host_over_ssh_through_the_roles_mount(
    host: Any, secrets: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 28: the owner switches the target from the stick to a LAN host over SSH
    (``backup_ssh_target``) and plays again (``--tags backup``). The role's fstab line is
    mounted by systemd for the run (fuse.sshfs, key and host key pinned), the stick the
    last run left mounted is let go, and the confined service writes a generation that
    lands on the host's own disk and verifies there.

    The host is an account on the guest's own sshd (``127.0.0.1``): the path under test
    is the Pi's side, which is the same for any host.
    """
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sunbox-backup", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    public = key.with_suffix(".pub").read_text().strip()
    with host.sudo():
        host.check_output(
            f"id {LAN_HOST_USER} >/dev/null 2>&1 || useradd --system --create-home --home-dir {LAN_HOST_DIR}"
            f" --shell /bin/sh {LAN_HOST_USER}"
            f" && usermod -p '*' {LAN_HOST_USER}"  # no password, not locked: a key may log in
            f" && install -d -m 0700 -o {LAN_HOST_USER} -g {LAN_HOST_USER} {LAN_HOST_DIR}/.ssh {LAN_HOST_DIR}/backups"
            f" && echo {shlex.quote(public)} > {LAN_HOST_DIR}/.ssh/authorized_keys"
            f" && chown {LAN_HOST_USER}: {LAN_HOST_DIR}/.ssh/authorized_keys"
            f" && chmod 0600 {LAN_HOST_DIR}/.ssh/authorized_keys"
        )
        known_hosts = host.check_output("ssh-keyscan -t ed25519 127.0.0.1 2>/dev/null | grep -v '^#'")
    assert known_hosts.startswith("127.0.0.1 ssh-ed25519 "), known_hosts
    target = {
        "backup_usb_label": "",
        "backup_ssh_target": f"{LAN_HOST_USER}@127.0.0.1:{LAN_HOST_DIR}/backups",
        "backup_ssh_known_hosts": known_hosts,
        "backup_ssh_private_key": key.read_text(),
    }
    extra = tmp_path / "ssh-target.yml"
    extra.write_text(yaml.safe_dump(target))
    extra.chmod(0o600)
    project = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    started = time.monotonic()
    played = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(project / "playbooks" / "site.yml"),
            "--tags",
            "backup",
            "-e",
            f"@{Path(os.environ['MOLECULE_EPHEMERAL_DIRECTORY']) / 'vm' / 'vars.yml'}",
            "-e",
            f"@{extra}",
        ],
        cwd=project,
        env=dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(project / "roles")),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    play_s = time.monotonic() - started
    assert played.returncode == 0, played.stdout[-4000:] + played.stderr[-3000:]
    with host.sudo():
        fstab = host.file("/etc/fstab").content_string
        assert f"{target['backup_ssh_target']} /media/sunbox-backup fuse.sshfs noauto,_netdev," in fstab, fstab
        assert "LABEL=SUNBOX-BKP" not in fstab, "one target: the stick's line is replaced"
        assert host.run("findmnt -n /media/sunbox-backup").rc != 0, "the stick the last run mounted is let go"
        for path in ("/etc/sunbox/backup-ssh-key", "/etc/sunbox/backup-known-hosts"):
            secret = host.file(path)
            assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600), path
        started = time.monotonic()
        run = host.run("systemctl start sunbox-backup.service")
        took = time.monotonic() - started
        assert run.rc == 0, run.stderr + host.run("journalctl -u sunbox-backup --no-pager -n 30").stdout
        mounted = host.check_output("findmnt -n -o FSTYPE,SOURCE /media/sunbox-backup").split()
        assert mounted == ["fuse.sshfs", target["backup_ssh_target"]], mounted
        state = json.loads(host.file("/var/lib/sunbox-backup/state.json").content_string)
        assert state["ok"], state
        name = Path(state["last_success"]["path"]).name
        assert state["last_success"]["path"] == f"/media/sunbox-backup/{name}", state
        # on the host's own disk, owned by its account, and whole: verified there
        landed = host.file(f"{LAN_HOST_DIR}/backups/{name}")
        assert landed.is_directory and landed.user == LAN_HOST_USER and landed.mode == 0o700
        check = host.run(
            f"/opt/sunbox/venv/bin/sunbox backup verify {LAN_HOST_DIR}/backups/{name} --layout /etc/sunbox/storage.yaml"
        )
        assert check.rc == 0, check.stderr
    print(
        f"backup to a LAN host over SSH: --tags backup played in {play_s:.0f} s; "
        f"{state['last_success']['size_bytes'] / 1e6:.1f} MB, {state['duration_s']} s in the service, "
        f"{took:.0f} s for systemctl start (the sshfs mount included)"
    )


def test_an_alarm_that_holds_is_raised_and_published_for_every_screen(host: Any, secrets: dict[str, Any]) -> None:
    """Issue 32: the played rule `vpi-check` (the bank below 101 %) is raised by the alarm
    engine inside its confinement, kept in its state file, and retained on MQTT with the
    list of active alarms that the display and Home Assistant read."""
    password = shlex.quote(secrets["sunbox_mqtt_collector_password"])
    sub = f"mosquitto_sub -h localhost -u sunbox-collector -P {password} -C 1 -W 30 -t"
    alarm = json.loads(host.check_output(f"{sub} sunbox/_alarms/vpi-check/house"))
    assert alarm["active"] and alarm["severity"] == "warning" and alarm["value"] < 101, alarm
    active = json.loads(host.check_output(f"{sub} sunbox/_alarms/active"))
    assert "vpi-check/house" in [a["id"] for a in active], active
    with host.sudo():
        saved = json.loads(host.file("/var/lib/sunbox-alarms/state.json").content_string)
    assert "vpi-check/house" in [a["id"] for a in saved["active"]], saved
    assert host.check_output(f"{sub} sunbox/_alarms/availability") == "online"
    # the event, through the writer into the events bucket, back out as History's marker
    url = "http://localhost:8080/api/history?quantity=soc&range=24h"
    deadline = time.monotonic() + 60
    while True:
        marks = json.loads(host.check_output(f"curl -fsS '{url}'"))["alarms"]
        raised = [m for m in marks or [] if (m["rule"], m["device"], m["event"]) == ("vpi-check", "house", "raised")]
        if raised or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert len(raised) == 1 and abs(raised[0]["t"] * 1000 - alarm["raised_ms"]) < 1000, marks


def test_the_display_sees_the_card_writable_through_its_confinement(host: Any) -> None:
    """Issue 28: under ProtectSystem=strict the display sees / read-only; the card's state
    comes from the superblock, so a healthy card is "ok", with its real size."""
    card = json.loads(host.check_output("curl -fsS http://localhost:8080/api/health"))["disk"]
    assert card["status"] in ("ok", "low") and card["fs_type"] == "ext4", card
    assert card["mount_point"] == "/" and card["total_bytes"] > 1e9 and card["free_bytes"] > 0, card


def test_discovery_play_lists_what_the_pi_hears(tmp_path: Path) -> None:
    """`./play.sh discover` (playbooks/discover.yml) against the guest's real BlueZ.

    The collector holds links to the GATT devices, which therefore do not advertise; the
    Instant Readout product always does, so it must be in the snippet with its driver.
    """
    dest = tmp_path / "discovered.yml"
    project = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(project / "playbooks" / "discover.yml"),
            "-e",
            f"sunbox_discover_dest={dest} sunbox_discover_seconds=10",
        ],
        cwd=project,
        env=dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(project / "roles")),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    snippet = yaml.safe_load(dest.read_text())
    adverts = {a["address"]: a for a in snippet["sunbox_victron_adverts"]}
    assert "D0:00:00:00:00:01" in adverts, dest.read_text()
    assert "Instant Readout on (BlueSolar Charger MPPT 75/15)" in dest.read_text()


@pytest.mark.skip(reason="Grafana cannot be obtained on this machine kind (issue 2): the grafana role is not played")
def test_grafana_serves_now_anonymously_and_refuses_anonymous_edits() -> None:
    raise AssertionError("unreachable")


def test_kiosk_units_are_in_place(host: Any) -> None:
    scripts = [
        "/usr/local/lib/sunbox/kiosk-browser",
        "/usr/local/lib/sunbox/kiosk-screen",
        "/usr/local/lib/sunbox/kiosk-watchdog",
    ]
    modes = host.run("stat -c '%a %n' " + " ".join(scripts)).stdout.split()
    assert modes == [x for path in scripts for x in ("755", path)], modes
    timers = [
        "sunbox-kiosk-watchdog.timer",
        "sunbox-screen-on.timer",
        "sunbox-screen-dim.timer",
        "sunbox-screen-off.timer",
    ]
    shown = show(host, ["sunbox-kiosk.service", *timers], ["ActiveState", "UnitFileState"])
    assert shown["sunbox-kiosk.service"]["UnitFileState"] == "enabled", shown["sunbox-kiosk.service"]
    for timer in timers:
        assert shown[timer]["ActiveState"] == "active", shown[timer]
    assert host.run("systemd-analyze verify /etc/systemd/system/sunbox-kiosk.service").rc == 0
    assert host.file("/usr/local/lib/sunbox/kiosk-output").mode == 0o755


def test_the_kiosk_user_is_logged_into_the_desktop_session(host: Any, release: str) -> None:
    """On trixie lightdm's session is rpd-labwc (Raspberry Pi OS's labwc desktop): the role
    logs the kiosk user in and leaves the session as it is."""
    if release != "trixie":
        pytest.skip("the bookworm image has no lightdm configuration to change")
    conf = host.file("/etc/lightdm/lightdm.conf").content_string
    assert "autologin-user = sunbox-kiosk" in conf or "autologin-user=sunbox-kiosk" in conf, conf
    assert "autologin-session=rpd-labwc" in conf, conf


KIOSK = "sunbox-kiosk"
#: `systemd-analyze security` exposure of the Sunbox units on the day issue 16 was filed;
#: they may only go down. The kiosk's must stay below 5 ("OK").
EXPOSURE_CEILING = {
    "sunbox-collector.service": 1.7,
    "sunbox-store.service": 1.4,
    "sunbox-alarms.service": 2.0,
    "sunbox-kiosk.service": 4.9,
}


def test_the_kiosk_user_has_no_sudo_no_secrets_and_no_debugging_port(host: Any) -> None:
    """Issue 16, finding 1: the browser runs as its own user, not as the admin."""
    user = host.user(KIOSK)
    assert user.exists and not {"sudo", "sunbox", "adm", "root"} & set(user.groups), user.groups
    with host.sudo():
        sudo = host.run(f"sudo -l -U {KIOSK}")
        secret = host.run(f"runuser -u {KIOSK} -- cat /etc/sunbox/sunbox.yaml")
        listening = host.run("ss -Htln").stdout
    assert "not allowed to run sudo" in sudo.stdout, sudo.stdout
    assert secret.rc != 0 and "Permission denied" in secret.stderr, "the kiosk reads the collector's secrets"
    assert ":9222" not in listening, listening
    assert host.run("systemctl show -P User sunbox-kiosk.service").stdout.strip() == KIOSK
    assert "--remote-debugging" not in host.file("/usr/local/lib/sunbox/kiosk-browser").content_string


@pytest.mark.parametrize("unit", sorted(EXPOSURE_CEILING))
def test_systemd_exposure_stays_low(host: Any, unit: str) -> None:
    result = host.run(f"systemd-analyze security {unit}")
    last = result.stdout.strip().splitlines()[-1]
    score = float(last.split("level for")[1].split(":")[1].split()[0])
    print(f"{unit}: exposure {score}")
    assert score <= EXPOSURE_CEILING[unit], last


#: The kiosk unit's confinement, for a headless Chromium (no screen on the VM): every
#: [Service] setting but what starts and restarts it.
_NOT_COPIED = ("ExecStart", "Restart", "RestartSec", "User")


def test_chromium_draws_the_display_inside_the_kiosk_confinement(host: Any) -> None:
    """The kiosk unit's sandbox with the real Chromium: a screenshot of Now, as the kiosk user.

    The VM has no GPU, so Chromium renders with SwiftShader (software GL through ANGLE),
    its own sandbox on. Left to pick, Debian trixie's Chromium 156 takes Mesa's llvmpipe,
    whose GPU process the GPU sandbox kills at once (exit 11, six times, then "GPU process
    isn't usable. Goodbye.", exit 255; inside or outside the kiosk's confinement, gone with
    --disable-gpu-sandbox or SwiftShader; 2026-12-05). A Pi renders on its V3D GPU, which
    this VM cannot show."""
    unit = host.file("/etc/systemd/system/sunbox-kiosk.service").content_string
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0]
    props = [
        line.strip()
        for line in service.splitlines()
        if "=" in line and not line.startswith("#") and line.split("=", 1)[0].strip() not in _NOT_COPIED
    ]
    home = host.user(KIOSK).home
    shot = f"{home}/kiosk-check.png"
    browser = "/usr/bin/chromium"
    command = [
        "systemd-run", "--wait", "--collect", "--pipe", "--quiet", f"--uid={KIOSK}", f"--setenv=HOME={home}",
        *[f"--property={p}" for p in props],
        browser, "--headless=new", "--no-first-run", f"--user-data-dir={home}/.cache/kiosk-check",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--window-size=800,480", "--virtual-time-budget=10000", f"--screenshot={shot}", "http://localhost:8080/#now",
    ]  # fmt: skip
    with host.sudo():
        host.run(f"rm -f {shot}")
        # exit status 255 (Chromium's fatal exit) reads as ssh failing to testinfra
        result = host.run("timeout 600 " + " ".join(shlex.quote(c) for c in command) + "; echo rc=$?")
        size = host.run(f"stat -c %s {shot}")
    assert result.stdout.strip().endswith("rc=0") and size.rc == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert int(size.stdout) > 5000, f"screenshot of {size.stdout.strip()} bytes"


def test_ssh_by_key_only_and_firewall(host: Any, release: str) -> None:
    with host.sudo():
        sshd = host.run("sshd -T").stdout
        ruleset = host.run("nft list ruleset").stdout
        cloud_init = host.run("cat /etc/ssh/sshd_config.d/50-cloud-init.conf").stdout
    if release == "trixie":  # Imager's settings through cloud-init: passwords on, and still off for sshd
        assert "PasswordAuthentication yes" in cloud_init, cloud_init
    assert "passwordauthentication no" in sshd
    assert "kbdinteractiveauthentication no" in sshd
    assert "policy drop" in ruleset
    admitted = next(line for line in ruleset.splitlines() if "@lan4 tcp dport" in line)
    assert all(str(port) in admitted for port in (22, 1883, 3000, 8080, 8883)), admitted
    # issue 16, finding 3: the subnets the VM is on (qemu's 10.0.2.0/24), not every private range
    lan4 = ruleset.split("set lan4 {", 1)[1].split("}", 1)[0]
    assert "10.0.2.0/24" in lan4 and "10.0.0.0/8" not in lan4 and "192.168.0.0/16" not in lan4, lan4
    assert host.service("sunbox-lan-sets.timer").is_running


def test_unattended_updates_cover_debian_and_the_raspberry_pi_archive(host: Any) -> None:
    """Issue 16, finding 10: the Pi's archive is added to Debian's origins, not instead of them."""
    patterns = [line for line in host.run("apt-config dump").stdout.splitlines() if "Origins-Pattern" in line]
    assert any("site=archive.raspberrypi.com" in p for p in patterns), patterns
    assert any("origin=Debian" in p and "security" in p for p in patterns), patterns
    assert any("origin=Debian" in p and 'label=Debian";' in p for p in patterns), patterns
    held = host.run("apt-mark showhold").stdout.split()
    assert "influxdb2" in held, held


def test_journal_in_ram_and_no_swap_on_disk(host: Any, release: str) -> None:
    """Nothing swaps to the card: only zram in /proc/swaps, no zram device with a backing
    (writeback) device, no swap file. On trixie, rpi-swap's default (zram with /var/swap on
    the card as its writeback device) is turned to zram alone by the base role's drop-in
    (issue 27); the /proc/swaps check alone would not see a writeback file."""
    marker = f"sunbox-journal-check-{time.time_ns()}"
    with host.sudo():
        host.run(f"logger {marker} && journalctl --sync")
        in_ram = host.run(f"grep -rlas {marker} /run/log/journal").stdout.strip()
        on_disk = host.run(f"grep -rlas {marker} /var/log/journal").stdout.strip()
        backing = host.run("grep -H . /sys/block/zram*/backing_dev 2>/dev/null || true").stdout.split()
        swap_file = host.run("ls -la /var/swap /swapfile 2>&1").stdout
        loops = host.run("losetup --list --noheadings --output BACK-FILE").stdout.split()
        rpi_swap = host.run("cat /etc/rpi/swap.conf.d/*.conf 2>/dev/null || true").stdout
    assert in_ram and not on_disk, (in_ram, on_disk)
    swaps = host.file("/proc/swaps").content_string.splitlines()[1:]
    assert swaps and all(line.startswith("/dev/zram") for line in swaps), swaps
    print(f"swap: {swaps}; zram backing devices: {backing}; loop devices: {loops}")
    assert backing and all(line.endswith(":none") for line in backing), backing
    assert "No such file" in swap_file and "/var/swap" not in loops, (swap_file, loops)
    if release == "trixie":
        assert "Mechanism=zram" in rpi_swap, rpi_swap


def test_mosquitto_reads_its_files_with_no_ownership_warning(host: Any) -> None:
    """Issue 27: Mosquitto 2.0.21 (trixie) reads the password and ACL files after dropping
    to its own user and warns when they are not that user's (future versions refuse them)."""
    with host.sudo():
        # Debian's mosquitto.conf logs to a file; the journal has what it says before that
        journal = host.run(
            "journalctl -u mosquitto -b --no-pager -o cat; cat /var/log/mosquitto/mosquitto.log 2>/dev/null"
        ).stdout
        modes = host.run("stat -c '%a %U %G %n' /etc/mosquitto/sunbox.passwd /etc/mosquitto/sunbox.acl").stdout
    version = host.run("mosquitto -h | head -n1").stdout.strip()
    print(f"{version}; {modes.strip()}")
    assert "Opening ipv4 listen socket" in journal, journal[-2000:]
    warnings = [
        line for line in journal.splitlines() if "Future versions will refuse" in line or "owner is not" in line
    ]
    assert not warnings, warnings
    assert [line.split()[:3] for line in modes.splitlines()] == [["600", "mosquitto", "mosquitto"]] * 2, modes


def test_services_stay_up_and_devices_keep_arriving_through_the_soak(host: Any, secrets: dict[str, Any]) -> None:
    """After SOAK_S s of running: no service restarted, every device still arrives; memory reported."""
    units = [f"{s}.service" for s in SERVICES if s not in ("nftables",)]
    since = int(host.run("systemctl show -P ActiveEnterTimestampMonotonic sunbox-collector.service").stdout)
    uptime = float(host.file("/proc/uptime").content_string.split()[0])
    wait = SOAK_S - (uptime - since / 1e6)
    if wait > 0:
        time.sleep(wait)
    arriving = devices_in_the_last_minute(host, secrets["sunbox_influxdb_admin_token"])
    assert arriving >= DEVICES, f"after the soak, devices still arriving: {sorted(arriving)}"
    # held until stored (issue 16): the writer's reports reach the collector through the
    # real ACLs, so its queue holds only the last seconds' readings, not the soak's; they
    # wait in the fresh queue on tmpfs (issue 28)
    with host.sudo():
        rows = host.run(
            'python3 -c \'import sqlite3; print(*(sqlite3.connect(p).execute("SELECT COUNT(*) FROM queue")'
            '.fetchone()[0] for p in ("/var/lib/sunbox/queue.sqlite3",'
            ' "/run/sunbox-collector/queue-fresh.sqlite3")))\''
        )
    assert rows.rc == 0, rows.stderr
    synced, fresh = (int(n) for n in rows.stdout.split())
    print(f"the collector's queue: {synced} synced rows, {fresh} fresh")
    assert synced + fresh < 100, f"readings waiting in the collector's queue: {synced} synced, {fresh} fresh"
    report = {}
    shown = show(host, units, ["NRestarts", "MemoryCurrent", "ControlGroup"])
    for unit in units:
        props = shown[unit]
        rss_kib = host.run(
            f"for p in $(cat /sys/fs/cgroup{props['ControlGroup']}/cgroup.procs); do "
            "awk '/VmRSS/ {print $2}' /proc/$p/status; done | awk '{s+=$1} END {print s+0}'"
        ).stdout.strip()
        report[unit] = {
            "rss_mib": round(int(rss_kib or 0) / 1024, 1),
            "restarts": int(props["NRestarts"]),
            "memory_current_mib": round(int(props["MemoryCurrent"]) / 2**20, 1)
            if props["MemoryCurrent"].isdigit()
            else None,
        }
    out = Path(os.environ.get("SUNBOX_VPI_REPORT", "/tmp/sunbox-virtual-pi-rss.json"))
    out.write_text(json.dumps({"soak_s": SOAK_S, "units": report}, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    restarted = {u: r["restarts"] for u, r in report.items() if r["restarts"]}
    assert not restarted, f"services restarted during the run: {restarted}"


#: The disk-write benchmark (issue 28): seconds per measured window; 0 (the test
#: command) skips it. `./play.sh virtual-pi --writes 900` measures the appliance as
#: played and then with every reading synced (the `sync_after_s: 0` mode and the settings
#: before issue 28), on the same load. Report: SUNBOX_VPI_WRITES_REPORT.
WRITES_S = float(os.environ.get("SUNBOX_VPI_WRITES_S", "0"))
#: SUNBOX_VPI_WRITES_BASELINE=0 measures the played settings only (a lever's effect).
WRITES_BASELINE = os.environ.get("SUNBOX_VPI_WRITES_BASELINE", "1") != "0"
#: What writes to the card, each with its own cgroup (io.stat counts its page-cache
#: writeback too); the rest of the disk's writes are the kernel's (ext4's journal, jbd2).
WRITERS = ["sunbox-collector", "sunbox-store", "influxdb", "mosquitto", "sunbox-web", "systemd-journald"]

_SAMPLE = r"""
set -e
disk=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" 2>/dev/null || true)
[ -n "$disk" ] || disk=$(basename "$(findmnt -no SOURCE /)")
echo "disk $(cat /sys/block/$disk/stat)"
echo "jbd2 $(head -qn1 /proc/fs/jbd2/*/info | awk '{{s += $1}} END {{print s + 0}}')"
for u in {units}; do
  f=/sys/fs/cgroup/system.slice/$u.service/io.stat
  [ -r "$f" ] || f=/dev/null
  sums='$1 == "wbytes" {{b += $2}} $1 == "wios" {{n += $2}} END {{print b + 0, n + 0}}'
  echo "unit $u $(tr ' ' '\n' < "$f" | awk -F= "$sums")"
done
"""


def _sample_writes(host: Any) -> dict[str, Any]:
    """The guest's write counters now: the root disk's (sectors, writes, flushes), ext4's
    journal commits, and per unit the bytes and writes io.stat counted."""
    with host.sudo():
        out = host.check_output("bash -c " + shlex.quote(_SAMPLE.format(units=" ".join(WRITERS))))
    sample: dict[str, Any] = {"t": time.monotonic(), "units": {}}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "disk":  # Documentation/block/stat.rst: field 5 writes, 7 sectors, 16 flushes
            fields = [int(v) for v in rest]
            flushes = fields[15] if len(fields) > 15 else None
            sample["disk"] = {"writes": fields[4], "bytes": fields[6] * 512, "flushes": flushes}
        elif kind == "jbd2":
            sample["journal_commits"] = int(rest[0]) if rest else None
        elif kind == "unit":
            sample["units"][rest[0]] = {"bytes": int(rest[1]), "writes": int(rest[2])}
    return sample


def _stored_messages(host: Any, token: str, seconds: float) -> dict[str, int]:
    """Per device, the readings and health records the raw bucket holds for the last
    ``seconds``: one per device, measurement and time."""
    query = (
        f'from(bucket: "sunbox_raw") |> range(start: -{int(seconds)}s) '
        '|> keep(columns: ["device", "_measurement", "_time"]) |> group(columns: ["device", "_measurement"]) '
        '|> distinct(column: "_time") |> map(fn: (r) => ({r with _value: 1})) |> sum()'
    )
    out: dict[str, int] = {}
    for record in flux_records(host, token, query):
        out[record["device"]] = out.get(record["device"], 0) + int(record["_value"])
    return out


def _wait_until_every_device_streams(host: Any, token: str, deadline_s: float = 600) -> float:
    """Wait until every simulated device has a reading in the raw bucket from the last
    15 s (a window measured with a device missing measures a smaller load, and the
    collector's retries of it), then one more minute for the writer's backlog; returns
    the seconds waited."""
    start = time.monotonic()
    fresh: set[str] = set()
    while time.monotonic() - start < deadline_s:
        fresh = {d for d, t in reading_times(host, token).items() if any(_epoch(x) > time.time() - 15 for x in t)}
        if fresh >= DEVICES:
            time.sleep(60)
            return round(time.monotonic() - start, 1)
        time.sleep(10)
    raise AssertionError(f"devices streaming {deadline_s:.0f} s into the settle: {sorted(fresh)}")


#: Every fsync, fdatasync and O_SYNC write on ext4 in the window, by the kernel's own
#: tracepoint (tracefs, no tool to install): which process asked, on which file.
_FSYNC_EVENT = "/sys/kernel/tracing/events/ext4/ext4_sync_file_enter/enable"
_FSYNC_LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[\d+\].*ext4_sync_file_enter: .*?ino (?P<ino>\d+)")


def _trace_fsyncs(host: Any, on: bool) -> None:
    with host.sudo():
        if on:
            host.check_output(
                "mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; "
                "echo 4096 > /sys/kernel/tracing/buffer_size_kb && echo > /sys/kernel/tracing/trace && "
                f"echo 1 > {_FSYNC_EVENT}"
            )
        else:
            host.run(f"echo 0 > {_FSYNC_EVENT}")


def _fsyncs_by_process_and_file(host: Any, per_day: float) -> dict[str, Any]:
    """The traced fsyncs per process name and, for the ten busiest files, per path (per day)."""
    with host.sudo():
        trace = host.check_output("cat /sys/kernel/tracing/trace")
    by_comm: dict[str, int] = {}
    by_ino: dict[str, int] = {}
    for line in trace.splitlines():
        match = _FSYNC_LINE.match(line)
        if match:
            by_comm[match["comm"]] = by_comm.get(match["comm"], 0) + 1
            key = f"{match['comm']}:{match['ino']}"
            by_ino[key] = by_ino.get(key, 0) + 1
    files: dict[str, int] = {}
    for key, count in sorted(by_ino.items(), key=lambda kv: -kv[1])[:10]:
        comm, ino = key.rsplit(":", 1)
        with host.sudo():
            path = host.run(f"find / -xdev -inum {ino} -print -quit 2>/dev/null").stdout.strip()
        files[f"{comm} {path or f'inode {ino} (gone)'}"] = round(count * per_day)
    return {
        "fsyncs_per_day_by_process": {c: round(n * per_day) for c, n in sorted(by_comm.items(), key=lambda kv: -kv[1])},
        "fsyncs_per_day_by_file": files,
    }


def _measure_writes(host: Any, token: str, seconds: float) -> dict[str, Any]:
    settled_s = _wait_until_every_device_streams(host, token)
    _trace_fsyncs(host, True)
    first = _sample_writes(host)
    time.sleep(seconds)
    last = _sample_writes(host)
    _trace_fsyncs(host, False)
    elapsed = last["t"] - first["t"]
    per_device = _stored_messages(host, token, elapsed)
    messages = sum(per_device.values())
    per_day = 86_400 / elapsed
    disk = {k: last["disk"][k] - first["disk"][k] for k in ("writes", "bytes") if first["disk"][k] is not None}
    if first["disk"]["flushes"] is not None:
        disk["flushes"] = last["disk"]["flushes"] - first["disk"]["flushes"]
    units = {u: {k: last["units"][u][k] - first["units"][u][k] for k in ("bytes", "writes")} for u in last["units"]}
    kernel = disk["bytes"] - sum(u["bytes"] for u in units.values())
    return {
        "seconds": round(elapsed, 1),
        "settled_s": settled_s,
        "stored_messages": messages,
        "stored_messages_per_device": per_device,
        "disk_mb_per_day": round(disk["bytes"] * per_day / 1e6, 1),
        "disk_bytes_per_message": round(disk["bytes"] / max(messages, 1)),
        "flushes_per_day": None if "flushes" not in disk else round(disk["flushes"] * per_day),
        "flushes_per_message": None if "flushes" not in disk else round(disk["flushes"] / max(messages, 1), 2),
        "journal_commits_per_day": None
        if first.get("journal_commits") is None
        else round((last["journal_commits"] - first["journal_commits"]) * per_day),
        "mb_per_day": {
            **{u: round(v["bytes"] * per_day / 1e6, 2) for u, v in units.items()},
            "kernel (ext4 journal, other)": round(kernel * per_day / 1e6, 2),
        },
        "writes_per_day": {u: round(v["writes"] * per_day) for u, v in units.items()},
        "disk": disk,
        **_fsyncs_by_process_and_file(host, per_day),
    }


def _sed_sync_after_s(value: float) -> str:
    """The command that sets the collector's ``queue.sync_after_s`` in its configuration."""
    return f"sed -i 's/^\\(  sync_after_s:\\).*/\\1 {value}/' /etc/sunbox/sunbox.yaml"


def _set_every_reading_synced(host: Any, synced: bool) -> None:
    """Switch the appliance between its played settings and every reading synced as it is
    taken with the settings before issue 28 (queue.sync_after_s 0, InfluxDB's WAL fsynced
    per write, the writer's 1 s batches); each window waits for every device first."""
    with host.sudo():
        if synced:
            host.check_output(
                "cp -p /etc/sunbox/sunbox.yaml /root/sunbox.yaml.played"
                " && cp -p /etc/sunbox/store.yaml /root/store.yaml.played"
                " && cp -p /etc/influxdb/config.toml /root/config.toml.played"
                f" && {_sed_sync_after_s(0)}"
                " && sed -i 's/^\\(batch_delay_s:\\).*/\\1 1.0/' /etc/sunbox/store.yaml"
                " && sed -i 's/^storage-wal-fsync-delay.*/storage-wal-fsync-delay = \"0s\"/' /etc/influxdb/config.toml"
            )
        else:
            host.check_output(
                "cp -p /root/sunbox.yaml.played /etc/sunbox/sunbox.yaml"
                " && cp -p /root/store.yaml.played /etc/sunbox/store.yaml"
                " && cp -p /root/config.toml.played /etc/influxdb/config.toml"
            )
        host.check_output("systemctl restart influxdb && systemctl restart sunbox-store sunbox-collector")


@pytest.mark.skipif(WRITES_S <= 0, reason="a benchmark: ./play.sh virtual-pi --writes S (docs/storage.md)")
def test_disk_writes_per_stored_message(host: Any, secrets: dict[str, Any]) -> None:
    """Issue 28's benchmark: bytes, writes and flushes reaching the card per stored
    message and per day, per service, as played and with every reading synced."""
    token = secrets["sunbox_influxdb_admin_token"]
    with host.sudo():
        for unit in WRITERS:  # io.stat in each service's own cgroup from now on
            host.run(f"systemctl set-property --runtime {unit}.service IOAccounting=yes")
    report = {"played": _measure_writes(host, token, WRITES_S)}
    print(json.dumps(report["played"]))
    if WRITES_BASELINE:
        _set_every_reading_synced(host, True)
        try:
            report["every_reading_synced"] = _measure_writes(host, token, WRITES_S)
            print(json.dumps(report["every_reading_synced"]))
        finally:
            _set_every_reading_synced(host, False)
            _wait_until_every_device_streams(host, token)
    Path(os.environ.get("SUNBOX_VPI_WRITES_REPORT", "/tmp/sunbox-virtual-pi-writes.json")).write_text(
        json.dumps(report, indent=2) + "\n"
    )
    assert all(window["stored_messages"] > 0 for window in report.values())


#: How many power cuts (issues 14 and 28); each at a different moment of the devices' 5 s
#: poll cycle, the durability modes in turn (CUT_MODES). The test command cuts twice: once
#: as played, once with every reading synced; `--cuts N` cuts more often.
CUTS = int(os.environ.get("SUNBOX_VPI_CUTS", "2"))
#: The durability modes the cuts take in turn (issue 28, docs/storage.md): as played
#: (``queue.sync_after_s`` 30: what the writer has not stored within that is synced), and
#: every reading synced as it is taken (``sync_after_s: 0``, for an SSD).
CUT_MODES = ["played", "every-reading-synced"]
#: Every device streams again after a cut, the bonded ones (passkey pairing) too: their
#: simulators keep their bonds in a file on the guest's disk (prepare.yml), as a real
#: device keeps them in flash. Before that (bonds in memory), paired and solar never came
#: back in 13 minutes.
#: The poll and publish interval of every simulated device (molecule.yml), seconds.
INTERVAL_S = 5.0
CUT_PHASES_S = [0.0, 1.7, 3.4]


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def guest_clock_offset(host: Any) -> float:
    """The guest's clock minus the host's, seconds (to within half an SSH round trip): the
    readings carry the guest's time, the cut's moments the host's."""
    start = time.time()
    guest = float(host.check_output("date +%s.%N"))
    return guest - (start + time.time()) / 2


def reading_times(host: Any, token: str) -> dict[str, set[str]]:
    """Per device, the timestamps of its readings (not health) in the raw bucket (the whole
    run: a window that slid between two counts would look like lost readings).

    Each table keeps only device and time before the grouping: the fields of a device
    differ in type (numbers and text), which one table cannot hold.
    """
    query = (
        'from(bucket: "sunbox_raw") |> range(start: -24h) |> filter(fn: (r) => r._measurement != "health") '
        '|> keep(columns: ["device", "_time"]) |> group(columns: ["device"]) |> distinct(column: "_time")'
    )
    out: dict[str, set[str]] = {}
    for record in flux_records(host, token, query):
        out.setdefault(record["device"], set()).add(record["_value"])
    return out


def _retry_ssh(call: Any, deadline_s: float = 300) -> Any:
    """``call()`` again while SSH fails (the guest still starting its services)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except (RuntimeError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def _sync_after_s(host: Any) -> float:
    with host.sudo():
        config = yaml.safe_load(host.file("/etc/sunbox/sunbox.yaml").content_string)
    return float(config["queue"].get("sync_after_s", 0))


def _set_sync_after_s(host: Any, token: str, value: float) -> None:
    """Set the collector's ``queue.sync_after_s``, restart it, and wait until every device
    is read again (a reading of each in the last 15 s)."""
    with host.sudo():
        host.check_output(f"{_sed_sync_after_s(value)} && systemctl restart sunbox-collector")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(10)
        fresh = {d for d, t in reading_times(host, token).items() if any(_epoch(x) > time.time() - 15 for x in t)}
        if fresh >= DEVICES:
            return
    raise AssertionError(f"devices read within 5 min of the collector's restart: {sorted(fresh)}")


def _mode_sync_after_s(mode: str, played: float) -> float:
    """A durability mode's ``queue.sync_after_s`` (CUT_MODES)."""
    return played if mode == "played" else 0.0


def _wait_until_services_run(host: Any, deadline_s: float = 180) -> None:
    """Wait until every service of SERVICES is running (a guest still starting its units)."""
    deadline = time.monotonic() + deadline_s
    while True:
        down = [name for name in SERVICES if not _retry_ssh(lambda n=name: host.service(n).is_running)]
        if not down:
            return
        assert time.monotonic() < deadline, f"not running {deadline_s:.0f} s after the boot: {down}"
        time.sleep(5)


def test_a_pulled_plug_loses_no_reading_the_appliance_had_taken(host: Any, secrets: dict[str, Any]) -> None:
    """Issues 14 and 28: the VM is killed like a pulled plug (qemu SIGKILL) and boots
    again by itself, once in each durability mode (CUT_MODES).

    Counted per device in the raw bucket: with every reading synced, every reading a
    query saw before the cut is there after it (lost = 0), and readings taken before the
    cut but not yet stored come back from the collector's synced queue. As played, the
    readings of the last ``queue.sync_after_s`` + 1 s that InfluxDB had not answered for
    yet may go (docs/storage.md; a query sees a point before its WAL fsync), nothing
    older: each device's newest reading before the kill is at most that (plus a poll)
    old, and with every reading synced at most a poll old. Every service comes back, and
    after the first cut every device streams again; after a later one the test waits
    only until what the cut left in the synced queue is stored. A reading sent twice (the
    queue's resend) carries its own time_ms, and InfluxDB keeps one point per series and
    time, so it cannot appear twice: the distinct times counted here are the readings.

    The next cut's mode is written into the collector's configuration (and synced) just
    before a cut: the collector reads it at the boot that follows, which saves a restart
    and the wait for the devices to reconnect. The mode a cut checks is the one the
    running collector was started with.
    """
    token = secrets["sunbox_influxdb_admin_token"]
    state = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "vm"
    appliance = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "tools" / "vpi" / "appliance.py"
    report = []
    played_sync_after_s = _sync_after_s(host)
    running_sync_after_s = played_sync_after_s  # what the running collector was started with
    for n in range(CUTS):
        mode = CUT_MODES[n % len(CUT_MODES)]
        sync_after_s = _mode_sync_after_s(mode, played_sync_after_s)
        if running_sync_after_s != sync_after_s:
            _set_sync_after_s(host, token, sync_after_s)
        following = CUT_MODES[(n + 1) % len(CUT_MODES)] if n + 1 < CUTS else mode
        running_sync_after_s = _mode_sync_after_s(following, played_sync_after_s)
        with host.sudo():
            host.check_output(f"{_sed_sync_after_s(running_sync_after_s)} && sync")
        wait_until = (time.time() // 5 + 1) * 5 + CUT_PHASES_S[n % len(CUT_PHASES_S)]
        time.sleep(max(0.0, wait_until - time.time()))
        before = reading_times(host, token)
        offset_before = guest_clock_offset(host)
        cut = subprocess.run(
            ["python3", str(appliance), "cut", str(state)], capture_output=True, text=True, timeout=1200, check=False
        )
        assert cut.returncode == 0, cut.stdout[-2000:] + cut.stderr[-2000:]
        times = json.loads(cut.stdout.strip().splitlines()[-1])
        offset_after = _retry_ssh(lambda: guest_clock_offset(host))
        killed = times["killed_at"] + offset_before  # in the guest's time, as the readings
        powered_on = times["powered_on_at"] + offset_after
        # InfluxDB answers queries from its cache before the WAL's group fsync, and answers
        # the write only after it: as played, what a query saw in the last seconds was
        # not all stored yet, and the collector held it on tmpfs (docs/storage.md).
        # Two intervals (a poll's own time under emulation included; 9.1 s seen) plus the
        # clock offset's uncertainty; as played, also the readings the writer had not
        # stored in the last sync_after_s + 1 s (the spill's period).
        bound = 2 * INTERVAL_S + 2 + (sync_after_s + 1 if sync_after_s else 0)
        flowing: dict[str, float] = {}
        after: dict[str, set[str]] = {}
        lost: dict[str, int] = {}
        recent: dict[str, int] = {}
        gaps: dict[str, dict[str, float | None]] = {}
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(10)
            try:
                after = reading_times(host, token)
            except AssertionError:  # InfluxDB not answering yet
                continue
            except RuntimeError:  # ssh itself failed (the guest still busy booting): again
                continue
            for device in DEVICES - set(flowing):
                new = [_epoch(t) for t in after.get(device, ()) if _epoch(t) > powered_on]
                if new:
                    flowing[device] = round(min(new) - powered_on, 1)
            missing = {d: before[d] - after.get(d, set()) for d in before}
            lost = {d: len({t for t in m if _epoch(t) < killed - bound}) for d, m in missing.items()}
            recent = {d: len(m) for d, m in missing.items() if m}
            # The gap in each device's series: from its last reading taken before the kill
            # (stored then or resent from the disk queue after boot) to its first after
            # boot. Its start shows what the cut took: at most `bound` before the kill.
            gaps = {}
            for device, stamps in after.items():
                taken = sorted(_epoch(t) for t in stamps)
                last = max((t for t in taken if t < killed), default=None)
                first = min((t for t in taken if t > powered_on), default=None)
                if last is not None:
                    gaps[device] = {
                        "last_before_kill_s": round(killed - last, 1),
                        "gap_s": None if first is None else round(first - last, 1),
                    }
            stored = not any(lost.values()) and not (recent and not sync_after_s)
            stored = stored and all(g["last_before_kill_s"] <= bound for g in gaps.values())
            if set(flowing) >= DEVICES or (n > 0 and stored and set(flowing)):
                break
        recovered = sum(
            len({t for t in after.get(d, set()) - before.get(d, set()) if _epoch(t) < killed}) for d in after
        )
        row = {
            "cut": n + 1,
            "mode": mode,
            "sync_after_s": sync_after_s,
            "phase_s": CUT_PHASES_S[n % len(CUT_PHASES_S)],
            "ssh_after_s": times["ssh_after_s"],
            "readings_before": sum(len(v) for v in before.values()),
            "readings_after": sum(len(v) for v in after.values()),
            "lost": sum(lost.values()),
            "seen_by_a_query_in_the_last_seconds_and_lost": sum(recent.values()),
            "taken_before_the_cut_and_stored_after_it": recovered,
            # from power-on to the first new reading of the last device to come back
            # (after a later cut: of those back when the test stopped waiting)
            "readings_flow_again_after_power_on_s": max(flowing.values(), default=None),
            "devices_flowing": sorted(flowing),
            "vm_off_s": round(times["powered_on_at"] - times["killed_at"], 1),
            "guest_clock_offset_s": [round(offset_before, 2), round(offset_after, 2)],
            "gaps": gaps,
        }
        report.append(row)
        print(json.dumps(row))
        if n == 0:
            assert set(flowing) >= DEVICES, f"devices streaming again after the cut: {sorted(flowing)}"
        assert flowing, "no device streams again after the cut"
        assert not any(lost.values()), f"{mode}: readings taken over {bound} s before the cut lost: {lost}"
        if not sync_after_s:
            assert not recent, f"{mode}: readings lost by the cut: {recent}"
        assert set(gaps) >= DEVICES, f"{mode}: devices with no reading before the cut: {sorted(DEVICES - set(gaps))}"
        late = {d: g for d, g in gaps.items() if g["last_before_kill_s"] > bound}
        assert not late, f"{mode}: readings taken more than {bound} s before the cut are missing: {late}"
        _wait_until_services_run(host)
    Path(os.environ.get("SUNBOX_VPI_CUT_REPORT", "/tmp/sunbox-virtual-pi-powercut.json")).write_text(
        json.dumps(report, indent=2) + "\n"
    )
    if running_sync_after_s != played_sync_after_s:  # the played setting back, not waited for
        with host.sudo():
            host.check_output(f"{_sed_sync_after_s(played_sync_after_s)} && systemctl restart sunbox-collector")
