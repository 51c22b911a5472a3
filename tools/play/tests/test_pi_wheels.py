"""The Pi's Python environment resolves for aarch64, and every native library in it loads on
a Pi 5 (issue 27).

What ``sunbox_python`` installs on a Pi (sunbox's dependencies from
``collector/pyproject.toml`` and uv, every version pinned by ``collector/constraints.txt``)
is resolved by pip for Raspberry Pi OS's Pythons on aarch64 — CPython 3.13 (trixie, glibc
2.41) and 3.11 (bookworm, glibc 2.36) — as binary wheels only, from PyPI: a pin without an
aarch64 wheel for either would make the play build from source on the Pi (no compiler
there) or fail.

Every ELF file in those wheels must have each ``PT_LOAD`` segment aligned to at least
16 KiB: the Pi 5's kernel runs with 16 KiB pages, and a shared library linked for 4 KiB
pages fails to load there ("ELF load command address/offset not page-aligned"). The
segments are read with pyelftools. The wheels are cached in
``~/.cache/sunbox/pi-wheels/`` by the hash of the pins.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[3]
CONSTRAINTS = ROOT / "collector" / "constraints.txt"
PYPROJECT = ROOT / "collector" / "pyproject.toml"
CACHE = Path.home() / ".cache" / "sunbox" / "pi-wheels"
#: Raspberry Pi OS release -> (CPython, glibc minor)
RELEASES = {"trixie": ("3.13", 41), "bookworm": ("3.11", 36)}
PAGE = 16 * 1024


def requirements() -> list[str]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    uv = next(line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("uv=="))
    return [*deps, uv]


def download(release: str) -> Path:
    python, glibc = RELEASES[release]
    key = hashlib.sha256((CONSTRAINTS.read_text() + "\n".join(requirements()) + python).encode()).hexdigest()[:12]
    dest = CACHE / f"{release}-{key}"
    if (dest / ".complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(17, glibc + 1)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-cache-dir",
         f"--python-version={python}", "--implementation=cp", *platforms, "--platform=manylinux2014_aarch64",
         "-c", str(CONSTRAINTS), "-d", str(dest), *requirements()],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{release}: no aarch64 wheel for a pin:\n{result.stderr[-3000:]}"
    (dest / ".complete").write_text("")
    return dest


def misaligned(wheel: Path) -> list[str]:
    """``path: align 0x...`` for every PT_LOAD segment under 16 KiB in the wheel's ELF files."""
    bad = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                if member.read(4) != b"\x7fELF":
                    continue
            with archive.open(info) as member:
                elf = ELFFile(io.BytesIO(member.read()))  # pyelftools needs a seekable file
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_LOAD" and segment["p_align"] < PAGE:
                    bad.append(f"{wheel.name}:{info.filename}: align {segment['p_align']:#x}")
    return bad


@pytest.mark.timeout(900)
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_every_pin_has_an_aarch64_wheel_that_loads_with_16k_pages(release: str) -> None:
    wheels = sorted(download(release).glob("*.whl"))
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    for wanted in ("pydantic-core", "dbus-fast", "aiohttp", "uv", "bleak"):
        assert wanted in names, f"{release}: {wanted} missing from {sorted(names)}"
    native = [w for w in wheels if not w.name.endswith("-none-any.whl")]
    assert native, "no native wheel at all: the resolution did not ask for aarch64"
    assert all("aarch64" in w.name for w in native), [w.name for w in native if "aarch64" not in w.name]
    bad = [line for wheel in native for line in misaligned(wheel)]
    print(f"{release}: {len(wheels)} wheels, {len(native)} native, every ELF segment checked")
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_4k_library(tmp_path: Path) -> None:
    """The check can fail: this machine's own libc (x86_64, linked for 4 KiB pages) in a wheel."""
    libc = next(p for p in (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/usr/lib/x86_64-linux-gnu/libc.so.6"))
                if p.exists())  # fmt: skip
    wheel = tmp_path / "fake-1.0-cp313-cp313-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(libc, "fake/libc.so.6")
    aligns = misaligned(wheel)
    with ELFFile.load_from_path(str(libc)) as elf:
        smallest = min(s["p_align"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
    assert smallest < PAGE and aligns, (smallest, aligns)
