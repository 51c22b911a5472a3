"""Real filesystems for tests that need one they can break (root only)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A real tmpfs at ``where`` (root only), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "sunbox-test-card", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@dataclass
class SshHost:
    """A real OpenSSH server on 127.0.0.1 (root only) serving ``root`` over SFTP to
    ``client_key``; ``known_hosts`` holds its host key as ``ssh-keyscan`` prints it."""

    root: Path
    port: int
    client_key: Path
    known_hosts: Path
    #: sshd's log (``-e``): "Accepted publickey for ..." per login
    log: Path

    @property
    def target(self) -> str:
        """The role's ``backup_ssh_target`` for this host."""
        return f"root@127.0.0.1:{self.root}"


@contextlib.contextmanager
def ssh_host(where: Path, port: int) -> Iterator[SshHost]:
    """Start ``/usr/sbin/sshd`` with a fresh host key and one authorized client key."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(where / name)], check=True)
    (where / "authorized_keys").write_text((where / "client_key.pub").read_text())
    (where / "authorized_keys").chmod(0o600)
    (where / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {where / 'host_key'}\n"
        f"AuthorizedKeysFile {where / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"PidFile {where / 'sshd.pid'}\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = (where / "sshd.log").open("wb")
    server = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(where / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    known_hosts = where / "known_hosts"
    deadline = time.monotonic() + 15
    while True:
        scan = subprocess.run(
            ["ssh-keyscan", "-p", str(port), "-t", "ed25519", "127.0.0.1"], capture_output=True, text=True
        )
        if scan.stdout.strip() or time.monotonic() > deadline or server.poll() is not None:
            break
        time.sleep(0.2)
    known_hosts.write_text(scan.stdout)
    root = where / "remote"
    root.mkdir()
    try:
        yield SshHost(root, port, where / "client_key", known_hosts, where / "sshd.log")
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@contextlib.contextmanager
def sshfs(source: str, where: Path, options: str) -> Iterator[Path]:
    """Mount ``source`` (user@host:/dir) at ``where`` as systemd mounts the role's fstab
    line (``mount -t fuse.sshfs -o <options>``); unmounted afterwards.

    Raises:
        subprocess.CalledProcessError: the mount failed (its stderr attached).
    """
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "fuse.sshfs", "-o", options, source, str(where)], check=True, capture_output=True, text=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
