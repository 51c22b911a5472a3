#!/usr/bin/env python3
"""The virtual Pi for the whole appliance: what molecule/virtual-pi boots and plays against.

``appliance.py up STATE_DIR``    build (or reuse) the image, the local APT repository and
                                 the wheelhouse, serve the last two, boot the VM, wait for SSH, write
                                 STATE_DIR/instance.json (address, port, user, key, repo)
``appliance.py down STATE_DIR``  stop the VM and the repository server
``appliance.py prebuild``        only build (or find cached) the image and the wheelhouse:
                                 tools/test.sh starts it in the background while it
                                 builds influxd, which the APT repository needs
``appliance.py cut STATE_DIR``   pull the plug: SIGKILL qemu (no shutdown, nothing flushed
                                 by the guest) and boot the same disk again; prints
                                 ``{"killed_at", "powered_on_at", "booted_at", "ssh_after_s"}``
                                 (Unix s; booted_at: SSH answers)

The image stands in for a fresh Raspberry Pi OS desktop install of the release in
``$SUNBOX_VPI_RELEASE``: ``trixie`` (the default, today's Raspberry Pi OS) or ``bookworm``
(its "Legacy"): Debian of that release (debootstrap, on top of tools/vpi's cached base)
with a ``pi`` user that has passwordless sudo and the SSH key molecule made (handed in
through qemu's fw_cfg, as Raspberry Pi Imager writes it into the first-boot settings),
Chromium and wlr-randr as on the desktop image, and BlueZ. On trixie it also has what Pi
OS trixie adds that the play touches, reproduced from their documented behaviour (the
Raspberry Pi archive is not reachable here; ``tools/vpi/pi-os-trixie/``): rpi-swap's default
swap (zram with a writeback file, ``/var/swap``, on the card), cloud-init's sshd drop-in
and lightdm's ``rpd-labwc`` session. It is not arm64 and has no DSI display: see
docs/virtual-pi.md.

The simulated devices run in their own virtual environment (/opt/sunbox-sim), apart
from the sunbox install that the collector role makes in /opt/sunbox.

InfluxData's APT repository cannot be reached from this machine kind, so the test serves
a local one on the host (reachable from the guest at 10.0.2.2): an ``influxdb2`` package
made from the test stack's influxd (same version, same unit name and paths as
InfluxData's package), signed with a test key. Only the repository URL, key URL and
fingerprint differ from a real Pi's inventory. Grafana cannot be obtained here at all.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vpi

REPO = vpi.REPO
CACHE = vpi.CACHE
# What Raspberry Pi OS's desktop image has and a minbase debootstrap lacks.
DESKTOP_PACKAGES = [
    "openssh-server",
    "sudo",
    "chromium",
    "wlr-randr",
    "curl",
    "gpg",
    "python3-apt",
    "python3-pip",
    "nftables",
    "systemd-timesyncd",
    "systemd-zram-generator",
    "unattended-upgrades",
    "zstd",
    "procps",
    "less",
]
INFLUXDB_VERSION = "2.7.12"
GUEST_HOST = "10.0.2.2"  # the host as qemu's user network shows it to the guest
#: the owner's USB stick for backups, as molecule.yml's backup_usb_label names it
STICK_LABEL = "SUNBOX-BKP"
STICK_MB = 256
#: What Raspberry Pi OS trixie adds that the play touches, laid out at its paths (README there).
PI_OS_TRIXIE = Path(__file__).resolve().parent / "pi-os-trixie"
HOST_TOOLS = {"qemu-img": "qemu-utils", "ssh": "openssh-client", "ssh-keygen": "openssh-client", "gpg": "gpg"}

FW_CFG_UNIT = """[Unit]
Description=Virtual Pi: the pi user's SSH key from qemu fw_cfg (Raspberry Pi Imager's job on a real Pi)
Before=ssh.service
ConditionPathExists=!/home/pi/.ssh/authorized_keys

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'modprobe qemu_fw_cfg; f=/sys/firmware/qemu_fw_cfg/by_name/opt/sunbox/authorized_keys/raw; \\
  for i in $(seq 20); do [ -e $f ] && break; sleep 1; done; install -d -o pi -g pi -m 700 /home/pi/.ssh; \\
  install -o pi -g pi -m 600 $f /home/pi/.ssh/authorized_keys'

