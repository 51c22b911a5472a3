"""The owner's way back on a new card, end to end: `./play.sh virtual-pi --restore [--release-from R]`.

1. A virtual Pi (release R, default trixie: bookworm is the upgrade path of issue 27)
   is played and streams; every tier's task runs once; the backup role's service backs
   up to the VM's "USB stick" (an ext4 image labelled SUNBOX-BKP, tools/vpi/appliance.py).
2. The readings per device and the tier points that were stored before the backup
   started are counted in its InfluxDB.
3. That VM is destroyed. A fresh one (trixie: a new overlay of the cached image, as a
   freshly flashed card) gets the same stick and the same secrets (the owner's vault),
   and `./play.sh restore -i <its inventory>` runs: the play, the restore, the play again.
4. On the new VM every reading and tier point counted in 2 is there, every device
   streams again, and the next backup works.

Report: printed as JSON and written to $SUNBOX_VPI_RESTORE_REPORT
(/tmp/sunbox-virtual-pi-restore.json). Exit 0 when every check passed. Needs Linux and
root, like ./play.sh virtual-pi. Not in the test command (it plays two VMs): its last
result is recorded in docs/backup.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import testinfra
import testinfra.host
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEVICES = {"advert", "battery", "mppt", "paired", "shunt", "solar"}
TIERS = ["sunbox_2m", "sunbox_5m", "sunbox_30m", "sunbox_2h"]
KEEP = Path("/tmp/sunbox-virtual-pi-restore")


def log(message: str) -> None:
    print(f"[restore-check] {message}", file=sys.stderr, flush=True)


def play(*args: str, env: dict[str, str] | None = None) -> float:
    """``./play.sh ...``; the seconds it took. Raises on a failure (its output is above)."""
    started = time.monotonic()
    log("./play.sh " + " ".join(args))
    subprocess.run([str(ROOT / "play.sh"), *args], check=True, cwd=ROOT, env={**os.environ, **(env or {})})
    return time.monotonic() - started


def ephemeral() -> Path:
    found = sorted(Path.home().glob(".ansible/tmp/molecule.*.virtual-pi"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("restore-check: no molecule directory for virtual-pi")
    return found[-1]


def guest(eph: Path) -> Any:
    """The VM now behind ``eph``'s inventory. testinfra keeps one host per spec for the
    process, and the second VM has the first one's spec with another SSH port: its cache
    is emptied first (testinfra.host.Host._host_cache)."""
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    testinfra.host.Host._host_cache.clear()
    return testinfra.get_host(f"ansible://virtual-pi?ansible_inventory={eph}/inventory/ansible_inventory.yml")


def flux(host: Any, token: str, query: str) -> list[dict[str, str]]:
    cmd = (
        f"curl -sS --fail-with-body -X POST -H {shlex.quote(f'Authorization: Token {token}')} "
        "-H 'Content-Type: application/vnd.flux' -H 'Accept: application/csv' "
        f"--data-binary {shlex.quote(query)} 'http://localhost:8086/api/v2/query?org=sunbox'"
    )
    result = host.run(cmd)
    if result.rc != 0:
        raise RuntimeError(f"query failed: {result.stdout} {result.stderr}")
    rows, header = [], []
    for row in csv.reader(result.stdout.splitlines()):
        if not row or not any(row):
            header = []
        elif not header:
            header = row
        else:
            rows.append(dict(zip(header, row, strict=False)))
    return rows


def readings(host: Any, token: str, before: str) -> dict[str, int]:
    """Per device: readings (not health) stored with a time before ``before`` (RFC 3339),
    counted as distinct times (Flux's count() refuses a column of times)."""
    query = (
        f'from(bucket: "sunbox_raw") |> range(start: -48h, stop: {before}) '
        '|> filter(fn: (r) => r._measurement != "health") '
        '|> keep(columns: ["device", "_time"]) |> group(columns: ["device"]) '
        '|> distinct(column: "_time") |> map(fn: (r) => ({r with _value: 1})) |> sum()'
    )
    return {r["device"]: int(r["_value"]) for r in flux(host, token, query) if r.get("device")}


def tier_points(host: Any, token: str, before: str) -> dict[str, int]:
    """Per tier bucket: points with a window start before ``before``."""
    out = {}
    for bucket in TIERS:
        query = f'from(bucket: "{bucket}") |> range(start: -3700d, stop: {before}) |> group() |> count()'
        out[bucket] = sum(int(r["_value"]) for r in flux(host, token, query) if r.get("_value"))
    return out


def wait_streaming(host: Any, token: str, deadline_s: float) -> float:
    """Seconds until every device has a reading in the last minute."""
    started = time.monotonic()
    query = (
        'from(bucket: "sunbox_raw") |> range(start: -1m) |> filter(fn: (r) => r._measurement != "health") '
        '|> keep(columns: ["device"]) |> group() |> distinct(column: "device")'
    )
    while True:
        seen = {r["_value"] for r in flux(host, token, query)}
        if seen >= DEVICES:
            return time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"devices not streaming after {deadline_s:.0f} s: missing {sorted(DEVICES - seen)}")
        time.sleep(10)


