"""The collector on real BlueZ: boots the virtual Pi (tools/vpi/vpi.py ble-test).

A Debian bookworm VM under qemu (tcg). There, the simulated devices reach the guest's
BlueZ through hci_vhci: a JBD with the FF AA password, a newer JBD and a SmartSolar that
both need passkey pairing (through Sunbox's agent), a LiTime and an Instant Readout
device. `sunbox run --once` must read all five, and their readings must
reach the guest's Mosquitto. Needs root (debootstrap, chroot, mount); about 3 min cold,
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
    # beside the appliance's VM, on the other worker (tools/test.sh); the image builds
    # they share are serialised by a lock (vpi.cache_lock)
    pytest.mark.xdist_group("virtual-pi-ble"),
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="the virtual Pi needs Linux and root"),
]


@pytest.mark.timeout(1500)  # the image build (cold, ~4 min) and one boot; pytest's limit is the backstop
def test_collector_reads_every_device_through_real_bluez() -> None:
    result = subprocess.run(
        [sys.executable, str(VPI), "ble-test"], capture_output=True, text=True, timeout=1200, check=False
    )
    tail = "\n".join(result.stdout.splitlines()[-15:])
    assert result.returncode == 0, f"{tail}\n{result.stderr[-2000:]}"
    assert "read all 5 device(s)" in result.stdout
    assert "['advert', 'battery', 'mppt', 'paired', 'solar']" in result.stdout