[Install]
WantedBy=multi-user.target
"""


def log(message: str) -> None:
    print(f"[appliance {time.strftime('%H:%M:%S')}] {message}", flush=True)


def release() -> str:
    """The guest's Debian release: ``$SUNBOX_VPI_RELEASE`` (``./play.sh virtual-pi --release``), else trixie."""
    name = os.environ.get("SUNBOX_VPI_RELEASE", "trixie")
    if name not in vpi.RELEASES:
        sys.exit(f"appliance: SUNBOX_VPI_RELEASE={name!r}: one of {', '.join(vpi.RELEASES)}")
    return name


def image_key(name: str) -> str:
    digest = hashlib.sha256(vpi.image_key(name).encode())
    digest.update(" ".join(DESKTOP_PACKAGES).encode())
    digest.update(FW_CFG_UNIT.encode())
    if name == "trixie":
        for path in sorted(PI_OS_TRIXIE.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(PI_OS_TRIXIE)).encode() + path.read_bytes())
    digest.update(b"appliance-v2")
    return digest.hexdigest()[:12]


def build_image(name: str) -> Path:
    """The cached raw ext4 disk image of the fresh "Pi" of release ``name``."""
    vpi.HOST_TOOLS.update(HOST_TOOLS)
    vpi.host_tools()
    with vpi.cache_lock("appliance"):
        return _build_image(name)


def _build_image(name: str) -> Path:
    disk = CACHE / f"appliance-{name}-{image_key(name)}.img"
    if disk.exists():
        log(f"image: cached {disk}")
        return disk
    base = vpi.build_image(name)
    started = time.monotonic()
    root = CACHE / f"appliance-rootfs-{name}-{image_key(name)}"
    if root.exists():
        shutil.rmtree(root)
    log("image: copying the base and adding the desktop packages (a few minutes)")
    vpi.sh("cp", "-a", base, root)
    (root / ".complete").unlink(missing_ok=True)
    shutil.rmtree(root / "opt/sunbox-src", ignore_errors=True)
    shutil.rmtree(root / "opt/sunbox", ignore_errors=True)
    (root / "etc/hostname").write_text("sunbox\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 sunbox\n::1 localhost ip6-localhost\n")
    # the intercepting proxy's CA, kept across update-ca-certificates (test machine only)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "usr/local/share/ca-certificates/sunbox-host.crt")
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    (root / "etc/systemd/system/vpi-ssh-key.service").write_text(FW_CFG_UNIT)
    shutil.copytree(
        REPO / "collector",
        root / "opt/sunbox-sim-src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "build", "tests"),
    )
    with vpi.Chroot(root) as chroot:
        env = "DEBIAN_FRONTEND=noninteractive"
        chroot.run(
            "sh",
            "-c",
            f"apt-get update -q >/dev/null && {env} apt-get install -y -q "
            f"--no-install-recommends {' '.join(DESKTOP_PACKAGES)} >/dev/null",
        )
        chroot.run("apt-get", "clean")
        chroot.run("useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "pi")
        chroot.run("systemctl", "enable", "vpi-ssh-key.service", "ssh.service")
        chroot.run("systemctl", "disable", "mosquitto.service")
        chroot.run("python3", "-m", "venv", "/opt/sunbox-sim")
        chroot.run("/opt/sunbox-sim/bin/pip", "install", "-q", "--upgrade", "pip", "setuptools", "wheel")
        chroot.run(
            "/opt/sunbox-sim/bin/pip",
            "install",
            "-q",
            "-c",
            "/opt/sunbox-sim-src/constraints.txt",
            "/opt/sunbox-sim-src[sim]",
        )
    if name == "trixie":
        for path in sorted(PI_OS_TRIXIE.rglob("*")):
            if path.is_file() and path.name != "README.md":
                target = root / path.relative_to(PI_OS_TRIXIE)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)  # with its mode
    (root / "etc/sudoers.d/010_pi-nopasswd").write_text("pi ALL=(ALL) NOPASSWD: ALL\n")
    (root / "etc/sudoers.d/010_pi-nopasswd").chmod(0o440)
    (root / "etc/ssh/ssh_host_rsa_key").unlink(missing_ok=True)
    partial = disk.with_suffix(".partial")
    vpi.sh("truncate", "-s", "12G", partial)
    vpi.sh("mkfs.ext4", "-q", "-F", "-d", root, partial)
    partial.rename(disk)
    for kernel in sorted((root / "boot").glob("vmlinuz-*"))[-1:]:
        shutil.copy(kernel, disk.with_suffix(".vmlinuz"))
    for initrd in sorted((root / "boot").glob("initrd.img-*"))[-1:]:
        shutil.copy(initrd, disk.with_suffix(".initrd"))
    shutil.rmtree(root)
    log(f"image: built in {time.monotonic() - started:.0f} s: {disk}")
    return disk


