"""``sunbox-stack-watch``: the demo's view (``tools/demo.sh``).

Every few seconds it prints the newest reading of each device as one line with units,
and what InfluxDB holds as ``bucket: points`` for the raw bucket and every tier, so the
tiers can be watched filling. On a terminal the block is redrawn in place; into a pipe
or a file each refresh is appended. Readings are validated with the writer's own
``parse_reading``; a bad one is counted, never shown.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from sunbox.storage.points import PayloadError, parse_reading

#: what one line shows, in this order, when the reading has it: (name, unit, format)
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("soc", "%", "{:.0f}"),
    ("voltage", "V", "{:.2f}"),
    ("current", "A", "{:+.2f}"),
    ("battery_voltage", "V", "{:.2f}"),
    ("battery_current", "A", "{:+.1f}"),
    ("power", "W", "{:+.0f}"),
    ("pv_voltage", "V", "PV {:.1f}"),
    ("pv_power", "W", "{:.0f}"),
    ("ac_out_voltage", "V", "AC {:.0f}"),
    ("ac_out_apparent_power", "VA", "{:.0f}"),
    ("charge_state", "", "{}"),
)


def describe(reading: dict[str, Any]) -> str:
    """The reading's main quantities with units, e.g. ``96 %  13.34 V  -0.53 A``."""
    parts = []
    for name, unit, fmt in FIELDS:
        value = reading.get(name)
        if value is None or isinstance(value, (list, dict)):
            continue
        parts.append((fmt.format(value) + (f" {unit}" if unit else "")).strip())
    cells = [v for v in reading.get("cell_voltages") or [] if isinstance(v, (int, float))]
    if cells:
        parts.append(f"cells {min(cells):.3f}-{max(cells):.3f} V")
    temps = [v for v in reading.get("temperatures") or [] if isinstance(v, (int, float))]
    if temps:
        parts.append(f"{max(temps):.1f} °C")
    return "  ".join(parts) or "(no quantities)"


def render(latest: dict[str, dict[str, Any]], counts: dict[str, int] | None, skipped: int, now_ms: int) -> str:
    """One refresh: a line per device (id, kind, quantities, age) and the buckets' points."""
    width = max((len(d) for d in latest), default=6)
    lines = [
        time.strftime("%H:%M:%S") + f"  {len(latest)} device(s)" + (f", {skipped} bad message(s)" if skipped else "")
    ]
    for device in sorted(latest):
        reading = latest[device]
        age = max(0, (now_ms - int(reading["time_ms"])) // 1000)
        lines.append(f"  {device:<{width}}  {reading['kind']:<8} {describe(reading)}  ({age} s ago)")
    if not latest:
        lines.append("  waiting for the first reading...")
    if counts is None:
        lines.append("InfluxDB: not answering yet")
    else:
        lines.append("InfluxDB points: " + ", ".join(f"{name}: {count}" for name, count in counts.items()))
    return "\n".join(lines) + "\n"


def _tier_seconds(bucket: str) -> float:
    """Sort key: the raw bucket first, then the tiers by window (sunbox_2m before sunbox_2h)."""
    match = re.fullmatch(r"sunbox_(\d+)([smhdw])", bucket)
    if match is None:
        return -1.0 if bucket == "sunbox_raw" else float("inf")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]


def bucket_points(url: str, token: str, org: str = "sunbox") -> dict[str, int] | None:
    """Points per Sunbox bucket (raw first, then the tiers by age), or None if unreachable."""
    headers = {"Authorization": f"Token {token}"}
    try:
        request = urllib.request.Request(f"{url}/api/v2/buckets?org={org}&limit=100", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            names = [b["name"] for b in json.load(response)["buckets"] if b["name"].startswith("sunbox_")]
        counts: dict[str, int] = {}
        for name in sorted(names, key=_tier_seconds):
            flux = f'from(bucket: "{name}") |> range(start: 0) |> count() |> group() |> sum()'
            request = urllib.request.Request(
                f"{url}/api/v2/query?org={urllib.parse.quote(org)}",
                data=flux.encode(),
                headers={**headers, "Content-Type": "application/vnd.flux", "Accept": "application/csv"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                rows = [r.split(",") for r in response.read().decode().splitlines()[1:] if r.strip()]
            counts[name] = int(rows[0][-1]) if rows and rows[0][-1].strip().isdigit() else 0
        return counts
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sunbox-stack-watch", description=__doc__.splitlines()[0])
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--influx-url", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between refreshes")
    parser.add_argument("--count", type=int, default=0, help="stop after this many refreshes (0: never)")
    args = parser.parse_args(argv)

    latest: dict[str, dict[str, Any]] = {}
    skipped = [0]
    lock = threading.Lock()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        try:
            _point, data = parse_reading(message.topic, message.payload, time.time_ns() // 1_000_000)
        except PayloadError:
            skipped[0] += 1
            return
        with lock:
            latest[data["device_id"]] = data

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sunbox-demo-watch")
    client.username_pw_set(args.username, args.password_file.read_text().strip())
    client.on_connect = lambda c, *_: c.subscribe("sunbox/+/state", qos=0)
    client.on_message = on_message
    client.connect_async("127.0.0.1", args.mqtt_port)
    client.loop_start()
    in_place = sys.stdout.isatty()
    refreshes = 0
    counts: dict[str, int] | None = None
    last_counts = 0.0
    try:
        while args.count <= 0 or refreshes < args.count:
            if time.monotonic() - last_counts >= 15 or counts is None:
                counts = bucket_points(args.influx_url, args.token_file.read_text().strip())
                last_counts = time.monotonic()
            with lock:
                text = render(dict(latest), counts, skipped[0], time.time_ns() // 1_000_000)
            sys.stdout.write(("\x1b[H\x1b[J" if in_place else "") + text + ("" if in_place else "\n"))
            sys.stdout.flush()
            refreshes += 1
            if args.count <= 0 or refreshes < args.count:
                time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
