"""Start and stop the real servers on free loopback ports with throw-away data directories.

Each server object can be stopped and started again on the same port and data
(tests restart brokers and databases mid-run).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import provision
from .provision import StackError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http(
    method: str, url: str, body: object | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


@dataclass
class _Process:
    name: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return _port_open(self.port)

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 60.0) -> None:
        if self.process is not None:
            return
        if _port_open(self.port):
            raise StackError(f"{self.name}: port {self.port} on 127.0.0.1 is already in use")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=self._env()
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.process = None
                raise StackError(f"{self.name} exited during start-up:\n{tail}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StackError(f"{self.name} did not become healthy within {timeout:g} s (log: {self.log_path})")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Mosquitto(_Process):
    """Mosquitto with a password file, no anonymous access, persistence on."""

    username: str = "sunbox"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwd = self.workdir / "passwd"
        subprocess.run(
            [str(provision.mosquitto_passwd()), "-c", "-b", str(passwd), self.username, self.password],
            check=True,
            capture_output=True,
        )
        passwd.chmod(0o600)
        (self.workdir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "log_dest stdout\n"
            # run as the invoking user, so it can read its own 0600 password file
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        )

    def _command(self) -> list[str]:
        return [str(provision.mosquitto()), "-c", str(self.workdir / "mosquitto.conf")]


@dataclass
class InfluxDB(_Process):
    """influxd, set up with an org, a bucket and an operator token."""

    org: str = "sunbox"
    bucket: str = "raw"
    username: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _setup_done: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            str(provision.influxd()),
            f"--bolt-path={self.workdir}/influxd.bolt",
            f"--engine-path={self.workdir}/engine",
            f"--sqlite-path={self.workdir}/influxd.sqlite",
            f"--http-bind-address=127.0.0.1:{self.port}",
            "--reporting-disabled",
            "--log-level=warn",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("INFLUXD_CONFIG_PATH", None)
        env["INFLUXD_CONFIG_PATH"] = str(self.workdir)
        return env

    def _ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/health")
        except OSError:
            return False
        return status == 200

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        super().start(timeout)
        if not self._setup_done:
            status, body = _http(
                "POST",
                f"{self.url}/api/v2/setup",
                {
                    "username": self.username,
                    "password": self.password,
                    "org": self.org,
                    "bucket": self.bucket,
                    "token": self.token,
                },
            )
            if status != 201:
                raise StackError(f"influxdb setup failed: HTTP {status} {body[:300]!r}")
            self._setup_done = True


@dataclass
class Grafana(_Process):
    """Grafana OSS server with an admin password, SQLite in the work directory."""

    home: Path = Path()
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    #: a provisioning directory to use instead of an empty one (e.g. the repo's grafana/provisioning)
    provisioning: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        binary = self.home / "bin" / "grafana"
        args = ["server"] if binary.exists() else []
        if not binary.exists():
            binary = self.home / "bin" / "grafana-server"
        return [str(binary), *args, f"--homepath={self.home}"]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GF_SERVER_HTTP_ADDR="127.0.0.1",
            GF_SERVER_HTTP_PORT=str(self.port),
            GF_PATHS_DATA=str(self.workdir / "data"),
            GF_PATHS_LOGS=str(self.workdir / "logs"),
            GF_PATHS_PLUGINS=str(self.workdir / "plugins"),
            GF_PATHS_PROVISIONING=str(self.provisioning or self.workdir / "provisioning"),
            GF_SECURITY_ADMIN_PASSWORD=self.admin_password,
            GF_ANALYTICS_REPORTING_ENABLED="false",
            GF_ANALYTICS_CHECK_FOR_UPDATES="false",
        )
        env.update(self.extra_env)
        return env

    def _ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/api/health")
        except OSError:
            return False
        return status == 200

    def start(self, timeout: float = 90.0) -> None:
        for sub in ("data", "logs", "plugins", "provisioning"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        super().start(timeout)