def _deb_control(size_kib: int) -> str:
    return (
        "Package: influxdb2\n"
        f"Version: {INFLUXDB_VERSION}-1\n"
        "Architecture: amd64\n"
        "Maintainer: Sunbox test stack <sunbox@localhost>\n"
        f"Installed-Size: {size_kib}\n"
        "Section: database\n"
        "Priority: optional\n"
        "Description: InfluxDB 2 (Sunbox virtual-Pi test package)\n"
        " influxd built from source by Sunbox's test stack, packaged with the unit name and\n"
        " paths of InfluxData's influxdb2 package. For the virtual Pi only.\n"
    )


INFLUXDB_UNIT = """[Unit]
Description=InfluxDB is an open-source, distributed, time series database
Documentation=https://docs.influxdata.com/influxdb/
After=network-online.target

[Service]
User=influxdb
Group=influxdb
LimitNOFILE=65536
EnvironmentFile=-/etc/default/influxdb2
Environment=INFLUXD_CONFIG_PATH=/etc/influxdb/config.toml
ExecStart=/usr/bin/influxd
KillMode=control-group
Restart=on-failure

[Install]
WantedBy=multi-user.target
Alias=influxd.service
"""

POSTINST = """#!/bin/sh
set -e
if ! id influxdb >/dev/null 2>&1; then
  useradd --system -U -M -d /var/lib/influxdb -s /bin/false influxdb
fi
install -d -o influxdb -g influxdb -m 0750 /var/lib/influxdb
chgrp influxdb /etc/influxdb/config.toml
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable influxdb.service
  systemctl restart influxdb.service
fi
"""


