"""How fast Ctrl-C stops ``tools/demo.sh`` (issue 18's target: every process gone within
2 s, with no SIGKILL from the demo's fallback).

Each round starts the demo (real Mosquitto, InfluxDB 2, the collector over bumble's
simulated devices, ``sunbox store``, ``sunbox web``), waits until every device shows a
reading and InfluxDB holds points, then sends SIGINT to its process group and times
until the script exits. Reports each round, the median and the worst, and the demo's own
split (how long the collector took of it).

Run (as a developer, after ``./tools/test.sh`` provisioned the stack):
``.venv/bin/python collector/benchmarks/bench_demo_stop.py [ROUNDS]`` (default 5)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from sunbox_stack.demo import start

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 2.0


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times: list[float] = []
    hangs = 0
    for n in range(rounds):
        with tempfile.TemporaryDirectory(prefix="sunbox-bench-demo-") as tmp:
            demo = start(ROOT, Path(tmp), 37000)
            try:
                demo.wait_for_readings(300)
                took = demo.ctrl_c(30)
            finally:
                demo.kill()
            hangs += bool(demo.killed())
            last = demo.text().splitlines()[-1]
            times.append(took)
            print(f"round {n + 1}: Ctrl-C to exit {took:.2f} s; {last}")
    worst = max(times)
    print(
        f"Ctrl-C to exit over {rounds} rounds: median {statistics.median(times):.2f} s, worst {worst:.2f} s "
        f"(target {TARGET_S:.0f} s); rounds with a SIGKILL fallback: {hangs}"
    )
    return 0 if worst <= TARGET_S and not hangs else 1


if __name__ == "__main__":
    sys.exit(main())