def run_tiers(host: Any, token: str) -> None:
    """Every tier's task once now (their schedules run every 10 min to 2 h)."""
    auth = shlex.quote(f"Authorization: Token {token}")
    tasks = json.loads(host.check_output(f"curl -sS -H {auth} 'http://localhost:8086/api/v2/tasks?org=sunbox'"))
    for task in tasks["tasks"]:
        host.check_output(
            f"curl -sS -X POST -H {auth} -H 'Content-Type: application/json' "
            f"--data '{{}}' http://localhost:8086/api/v2/tasks/{task['id']}/runs"
        )
    time.sleep(30)


def backup(host: Any) -> dict[str, Any]:
    """Run the backup service now; its state file, with how long systemctl waited."""
    started = time.monotonic()
    with host.sudo():
        run = host.run("systemctl start sunbox-backup.service")
        if run.rc != 0:
            journal = host.run("journalctl -u sunbox-backup -n 30 --no-pager").stdout
            raise AssertionError(f"backup failed: {run.stderr} {journal}")
        state: dict[str, Any] = json.loads(host.file("/var/lib/sunbox-backup/state.json").content_string)
    state["systemctl_s"] = round(time.monotonic() - started, 1)
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release-from", choices=["trixie", "bookworm"], default="trixie")
    args = parser.parse_args()
    report: dict[str, Any] = {"release_from": args.release_from, "release_to": "trixie"}
    KEEP.mkdir(parents=True, exist_ok=True)

    play("virtual-pi", "destroy")
    report["first_play_s"] = round(play("virtual-pi", "converge", env={"SUNBOX_VPI_RELEASE": args.release_from}))
    eph = ephemeral()
    secrets_file = KEEP / "secrets.yml"
    shutil.copyfile(eph / "vm" / "vars.yml", secrets_file)
    token = yaml.safe_load(secrets_file.read_text())["sunbox_influxdb_admin_token"]
    host = guest(eph)
    wait_streaming(host, token, 600)
    run_tiers(host, token)
    state = backup(host)
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state["last_success_ms"] / 1000 - 30))
    before = {"readings": readings(host, token, cutoff), "tiers": tier_points(host, token, cutoff)}
    report["backup"] = {
        "size_bytes": state["last_success"]["size_bytes"],
        "service_s": state["duration_s"],
        "systemctl_s": state["systemctl_s"],
    }
    report["before"] = before
    log(f"backed up: {json.dumps(report['backup'])}; counted before {cutoff}: {json.dumps(before)}")
    stick = KEEP / "stick.img"
    with host.sudo():
        host.check_output("sync")
    shutil.copyfile(eph / "vm" / "stick.img", stick)  # as the owner unplugs it (synced, never mounted at boot)
    play("virtual-pi", "destroy")

    env = {"SUNBOX_VPI_STICK": str(stick), "SUNBOX_VPI_SECRETS": str(secrets_file), "SUNBOX_VPI_RELEASE": "trixie"}
    report["new_card_play_s"] = round(play("virtual-pi", "create", env=env) + play("virtual-pi", "prepare", env=env))
    eph = ephemeral()
    started = time.monotonic()
    play("restore", "-i", str(eph / "inventory"), "-e", f"@{eph / 'vm' / 'vars.yml'}")
    report["restore_play_s"] = round(time.monotonic() - started)
    host = guest(eph)
    report["streaming_again_s"] = round(wait_streaming(host, token, 600))
    after = {"readings": readings(host, token, cutoff), "tiers": tier_points(host, token, cutoff)}
    report["after"] = after
    problems = []
    for device, count in before["readings"].items():
        if after["readings"].get(device, 0) < count:
            problems.append(f"{device}: {after['readings'].get(device, 0)} readings, {count} before")
    for bucket, count in before["tiers"].items():
        if after["tiers"].get(bucket, 0) < count:
            problems.append(f"{bucket}: {after['tiers'].get(bucket, 0)} points, {count} before")
    if set(before["readings"]) != DEVICES:
        problems.append(f"the first VM did not store every device: {sorted(before['readings'])}")
    report["next_backup"] = backup(host)["ok"]
    report["problems"] = problems
    out = Path(os.environ.get("SUNBOX_VPI_RESTORE_REPORT", "/tmp/sunbox-virtual-pi-restore.json"))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    play("virtual-pi", "destroy")
    return 1 if problems or not report["next_backup"] else 0


if __name__ == "__main__":
    sys.exit(main())
