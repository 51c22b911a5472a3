"""Drive ``tools/demo.sh`` as a newcomer's terminal would: start it, wait until every
device shows a reading and InfluxDB holds points, then press Ctrl-C and time the stop.

Used by the demo's test (``tools/stack/tests/test_demo.py``) and by the stop-time
benchmark (``collector/benchmarks/bench_demo_stop.py``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: the demo's devices, as its terminal view names them
DEVICES = ("house-battery", "mppt", "smartsolar", "shunt")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Demo:
    """One run of ``tools/demo.sh`` in its own process group, its output in ``out``."""

    process: subprocess.Popen[bytes]
    out: Path
    logs: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for_readings(self, timeout: float = 300.0) -> str:
        """Wait until the newest view block shows every device with a value and the raw
        bucket holds points; return that block. Raises AssertionError with the output's
        tail if the demo exits first or ``timeout`` (s) passes."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            blocks = self.text().split("\n\n")
            last = blocks[-2] if len(blocks) > 1 else ""
            if all(re.search(rf"^  {d}\s+\w+\s+\S+ \S", last, re.M) for d in DEVICES) and re.search(
                r"sunbox_raw: [1-9]", last
            ):
                return last
            assert self.process.poll() is None, self.text()[-3000:]
            time.sleep(1)
        raise AssertionError(f"not every device within {timeout:.0f} s:\n{self.text()[-3000:]}")

    def ctrl_c(self, timeout: float = 30.0) -> float:
        """SIGINT to the process group (Ctrl-C); seconds until the script exited.
        Raises subprocess.TimeoutExpired if it has not exited after ``timeout`` s."""
        os.killpg(self.process.pid, signal.SIGINT)
        started = time.monotonic()
        self.process.wait(timeout)
        return time.monotonic() - started

    def killed(self) -> list[str]:
        """The demo's own reports of a process it had to SIGKILL (a hang on stopping)."""
        return [line for line in self.text().splitlines() if "killed:" in line]

    def kill(self) -> None:
        """SIGKILL whatever of the process group still runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start(root: Path, work: Path, base_port: int) -> Demo:
    """Start ``root/tools/demo.sh`` with its logs under ``work/logs`` and its ports at
    ``base_port`` + 830 (MQTT), + 1001 (HCI), + 86 (InfluxDB), + 80 (web); the view
    refreshes every second."""
    logs = work / "logs"
    env = dict(
        os.environ,
        SUNBOX_DEMO_LOGS=str(logs),
        SUNBOX_DEMO_EVERY="1",
        SUNBOX_DEMO_MQTT_PORT=str(base_port + 830),
        SUNBOX_DEMO_HCI_PORT=str(base_port + 1001),
        SUNBOX_DEMO_INFLUX_PORT=str(base_port + 86),
        SUNBOX_DEMO_WEB_PORT=str(base_port + 80),
    )
    out = work / "out.txt"
    with out.open("w") as sink:
        process = subprocess.Popen(
            ["bash", str(root / "tools" / "demo.sh")],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
            # and Ctrl-C acting, as in a terminal: a runner that started the tests in the
            # background passes SIGINT down ignored, and a shell cannot trap a signal that
            # was ignored when it started
            preexec_fn=_default_sigint,
        )
    return Demo(process, out, logs)
