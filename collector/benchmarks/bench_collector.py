"""Collector cost and link recovery, measured on a real `sunbox run` process.

Starts a real Mosquitto (test stack), `sunbox sim` with 2 JBD + 1 LiTime simulators
serving a bumble HCI over TCP, and `sunbox run` against them at a 5 s poll. Reports:
collector RSS and CPU (% of one core) over the run, poll round trip (from health), and
in-process: time from a link dropped by the device to the next good reading.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox_stack.servers import Mosquitto, free_port

BIN = Path(sys.executable).parent


def _proc_stats(pid: int) -> tuple[float, float]:
    """(rss MiB, cpu seconds) of a process from /proc."""
    with open(f"/proc/{pid}/status") as handle:
        rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def collector_cost(duration: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="sunbox-bench-"))
    broker = Mosquitto("mosquitto", free_port(), work / "mqtt")
    broker.start()
    hci = free_port()
    addresses = ["A4:C1:37:00:00:01", "A4:C1:37:00:00:03"]
    sim = subprocess.Popen(
        [BIN / "sunbox", "sim", "--hci", f"tcp-server:127.0.0.1:{hci}", "--jbd-password", "123456"]
        + [a for address in addresses for a in ("--jbd-address", address)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    devices = [
        {"id": f"battery{i}", "driver": "jbd", "address": a, "password": "123456"} for i, a in enumerate(addresses)
    ] + [{"id": "mppt", "driver": "litime", "address": "C8:47:80:00:00:02"}]
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": broker.username, "password": broker.password},
        "queue": {"path": str(work / "queue.sqlite3")},
        "ble": {"backend": "bumble", "bumble_transport": f"tcp-client:127.0.0.1:{hci}"},
        "devices": devices,
        "health_interval_s": 5,
        "log_level": "WARNING",
    }
    (work / "sunbox.yaml").write_text(json.dumps(config))
    latencies: list[float] = []
    states = 0
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal states
        with lock:
            if msg.topic.endswith("/health"):
                value = json.loads(msg.payload).get("poll_latency_ms")
                if value is not None:
                    latencies.append(value)
            else:
                states += 1

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.username_pw_set(broker.username, broker.password)
    sub.on_message = on_message
    sub.on_connect = lambda c, *_: c.subscribe("sunbox/+/+")
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    collector = subprocess.Popen([BIN / "sunbox", "run", "-c", str(work / "sunbox.yaml")])
    try:
        time.sleep(15)  # connect and settle
        rss0, cpu0 = _proc_stats(collector.pid)
        t0 = time.monotonic()
        peak = rss0
        while time.monotonic() - t0 < duration:
            time.sleep(1)
            rss, _ = _proc_stats(collector.pid)
            peak = max(peak, rss)
        rss1, cpu1 = _proc_stats(collector.pid)
        elapsed = time.monotonic() - t0
        print(
            f"collector, 3 devices at 5 s poll, {elapsed:.0f} s: RSS {rss1:.1f} MiB (peak {peak:.1f}), "
            f"CPU {100 * (cpu1 - cpu0) / elapsed:.2f} % of one core, {states} state messages received"
        )
        if latencies:
            print(
                f"poll round trip (JBD 0x03+0x04, LiTime 0x0101): median {statistics.median(latencies):.1f} ms, "
                f"max {max(latencies):.1f} ms over {len(latencies)} health reports"
            )
    finally:
        collector.terminate()
        collector.wait(15)
        sim.terminate()
        sim.wait(10)
        sub.loop_stop()
        broker.stop()


async def recovery_time(repeats: int) -> None:
    from sunbox.config import parse
    from sunbox.service import BleBackend, Collector
    from sunbox.sim.peripherals import JbdSimulator, LiTimeSimulator, SimWorld

    world = SimWorld()
    jbd_sim = world.add(JbdSimulator(world.link, password="123456"))
    world.add(LiTimeSimulator(world.link))
    await world.start()
    central = await world.central()
    config = parse(
        {
            "mqtt": {"username": "u", "password": "p"},
            "ble": {"backoff_initial_s": 1.0},
            "devices": [{"id": "battery", "driver": "jbd", "address": "A4:C1:37:00:00:01", "password": "123456"}],
        }
    )
    readings: list[float] = []
    collector = Collector(
        config,
        BleBackend(central.client_backend(), central.scanner_backend(), None),
        lambda r: readings.append(time.monotonic()) if r.kind != "health" else None,
    )
    task = asyncio.create_task(collector.run())
    results = []
    try:
        while not readings:
            await asyncio.sleep(0.05)
        for _ in range(repeats):
            count = len(readings)
            dropped = time.monotonic()
            await jbd_sim.drop_links()
            while len(readings) == count or readings[-1] < dropped:
                await asyncio.sleep(0.01)
            results.append(readings[-1] - dropped)
            await asyncio.sleep(1)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    print(
        f"dropped link -> next good reading (backoff 0.5-1 s incl.): median {statistics.median(results):.2f} s, "
        f"max {max(results):.2f} s over {repeats} drops"
    )


if __name__ == "__main__":
    asyncio.run(recovery_time(5))
    collector_cost(float(os.environ.get("BENCH_SECONDS", "120")))
