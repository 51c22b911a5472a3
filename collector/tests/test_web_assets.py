"""The display's front end: the committed assets are what the pinned sources build.

``collector/web`` (sources, ``package.json`` and its lockfile) builds with esbuild into
``collector/src/sunbox/web/static``, which ships in the wheel, so a PC with only Python
never needs Node. This test runs ``npm ci`` from the npm registry and the build in a
scratch copy, and requires byte-identical output.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

COLLECTOR = Path(__file__).resolve().parents[1]
WEB = COLLECTOR / "web"
STATIC = COLLECTOR / "src" / "sunbox" / "web" / "static"


@pytest.mark.skipif(shutil.which("npm") is None or shutil.which("node") is None, reason="needs Node.js and npm")
@pytest.mark.timeout(600)
def test_the_committed_assets_are_what_the_locked_sources_build(tmp_path: Path) -> None:
    work = tmp_path / "web"
    shutil.copytree(WEB, work, ignore=shutil.ignore_patterns("node_modules"))
    npm = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(npm, cwd=work, check=True, capture_output=True, timeout=540)
    out = tmp_path / "out"
    subprocess.run(["node", "build.mjs", "--out", str(out)], cwd=work, check=True, capture_output=True, timeout=60)
    built = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in STATIC.iterdir()}
    assert built.keys() == committed.keys()
    stale = sorted(name for name in built if built[name] != committed[name])
    assert not stale, f"rebuild with `cd collector/web && npm ci && npm run build`: {stale} differ"


def test_the_assets_load_nothing_from_elsewhere() -> None:
    index = (STATIC / "index.html").read_text()
    assert 'src="/static/app.js"' in index and 'href="/static/app.css"' in index
    for name in ("index.html", "app.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "@import" not in text, name
    script = (STATIC / "app.js").read_text()
    assert "fetch(`/api/" in script or 'fetch("/api/' in script
    assert "https://" not in script.replace("https://github.com/leeoniya/uPlot", "")
