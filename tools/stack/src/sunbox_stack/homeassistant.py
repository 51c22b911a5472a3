"""A real Home Assistant for the tests (issue 34), built from Debian's mirror and PyPI.

Home Assistant 2026.11 needs Python >= 3.14.2, which no Debian release this machine
runs has: Debian forky's ``python3.14`` in a debootstrap chroot does, and
``homeassistant==`` :data:`VERSION` goes into a venv inside it. The chroot is built once
and cached under ``~/.cache/sunbox/homeassistant-<version>/`` (a file lock lets two
pytest workers share it). Facts found on the way: bookworm's debootstrap has no forky
script (sid's serves); forky's Release file can be past its Valid-Until here, so apt in
the chroot has ``Acquire::Check-Valid-Until "false"``; pip and the packages Home
Assistant installs at its first start need the host's CA bundle (TLS passes an
intercepting proxy), and some of those need a compiler. The build ends with one start
of Home Assistant, so that what it installs at a first start is in the cache too.

A :class:`HomeAssistant` runs in its own mount namespace (``unshare``: ``/proc`` and
``/dev`` mounted for it alone) with a throw-away configuration directory inside the
chroot, on a free loopback port, and is onboarded and given the MQTT integration
through its own HTTP API (:meth:`HomeAssistant.onboard`, :meth:`HomeAssistant.add_mqtt`).
Needs root (debootstrap, chroot, unshare) and Linux.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = "2026.11.0"
SUITE = "forky"
MIRROR = "http://deb.debian.org/debian"
#: the compiler and headers: Home Assistant builds some of its requirements at a first start
PACKAGES = ["python3.14", "python3.14-venv", "python3.14-dev", "ca-certificates", "gcc", "g++", "libc6-dev"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sunbox"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: what the tests' Home Assistant loads (no default_config: nothing that reaches the
#: internet or the hardware); the recorder is the Energy dashboard's source
CONFIGURATION = """\
homeassistant:
  name: Sunbox test
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
websocket_api:
recorder:
  commit_interval: 1
energy:
logger:
  default: info
