"""``sunbox decode`` prints data-model JSON and exits 1 on a bad frame."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sunbox.cli", *args], capture_output=True, text=True, timeout=60)


def test_decode_jbd() -> None:
    result = run("decode", "jbd", "dd03001d0536ffcb4ff253340001309b00000000000044600304030bb70bbf0bb9f84c77")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["voltage"] == 13.34 and values["current"] == -0.53 and values["soc"] == 96


def test_decode_litime() -> None:
    frame = "0103260064008f05c900d31bff008f000200000321036804ba0000800400000003000017e000000000a884"
    result = run("decode", "litime", frame)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pv_voltage"] == 80.1


def test_decode_bad_frame_exits_1() -> None:
    result = run("decode", "jbd", "dd03001d0536ffcb4ff253340001309b00000000000044600304030bb70bbf0bb9f84d77")
    assert result.returncode == 1
    assert "checksum" in result.stderr
    assert run("decode", "litime", "zz").returncode == 1
