"""Make the server binaries of the test stack available, pinned to the appliance's versions.

Sources, in order, per server:

1. an explicit path from the environment (``SUNBOX_MOSQUITTO``, ``SUNBOX_INFLUXD``,
   ``SUNBOX_GRAFANA_HOME``);
2. the cache, ``$SUNBOX_CACHE`` or ``~/.cache/sunbox/<name>-<version>/``;
3. for InfluxDB: a build of the pinned release from source through the Go module proxy
   (Flux's libflux is Rust, built by InfluxData's pkg-config wrapper with cargo).

Mosquitto comes from Debian's package (``apt-get install mosquitto``; ``tools/test.sh``
installs it). Grafana has no source here: the Go module proxy refuses
``github.com/grafana/grafana`` and no package registry ships its server, so it must be
given with ``SUNBOX_GRAFANA_HOME`` (an unpacked official release) or already be cached.

A build happens in a temporary directory and is moved into the cache only when it
succeeded, so a half-finished build never lands there. Failures raise
:class:`StackError` with one message naming what is missing and how to get it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOSQUITTO_VERSION = "2.0.11"  # Debian bookworm, as on Raspberry Pi OS Bookworm
INFLUXDB_VERSION = "2.7.12"
INFLUXDB_MODULE = "github.com/influxdata/influxdb/v2"
INFLUXDB_PKG_CONFIG = "github.com/influxdata/pkg-config@v0.2.14"
GRAFANA_VERSION = "11.6.0"


class StackError(RuntimeError):
    """A server binary cannot be provided; the message says what is missing and how to fix it."""


def cache_root() -> Path:
    return Path(os.environ.get("SUNBOX_CACHE", Path.home() / ".cache" / "sunbox"))


def _log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} is missing: {hint}")
    return path


def mosquitto() -> Path:
    """Path of the ``mosquitto`` broker binary."""
    explicit = os.environ.get("SUNBOX_MOSQUITTO")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise StackError(f"SUNBOX_MOSQUITTO={explicit} is not an executable")
        return Path(explicit)
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise StackError("mosquitto is missing: run `apt-get install -y mosquitto` (tools/test.sh does it as root)")


def mosquitto_passwd() -> Path:
    binary = mosquitto().parent.parent / "bin" / "mosquitto_passwd"
    found = shutil.which("mosquitto_passwd") or (str(binary) if binary.exists() else None)
    if not found:
        raise StackError("mosquitto_passwd is missing: run `apt-get install -y mosquitto`")
    return Path(found)


def influxd() -> Path:
    """Path of ``influxd`` (explicit, cached, or built from source now)."""
    explicit = os.environ.get("SUNBOX_INFLUXD")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise StackError(f"SUNBOX_INFLUXD={explicit} is not an executable")
        return Path(explicit)
    cached = cache_root() / f"influxdb-{INFLUXDB_VERSION}" / "influxd"
    if cached.exists():
        return cached
    # one build at a time: tools/test.sh builds it in the background while the tests that
    # need it (and the virtual Pi's APT repository, tools/vpi/appliance.py) wait here
    cached.parent.parent.mkdir(parents=True, exist_ok=True)
    with (cached.parent.parent / f"influxdb-{INFLUXDB_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.exists():
            build_influxd(cached.parent)
    return cached


_RUSTC_WRAPPER = """#!/bin/sh
# Flux {version}'s libflux denies warnings; newer rustc adds lints. Cap them at warn
# unless cargo already capped them (it does for dependencies).
case " $* " in
  *" --cap-lints"*) exec "$@" ;;
  *) exec "$@" --cap-lints=warn ;;