"""


class HomeAssistantUnavailable(RuntimeError):
    """What this machine lacks to run Home Assistant at all: root, Linux."""


class HomeAssistantBuildError(RuntimeError):
    """A step of the build failed (its output went to the build's log)."""


def root_dir() -> Path:
    """The chroot in the cache; a change of version or packages builds a new one."""
    key = hashlib.sha256(" ".join([VERSION, SUITE, *PACKAGES]).encode()).hexdigest()[:8]
    return CACHE / f"homeassistant-{VERSION}-{key}" / "root"


@contextmanager
def _lock(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sh(*command: str, log: Any = None) -> None:
    subprocess.run(command, check=True, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)


def build(log: Any = None) -> Path:
    """The cached chroot with Home Assistant installed and started once; built if missing
    (about 3 minutes on a cold machine of this kind). Returns its root.

    Raises:
        HomeAssistantUnavailable: not root, or not Linux.
        HomeAssistantBuildError: a step failed (its output in ``log``, or in
            ``build.log`` beside the chroot).
    """
    if sys.platform != "linux" or os.geteuid() != 0:
        raise HomeAssistantUnavailable("a real Home Assistant needs root on Linux (debootstrap, chroot, unshare)")
    root = root_dir()
    with _lock(root.parent.name):
        if (root / ".ready").exists():
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            if log is None:
                with (root.parent / "build.log").open("w") as own:
                    _build(root, own)
            else:
                _build(root, log)
        except (subprocess.CalledProcessError, OSError, TimeoutError) as exc:
            raise HomeAssistantBuildError(f"building Home Assistant {VERSION} failed: {exc}") from exc
    return root


def _build(root: Path, log: Any) -> None:
    if shutil.which("debootstrap") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "debootstrap"], check=True, env=env, stdout=subprocess.DEVNULL
        )
    partial = root.with_name("root.partial")
    shutil.rmtree(partial, ignore_errors=True)
    script = Path("/usr/share/debootstrap/scripts") / (
        SUITE if Path(f"/usr/share/debootstrap/scripts/{SUITE}").exists() else "sid"
    )
    _sh(
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(partial),
        MIRROR,
        str(script),
        log=log,
    )
    (partial / "etc/apt/apt.conf.d/99sunbox-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
    shutil.copy(HOST_CA, partial / "etc/ssl/certs/ca-certificates.crt")
    _sh("chroot", str(partial), "python3.14", "-m", "venv", "/srv/ha", log=log)
    _sh(
        "chroot", str(partial), "env", f"SSL_CERT_FILE={HOST_CA}", f"PIP_CERT={HOST_CA}",
        "/srv/ha/bin/pip", "install", "-q", f"homeassistant=={VERSION}", log=log,
    )  # fmt: skip
    os.replace(partial, root)
    # the first start installs the requirements of what the configuration loads
    first = HomeAssistant(root)
    first.start(timeout_s=600)
    first.remove()
    (root / ".ready").write_text(VERSION + "\n")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HomeAssistant:
    """One Home Assistant on a free loopback port, its configuration in ``config_dir``
    (inside the chroot at ``/srv/<name>``)."""

    root: Path
    port: int = field(default_factory=_free_port)
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    token: str | None = field(default=None, init=False)

    @property
    def config_dir(self) -> Path:
        return self.root / "srv" / self.name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def start(self, timeout_s: float = 180) -> float:
        """Start it and wait until it has started (its log says "Home Assistant
        initialized") and its HTTP API answers; the seconds that took.

        Raises:
            TimeoutError: it did not answer within ``timeout_s`` (its log says why).
        """
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        inner = (
            f"mount -t proc proc {self.root}/proc && mount --rbind /dev {self.root}/dev && "
            f"exec chroot {self.root} env SSL_CERT_FILE={HOST_CA} PIP_CERT={HOST_CA} HOME=/srv "
            f"/srv/ha/bin/hass -c /srv/{self.name}"
        )
        started = time.monotonic()
        with (self.config_dir.parent / f"{self.name}.out").open("wb") as out:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"Home Assistant exited ({self.process.returncode}): see {self.log_path}")
            try:
                initialized = "Home Assistant initialized in" in self.log_path.read_text(errors="replace")
                if initialized and self.request("GET", "/api/onboarding", auth=False)[0] in (200, 401):
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Home Assistant did not answer within {timeout_s:.0f} s: see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def remove(self) -> None:
        """Stop it and delete its configuration directory."""
        self.stop()
        shutil.rmtree(self.config_dir, ignore_errors=True)
        self.config_dir.with_name(f"{self.name}.out").unlink(missing_ok=True)

    # --- its HTTP API ----------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, form: bool = False
    ) -> tuple[int, Any]:
        """``(status, decoded JSON or None)`` of one API call."""
        headers: dict[str, str] = {}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return int(response.status), json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return int(exc.code), json.loads(text)
            except ValueError:
                return int(exc.code), text.decode(errors="replace")

    def _ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, answer = self.request(method, path, body, **kw)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {answer}")
        return answer

    def onboard(self) -> None:
        """Create the owner, finish onboarding, and keep an access token."""
        client_id = self.url + "/"
        user = self._ok(
            "POST",
            "/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "Owner",
                "username": "owner",
                "password": "sunbox-test-1",
                "language": "en",
            },
            auth=False,
        )
        token = self._ok(
            "POST",
            "/auth/token",
            {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id},
            auth=False,
            form=True,
        )
        self.token = token["access_token"]
        self._ok("POST", "/api/onboarding/core_config", {})
        self._ok("POST", "/api/onboarding/analytics", {})
        self._ok("POST", "/api/onboarding/integration", {"client_id": client_id, "redirect_uri": client_id})

    def add_mqtt(self, port: int, username: str, password: str) -> None:
        """Add the MQTT integration (its config flow) for a broker on loopback."""
        flow = self._ok("POST", "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        answer = self._ok(
            "POST",
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {
                "broker": "127.0.0.1",
                "port": port,
                "protocol": "5",
                "username": username,
                "password": password,
                "other_settings": {"set_client_cert": False, "set_ca_cert": "off"},
            },
        )
        if answer.get("type") != "create_entry" or answer["result"].get("state") != "loaded":
            raise RuntimeError(f"the MQTT integration was not added: {answer}")

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state object by entity id."""
        return {s["entity_id"]: s for s in self._ok("GET", "/api/states")}

    def websocket(self, *messages: dict[str, Any]) -> list[Any]:
        """Send each message on the WebSocket API (ids added) and return each result."""
        import asyncio

        import aiohttp

        async def talk() -> list[Any]:
            results = []
            async with aiohttp.ClientSession() as session, session.ws_connect(self.url + "/api/websocket") as ws:
                await ws.receive_json()  # auth_required
                await ws.send_json({"type": "auth", "access_token": self.token})
                reply = await ws.receive_json()
                if reply.get("type") != "auth_ok":
                    raise RuntimeError(f"WebSocket auth: {reply}")
                for number, message in enumerate(messages, 1):
                    await ws.send_json({"id": number, **message})
                    while True:
                        reply = await ws.receive_json()
                        if reply.get("id") == number and reply.get("type") == "result":
                            break
                    if not reply.get("success"):
                        raise RuntimeError(f"{message['type']}: {reply.get('error')}")
                    results.append(reply.get("result"))
            return results

        return asyncio.run(talk())

    def log_lines(self, level: tuple[str, ...] = ("WARNING", "ERROR")) -> list[str]:
        """The lines of its log at these levels (with their continuation lines)."""
        out: list[str] = []
        keep = False
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line[:4].isdigit():
                keep = any(f" {name} " in line[:60] for name in level)
            if keep:
                out.append(line)
        return out


def main() -> None:
    """``python -m sunbox_stack.homeassistant build``: build the cached chroot (tools/test.sh
    runs it in the background at the start of a whole run)."""
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m sunbox_stack.homeassistant build")
    try:
        print(build(sys.stdout))
    except (HomeAssistantUnavailable, HomeAssistantBuildError) as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
