"""The card's state (``sunbox.disk``): the mountinfo parser on the kernel's documented
example and on lines as a confined service sees them, then a real tmpfs remounted
read-only and filled up."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from sunbox import disk

from .mounts import tmpfs

#: proc(5), "/proc/pid/mountinfo": the example line the man page explains field by field.
PROC5_EXAMPLE = "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"

#: /proc/self/mountinfo of a service under ProtectSystem=strict on a healthy card (the
#: shape systemd gives it: / bound read-only over the real root, its state directory
#: bound writable), then the same card after ext4 remounted it read-only. Hand-written
#: from that shape; the octal escape of a space is proc(5)'s.
CONFINED_HEALTHY = """\
23 1 179:2 / / ro,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
24 23 179:2 /var/lib/influxdb /var/lib/influxdb rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
25 23 179:1 / /boot/firmware ro,relatime shared:2 - vfat /dev/mmcblk0p1 rw,fmask=0022
26 23 8:1 / /media/usb\\040stick rw,relatime - exfat /dev/sda1 rw
"""
CONFINED_FAILED = CONFINED_HEALTHY.replace("ext4 /dev/mmcblk0p2 rw", "ext4 /dev/mmcblk0p2 ro,errors=remount-ro")


def test_the_kernel_example_parses() -> None:
    (mount,) = disk.parse_mountinfo(PROC5_EXAMPLE)
    assert mount == disk.Mount("/mnt/parent", "ext3", "/dev/root", read_only=False)


def test_a_read_only_bind_mount_on_a_healthy_card_is_not_read_only() -> None:
    mounts = disk.parse_mountinfo(CONFINED_HEALTHY)
    assert disk.mount_of("/var/lib/influxdb/engine", mounts) == mounts[1]
    assert disk.mount_of("/", mounts) == mounts[0]
    assert disk.mount_of("/var/lib/sunbox", mounts) == mounts[0]
    assert not any(m.read_only for m in mounts)
    assert disk.mount_of("/media/usb stick/backups", mounts) == mounts[3]
    assert disk.mount_of("/media/usb", mounts) == mounts[0], "a prefix of a name is not a parent"


def test_a_superblock_remounted_read_only_is_read_only_through_every_mount() -> None:
    mounts = disk.parse_mountinfo(CONFINED_FAILED)
    assert [m.read_only for m in mounts] == [True, True, False, False]
    assert disk.mount_of("/var/lib/influxdb", mounts) == mounts[1]


@pytest.mark.parametrize(
    "line", ["", "garbage", "1 2 3:4 / /x rw - ext4", "1 2 3:4 / /x rw no-separator ext4 /dev/x rw"]
)
def test_malformed_lines_are_skipped(line: str) -> None:
    assert disk.parse_mountinfo(line + "\n" + PROC5_EXAMPLE) == disk.parse_mountinfo(PROC5_EXAMPLE)


def test_later_mounts_on_the_same_point_win() -> None:
    mounts = disk.parse_mountinfo("1 0 8:1 / /data rw - ext4 /dev/sda1 rw\n2 1 8:2 / /data rw - ext4 /dev/sdb1 ro\n")
    found = disk.mount_of("/data/x", mounts)
    assert found is not None and found.source == "/dev/sdb1" and found.read_only


@pytest.mark.parametrize(
    ("read_only", "free", "status"),
    [(True, 10**9, "read-only"), (False, 0, "full"), (False, 10**6, "low"), (False, 10**9, "ok")],
)
def test_classify(read_only: bool, free: int, status: str) -> None:
    assert disk.classify(read_only, free, low_free_bytes=10**7) == status


def test_an_unreadable_mountinfo_is_unknown_not_an_error(tmp_path: Path) -> None:
    state = disk.read_state("/var/lib/influxdb", 0, mountinfo=tmp_path / "missing")
    assert state.status == "unknown" and state.error and "missing" in state.error


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")


@needs_root
def test_a_real_filesystem_read_only_then_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "card") as card:
        data = card / "influxdb"
        state = disk.read_state(str(data), low_free_bytes=100_000)
        assert state.status == "ok" and state.mount_point == str(card) and state.fs_type == "tmpfs"
        assert state.total_bytes == 2 * 1024 * 1024 and state.free_bytes == state.total_bytes
        subprocess.run(["mount", "-o", "remount,ro", str(card)], check=True)
        assert disk.read_state(str(data), low_free_bytes=100_000).status == "read-only"
        subprocess.run(["mount", "-o", "remount,rw", str(card)], check=True)
        (card / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 64 * 1024))
        assert disk.read_state(str(data), low_free_bytes=100_000).status == "low"
        with contextlib.suppress(OSError), (card / "more").open("wb") as out:
            out.write(b"\0" * 1024 * 1024)
        full = disk.read_state(str(data), low_free_bytes=100_000)
        assert full.status == "full" and full.free_bytes == 0