def build_apt_repo() -> tuple[Path, str]:
    """The local APT repository (signed) with influxdb2, and its key's fingerprint."""
    influxd = CACHE.parent / f"influxdb-{INFLUXDB_VERSION}" / "influxd"
    if not influxd.exists():
        # tools/test.sh builds it in the background (sunbox_stack.provision holds this lock
        # while it builds): wait for it, as the VM boots meanwhile
        log("apt repository: waiting for influxd's build")
        waited = time.monotonic()
        with (CACHE.parent / f"influxdb-{INFLUXDB_VERSION}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        log(f"apt repository: waited {time.monotonic() - waited:.0f} s for influxd")
    if not influxd.exists():
        sys.exit(f"appliance: {influxd} missing: run tools/test.sh (or sunbox-stack) once to build it")
    stat = influxd.stat()
    key = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:{INFLUXDB_UNIT}{POSTINST}v1".encode()).hexdigest()[:12]
    repo = CACHE / f"apt-repo-{key}"
    fingerprint_file = repo / "fingerprint"
    if fingerprint_file.exists():
        log(f"apt repository: cached {repo}")
        return repo, fingerprint_file.read_text().strip()
    if repo.exists():
        shutil.rmtree(repo)
    started = time.monotonic()
    log("apt repository: packaging influxd and signing with a test key")
    pkg = repo / "build" / "influxdb2"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/bin").mkdir(parents=True)
    shutil.copy(influxd, pkg / "usr/bin/influxd")
    (pkg / "lib/systemd/system").mkdir(parents=True)
    (pkg / "lib/systemd/system/influxdb.service").write_text(INFLUXDB_UNIT)
    (pkg / "etc/influxdb").mkdir(parents=True)
    (pkg / "etc/influxdb/config.toml").write_text(
        'bolt-path = "/var/lib/influxdb/influxd.bolt"\nengine-path = "/var/lib/influxdb/engine"\n'
    )
    (pkg / "DEBIAN/conffiles").write_text("/etc/influxdb/config.toml\n")
    (pkg / "DEBIAN/postinst").write_text(POSTINST)
    (pkg / "DEBIAN/postinst").chmod(0o755)
    size_kib = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file()) // 1024
    (pkg / "DEBIAN/control").write_text(_deb_control(size_kib))
    pool = repo / "influxdata/pool/main"
    pool.mkdir(parents=True)
    deb = pool / f"influxdb2_{INFLUXDB_VERSION}-1_amd64.deb"
    vpi.sh("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", pkg, deb, stdout=subprocess.DEVNULL)
    shutil.rmtree(repo / "build")
    data = deb.read_bytes()
    stanza = _deb_control(size_kib) + (
        f"Filename: pool/main/{deb.name}\nSize: {len(data)}\n"
        f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
    )
    dist = repo / "influxdata/dists/stable"
    binary = dist / "main/binary-amd64"
    binary.mkdir(parents=True)
    packages = stanza.encode() + b"\n"
    (binary / "Packages").write_bytes(packages)
    (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    lines = ["SHA256:"]
    for name in ("Packages", "Packages.gz"):
        body = (binary / name).read_bytes()
        lines.append(f" {hashlib.sha256(body).hexdigest()} {len(body)} main/binary-amd64/{name}")
    release = (
        "Origin: Sunbox test\nLabel: Sunbox test\nSuite: stable\nCodename: stable\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\n"
        "Architectures: amd64\nComponents: main\n" + "\n".join(lines) + "\n"
    )
    (dist / "Release").write_text(release)
    gnupg = repo / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(gnupg))
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [
            *gpg,
            "--quick-generate-key",
            "Sunbox virtual-Pi test repository <test@sunbox.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        env=env,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys"], check=True, env=env, capture_output=True, text=True
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    subprocess.run([*gpg, "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release")], check=True, env=env)
    key_asc = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", fingerprint], check=True, env=env, capture_output=True, text=True
    ).stdout
    (repo / "influxdata/key.asc").write_text(key_asc)
    fingerprint_file.write_text(fingerprint + "\n")
    log(f"apt repository: built in {time.monotonic() - started:.0f} s: {repo}")
    return repo, fingerprint


#: The guest's Python and C library per release: the wheels the guest can install.
GUEST_PYTHON = {"trixie": ("3.13", 41), "bookworm": ("3.11", 36)}


def build_wheelhouse(name: str) -> Path:
    """sunbox's dependencies (collector/pyproject.toml, pinned by collector/constraints.txt)
    and uv as wheels for the guest, downloaded once on the host and served to it, so the
    play's install reads no package index (role variable sunbox_python_pip_extra_args).

    In the emulated guest, pip spends most of its time on the index (about 85 s of a
    133 s install from PyPI; 50 s from this wheelhouse, measured): the same pinned
    versions, without the index round trips. A real Pi installs from PyPI, or from a
    wheelhouse made the same way for aarch64 (docs/appliance.md).
    """
    with vpi.cache_lock("wheels"):
        return _build_wheelhouse(name)


def _build_wheelhouse(name: str) -> Path:
    python, glibc = GUEST_PYTHON[name]
    pyproject = REPO / "collector" / "pyproject.toml"
    constraints = REPO / "collector" / "constraints.txt"
    digest = hashlib.sha256(pyproject.read_bytes() + constraints.read_bytes() + python.encode() + b"wheels-v1")
    wheels = CACHE / f"wheels-{name}-{digest.hexdigest()[:12]}"
    if (wheels / ".complete").exists():
        log(f"wheelhouse: cached {wheels}")
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    # and uv, the installer the sunbox_python role installs them with
    requirements = [*tomllib.loads(pyproject.read_text())["project"]["dependencies"], "uv"]
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc, 4, -1)] + ["linux_x86_64"]
    started = time.monotonic()
    vpi.sh(
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--dest",
        wheels,
        "--only-binary=:all:",
        *[arg for platform in platforms for arg in ("--platform", platform)],
        "--python-version",
        python,
        "--implementation",
        "cp",
        "-c",
        constraints,
        *requirements,
    )
    (wheels / ".complete").write_text(time.strftime("%F %T\n"))
    log(f"wheelhouse: {len(list(wheels.glob('*.whl')))} wheels in {time.monotonic() - started:.0f} s: {wheels}")
    return wheels