esac
"""


def build_influxd(destination: Path) -> None:
    """Build ``influxd`` v{INFLUXDB_VERSION} from the Go module proxy into ``destination``."""
    go = _require_tool("go", "install Go (https://go.dev/dl) or set SUNBOX_INFLUXD to an influxd binary")
    _require_tool("cargo", "install Rust with rustup, or set SUNBOX_INFLUXD to an influxd binary")
    _require_tool("cc", "install a C compiler (apt-get install build-essential)")
    started = time.monotonic()
    _log(f"building influxd {INFLUXDB_VERSION} from source (first run only; several minutes)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="influxd-build-", dir=destination.parent) as tmp:
        work = Path(tmp)
        env = dict(os.environ, GOFLAGS="-buildvcs=false", GOTOOLCHAIN="local", GOBIN=str(work / "bin"))
        try:
            info = json.loads(
                subprocess.run(
                    [go, "mod", "download", "-json", f"{INFLUXDB_MODULE}@v{INFLUXDB_VERSION}"],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=work,
                ).stdout
            )
            if info.get("Error"):
                raise StackError(f"Go module proxy: {info['Error']}")
            src = work / "src"
            shutil.copytree(info["Dir"], src)
            for path in src.rglob("*"):
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o200)
            subprocess.run([go, "install", INFLUXDB_PKG_CONFIG], check=True, capture_output=True, text=True, env=env)
            wrapper = work / "bin" / "rustc-wrapper"
            wrapper.write_text(_RUSTC_WRAPPER.format(version=INFLUXDB_VERSION))
            wrapper.chmod(0o755)
            env.update(
                PKG_CONFIG=str(work / "bin" / "pkg-config"),
                RUSTC_WRAPPER=str(wrapper),
                # libflux pins an old toolchain in rust-toolchain; use the installed default
                RUSTUP_TOOLCHAIN=os.environ.get("RUSTUP_TOOLCHAIN", "stable"),
            )
            out = work / "influxd"
            log = work / "build.log"
            with log.open("w") as handle:
                result = subprocess.run(
                    [
                        go,
                        "build",
                        "-tags",
                        "sqlite_foreign_keys,sqlite_json",
                        "-ldflags",
                        f"-s -w -X main.version={INFLUXDB_VERSION} -X main.commit=v{INFLUXDB_VERSION}",
                        "-o",
                        str(out),
                        "./cmd/influxd",
                    ],
                    cwd=src,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            if result.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                raise StackError(f"building influxd {INFLUXDB_VERSION} failed:\n{tail}")
            staged = Path(tempfile.mkdtemp(prefix="influxdb-staged-", dir=destination.parent))
            shutil.move(str(out), staged / "influxd")
            if destination.exists():
                shutil.rmtree(destination)
            staged.rename(destination)
        except subprocess.CalledProcessError as exc:
            raise StackError(f"{' '.join(map(str, exc.cmd[:3]))} failed: {exc.stderr.strip()[-2000:]}") from None
    _log(f"influxd built in {time.monotonic() - started:.0f} s -> {destination}")


def grafana_home() -> Path | None:
    """Directory of an unpacked Grafana OSS release (``bin/grafana``), or None."""
    explicit = os.environ.get("SUNBOX_GRAFANA_HOME")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(cache_root() / f"grafana-{GRAFANA_VERSION}")
    for home in candidates:
        if (home / "bin" / "grafana").exists() or (home / "bin" / "grafana-server").exists():
            return home
    if explicit:
        raise StackError(f"SUNBOX_GRAFANA_HOME={explicit} has no bin/grafana")
    return None


GRAFANA_MISSING = (
    f"Grafana {GRAFANA_VERSION} is not available: the Go module proxy refuses github.com/grafana/grafana "
    "and no package registry reachable here ships its server; set SUNBOX_GRAFANA_HOME to an unpacked "
    "Grafana OSS release"
)


def main() -> int:
    """``python -m sunbox_stack.provision``: provision everything that can be, report the rest."""
    try:
        print(f"mosquitto: {mosquitto()}")
        print(f"influxd:   {influxd()}")
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    home = grafana_home()
    print(f"grafana:   {home if home else 'absent - ' + GRAFANA_MISSING}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
