"""Build the sunbox wheel reproducibly for the collector role: same sources, same bytes.

Usage: build_wheel.py OUTPUT_DIR   (prints the wheel's path)

The sources are copied to a scratch directory first, so no ``build/`` or ``egg-info``
is left in the checkout, and SOURCE_DATE_EPOCH fixes the timestamps inside the zip.
The role copies the wheel to the Pi; an unchanged wheel means an unchanged install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COLLECTOR = Path(__file__).resolve().parents[2] / "collector"


def main(output: str) -> int:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sunbox-wheel-") as scratch:
        src = Path(scratch) / "collector"
        src.mkdir()
        shutil.copy2(COLLECTOR / "pyproject.toml", src / "pyproject.toml")
        shutil.copytree(
            COLLECTOR / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
        )
        built = Path(scratch) / "dist"
        env = dict(os.environ, SOURCE_DATE_EPOCH="315532800", PIP_DISABLE_PIP_VERSION_CHECK="1")
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        subprocess.run(
            [*pip_wheel, "-w", str(built), str(src)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        (wheel,) = built.glob("sunbox-*.whl")
        target = out / wheel.name
        if not target.exists() or target.read_bytes() != wheel.read_bytes():
            shutil.copyfile(wheel, target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