def serve(directory: Path, pidfile: Path, logfile: Path) -> int:
    """Serve ``directory`` over HTTP on a free port of the host's loopback (the guest
    reaches it at GUEST_HOST); returns the port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)],
        stdout=logfile.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pidfile.write_text(f"{server.pid}\n")
    return port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ssh(port: int, key: Path, deadline_s: float) -> None:
    """Until the guest answers SSH; a kernel panic on its console (the guest then reboots
    itself, ``panic=5``) is logged with its first lines."""
    deadline = time.monotonic() + deadline_s
    console = key.parent / "console.log"
    panics = 0
    while time.monotonic() < deadline:
        text = console.read_text(errors="replace") if console.exists() else ""
        if text.count("Kernel panic") > panics:
            panics = text.count("Kernel panic")
            oops = next((line for line in text.splitlines() if "Oops" in line or "BUG:" in line), "")
            log(f"vm: the guest's kernel panicked ({oops.strip()[:120]}); it reboots by itself")
        probe = subprocess.run(
            [
                "ssh",
                "-i",
                str(key),
                "-p",
                str(port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "pi@127.0.0.1",
                "true",
            ],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return
        time.sleep(5)
    raise SystemExit(f"appliance: no SSH on port {port} within {deadline_s:.0f} s")


def up(state: Path) -> int:
    if os.geteuid() != 0:
        sys.exit("appliance: needs root (debootstrap, chroot, mount)")
    started = time.monotonic()
    state.mkdir(parents=True, exist_ok=True)
    name = release()
    log(f"release: {name}")
    disk = build_image(name)
    key = state / "id_ed25519"
    if not key.exists():
        vpi.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "molecule@virtual-pi", "-f", key)
    overlay = state / "disk.qcow2"
    overlay.unlink(missing_ok=True)
    vpi.sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", "raw", overlay)
    # the owner's USB stick for the nightly backups (the backup role finds it by its
    # label): an empty ext4 image, a new one with each VM, or SUNBOX_VPI_STICK's (the
    # restore check plugs the first VM's stick into a fresh one)
    stick = state / "stick.img"
    stick.unlink(missing_ok=True)
    kept = os.environ.get("SUNBOX_VPI_STICK")
    if kept:
        shutil.copyfile(kept, stick)
    else:
        vpi.sh("truncate", "-s", f"{STICK_MB}M", stick)
        vpi.sh("mkfs.ext4", "-q", "-F", "-L", STICK_LABEL, stick)
    wheels_port = serve(build_wheelhouse(name), state / "wheels.pid", state / "wheels.log")
    ssh_port = free_port()
    log("vm: booting (qemu, tcg)")
    qemu = [
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        # max, measured: a Nehalem guest (no AVX2 or ERMS for TCG to emulate) copied
        # memory 35 % faster in a micro-benchmark, yet the whole virtual Pi took 15.1 min
        # in CI against 12.4-13.2 with max (docs/virtual-pi.md, "Time"); the guest
        # kernel's mitigations=off changed nothing.
        "-cpu",
        "max",
        "-m",
        "4096",
        "-smp",
        "2",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{state / 'console.log'}",
        "-daemonize",
        "-pidfile",
        state / "qemu.pid",
        "-kernel",
        disk.with_suffix(".vmlinuz"),
        "-initrd",
        disk.with_suffix(".initrd"),
        "-append",
        # a kernel that oopses or panics reboots itself (qemu resets the guest) rather
        # than leaving a VM without SSH: seen once at boot under multi-threaded TCG, an
        # int3 Oops in kmem_cache_free while systemd started units (trixie, 2026-12-05)
        "root=/dev/vda rw console=ttyS0 quiet oops=panic panic=5",
        "-drive",
        f"file={overlay},format=qcow2,if=virtio",
        "-drive",
        f"file={stick},format=raw,if=virtio",
        "-fw_cfg",
        f"name=opt/sunbox/authorized_keys,file={key}.pub",
        "-nic",
        f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
    ]
    (state / "qemu.json").write_text(json.dumps({"argv": [str(a) for a in qemu], "ssh_port": ssh_port}) + "\n")
    vpi.sh(*qemu)
    # the repository after the boot: on a cold machine influxd is still being built
    # while the VM boots (tools/test.sh), and the play needs it only at converge
    repo, fingerprint = build_apt_repo()
    repo_port = serve(repo, state / "apt-repo.pid", state / "apt-repo.log")
    wait_for_ssh(ssh_port, key, 900)
    log(f"vm: SSH answers after {time.monotonic() - started:.0f} s (port {ssh_port})")
    repo_url = f"http://{GUEST_HOST}:{repo_port}/influxdata"
    instance = {
        "instance": "virtual-pi",
        "address": "127.0.0.1",
        "port": ssh_port,
        "user": "pi",
        "identity_file": str(key),
        "influxdb_apt_uri": repo_url,
        "influxdb_apt_key_url": f"{repo_url}/key.asc",
        "influxdb_apt_key_fingerprint": fingerprint,
        # plain HTTP on the host's loopback: pip must be told to trust it
        "pip_extra_args": f"--no-index --find-links http://{GUEST_HOST}:{wheels_port}/ --trusted-host {GUEST_HOST}",
    }
    (state / "instance.json").write_text(json.dumps(instance, indent=2) + "\n")
    print(json.dumps(instance))
    return 0


def _kill(pidfile: Path, sig: int = signal.SIGTERM) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, sig)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    pidfile.unlink(missing_ok=True)


def cut(state: Path) -> int:
    """Kill the VM as a pulled plug would, boot it again from the same disk, wait for SSH."""
    saved = json.loads((state / "qemu.json").read_text())
    _kill(state / "qemu.pid", signal.SIGKILL)
    killed_at = time.time()
    log("vm: power cut (qemu SIGKILLed); booting the same disk again")
    vpi.sh(*saved["argv"])
    powered_on_at = time.time()
    wait_for_ssh(saved["ssh_port"], state / "id_ed25519", 900)
    booted_at = time.time()
    print(
        json.dumps(
            {
                "killed_at": killed_at,
                "powered_on_at": powered_on_at,
                "booted_at": booted_at,
                "ssh_after_s": round(booted_at - killed_at, 1),
            }
        )
    )
    return 0


def down(state: Path) -> int:
    _kill(state / "qemu.pid")
    _kill(state / "apt-repo.pid")
    _kill(state / "wheels.pid")
    (state / "disk.qcow2").unlink(missing_ok=True)
    (state / "instance.json").unlink(missing_ok=True)
    return 0


def unpin() -> None:
    """Let this process, and so qemu, run on every CPU.

    Mitogen (the play's strategy, ansible.cfg) pins Ansible's processes to CPUs and the
    children it starts inherit that: on a 2-core machine create.yml's ``up`` ran with one
    CPU, so qemu emulated both of the guest's CPUs on one host core (pip, apt and service
    restarts in the guest took 1.5-3 times as long; measured).
    """
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError as exc:  # a CPU set narrower than cpu_count (cgroup cpuset): keep it
        log(f"CPU affinity left as it was ({exc})")


def main() -> int:
    unpin()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "cut", "image", "prebuild"])
    parser.add_argument("state", type=Path, nargs="?", default=None)
    args = parser.parse_args()
    if args.command == "image":
        build_image(release())
        build_apt_repo()
        return 0
    if args.command == "prebuild":
        started = time.monotonic()
        build_image(release())
        build_wheelhouse(release())
        log(f"prebuild: image and wheelhouse ready after {time.monotonic() - started:.0f} s")
        # the base of the collector-on-BlueZ test (tools/vpi/vpi.py ble-test: bookworm)
        vpi.build_image("bookworm")
        log(f"prebuild: the BLE test's image ready after {time.monotonic() - started:.0f} s")
        return 0
    if args.state is None:
        parser.error("give the state directory")
    return {"up": up, "down": down, "cut": cut}[args.command](args.state)


if __name__ == "__main__":
    sys.exit(main())
