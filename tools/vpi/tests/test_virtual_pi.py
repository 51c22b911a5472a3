"""The collector on real BlueZ: boots the virtual Pi (tools/vpi/vpi.py ble-test).

A Debian bookworm VM under qemu (tcg). There, the simulated JBD, LiTime, SmartSolar
(passkey pairing through Sunbox's agent) and Instant Readout devices reach the guest's
BlueZ through hci_vhci. `sunbox run --once` must read all four, and their readings must
reach the guest's Mosquitto. Then the adapter is power-cycled over D-Bus (the collector's
escalation), and a second run must read them all again. Needs root (debootstrap, chroot, mount); about 3 min cold,
1 min with the cached image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VPI = Path(__file__).parents[1] / "vpi.py"

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="the virtual Pi needs Linux and root"),
]


def test_collector_reads_every_device_through_real_bluez() -> None:
    result = subprocess.run(
        [sys.executable, str(VPI), "ble-test"], capture_output=True, text=True, timeout=2400, check=False
    )
    tail = "\n".join(result.stdout.splitlines()[-15:])
    assert result.returncode == 0, f"{tail}\n{result.stderr[-2000:]}"
    assert "read all 4 device(s)" in result.stdout
    assert "['advert', 'battery', 'mppt', 'solar']" in result.stdout
    assert "power-cycle over D-Bus: exit 0, powered again: True" in result.stdout
    assert "second sunbox run --once after the power-cycle: exit 0" in result.stdout
