"""The mosquitto role's files, rendered by Ansible, run by the real Mosquitto: two sites.

A central broker (TLS listener, an account per field site) and a field broker that
bridges its devices to it over TLS under its site's branch, both from
roles/mosquitto/templates with the role's defaults. A reading published on the field
broker must arrive on the central one as the site's; the central broker must refuse
anonymous clients, a reader's attempt to write and one site posing as another.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from sunbox_stack import provision

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "mosquitto"
PLAY_VENV = ROOT / ".play-venv" / "bin"

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(not (PLAY_VENV / "ansible").exists(), reason="run ./play.sh lint once to create .play-venv"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(config_dir: Path, overrides: dict[str, Any]) -> None:
    """The role's three files, rendered by ansible's template module with its defaults."""
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update(overrides, mosquitto_config_dir=str(config_dir))
    (config_dir / "conf.d").mkdir(parents=True)
    var_file = config_dir / "vars.json"
    var_file.write_text(json.dumps(variables))
    env = dict(
        os.environ, ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")
    )
    for src, dest in (
        ("passwd.j2", "sunbox.passwd"),
        ("acl.j2", "sunbox.acl"),
        ("sunbox.conf.j2", "conf.d/sunbox.conf"),
    ):
        result = subprocess.run(
            [str(PLAY_VENV / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
             "-e", f"ansible_python_interpreter={PLAY_VENV / 'python'}", "-m", "ansible.builtin.template",
             "-a", f"src={ROLE / 'templates' / src} dest={config_dir / dest} mode=0600", "-e", f"@{var_file}"],
            capture_output=True, text=True, env=env, check=False, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def start(config_dir: Path) -> subprocess.Popen[bytes]:
    """Mosquitto with the rendered files, as Debian's mosquitto.conf includes them."""
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    main = config_dir / "mosquitto.conf"
    main.write_text(f"user {user}\npersistence false\nlog_dest stdout\ninclude_dir {config_dir / 'conf.d'}\n")
    log = (config_dir / "mosquitto.log").open("wb")
    return subprocess.Popen([str(provision.mosquitto()), "-c", str(main)], stdout=log, stderr=subprocess.STDOUT)


def wait_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        subprocess.run(["sleep", "0.1"], check=True)
    raise AssertionError(f"nothing listens on {port}")


def client(port: int, username: str | None, password: str | None) -> tuple[mqtt.Client, queue.Queue[Any]]:
    inbox: queue.Queue[Any] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if username:
        c.username_pw_set(username, password)
    c.on_connect = lambda cl, ud, flags, rc, props: inbox.put(("connack", rc.value))
    c.on_message = lambda cl, ud, msg: inbox.put((msg.topic, msg.payload))
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    return c, inbox


def make_certs(directory: Path) -> None:
    directory.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sunbox-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip


def default_account(name: str, password: str) -> dict[str, Any]:
    """One of the role's default accounts, its ACL as the role has it, with a test password."""
    accounts = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["mosquitto_users"]
    account = next(a for a in accounts if a["name"] == name)
    return {**account, "password": password}


def received(inbox: queue.Queue[Any], wait_s: float) -> list[tuple[str, bytes]]:
    """Every message that arrives within wait_s."""
    seen = []
    try:
        while True:
            seen.append(inbox.get(timeout=wait_s))
    except queue.Empty:
        return seen


def test_field_pi_bridges_readings_to_the_central_broker_over_tls(tmp_path: Path) -> None:
    """Two sites bridge to one central broker; each site's account may publish under its
    own branch only (issue 16, finding 5)."""
    certs = tmp_path / "certs"
    make_certs(certs)
    central_port, tls_port, field_port = free_port(), free_port(), free_port()
    users = {
        "collector": "field collector pass",
        "store": "central store pass",
        "bridge": "bridge pass",
        "other": "other site pass",
    }
    render(tmp_path / "central", {
        "mosquitto_port": central_port, "mosquitto_tls_port": tls_port,
        "mosquitto_tls_cert_file": str(certs / "server.crt"), "mosquitto_tls_key_file": str(certs / "server.key"),
        "mosquitto_tls_ca_file": str(certs / "ca.crt"),
        "mosquitto_users": [default_account("sunbox-store", users["store"])],
        "mosquitto_sites": [
            {"name": "field", "password": users["bridge"]}, {"name": "cabin", "password": users["other"]},
        ],
    })  # fmt: skip
    render(tmp_path / "field", {
        "mosquitto_port": field_port,
        "mosquitto_users": [default_account("sunbox-collector", users["collector"])],
        "mosquitto_bridge_host": "localhost", "mosquitto_bridge_port": tls_port, "mosquitto_bridge_site": "field",
        "mosquitto_bridge_username": "bridge-field", "mosquitto_bridge_password": users["bridge"],
        "mosquitto_bridge_ca_file": str(certs / "ca.crt"),
    })  # fmt: skip
    central = start(tmp_path / "central")
    field = start(tmp_path / "field")
    clients: list[mqtt.Client] = []
    try:
        for port in (central_port, tls_port, field_port):
            wait_port(port)
        store, inbox = client(central_port, "sunbox-store", users["store"])
        clients.append(store)
        assert inbox.get(timeout=10) == ("connack", 0)
        store.subscribe("sunbox/#", qos=1)
        collector, collector_inbox = client(field_port, "sunbox-collector", users["collector"])
        clients.append(collector)
        assert collector_inbox.get(timeout=10) == ("connack", 0)
        reading = json.dumps({"soc": 87.5}).encode()
        topic, payload = None, None
        for _ in range(30):  # until the bridge is up
            collector.publish("sunbox/house-battery/state", reading, qos=1)
            try:
                topic, payload = inbox.get(timeout=1)
                break
            except queue.Empty:
                continue
        # on the central broker the reading is the field site's
        assert (topic, payload) == ("sunbox/site/field/house-battery/state", reading), (
            tmp_path / "field/mosquitto.log"
        ).read_text()

        # the writer's stored reports for the site travel the other way, to its collector
        collector.subscribe("sunbox/_store/stored", qos=1)
        report = json.dumps({"sunbox/house-battery/state": 1}).encode()
        for _ in range(30):  # until the bridge's subscription for them is up
            store.publish("sunbox/_store/site/field/stored", report, qos=1)
            try:
                seen = collector_inbox.get(timeout=1)
            except queue.Empty:
                continue
            if seen == ("sunbox/_store/stored", report):
                break
        else:
            raise AssertionError("the stored report did not reach the field broker")

        # another site's account: its own branch works, posing as the field site or as the
        # central Pi's own devices does not, and it cannot read the field site's reports
        other, other_inbox = client(central_port, "bridge-cabin", users["other"])
        clients.append(other)
        assert other_inbox.get(timeout=10) == ("connack", 0)
        other.subscribe("sunbox/_store/#", qos=1)
        time.sleep(0.5)
        for forged in ("sunbox/site/field/house-battery/state", "sunbox/house-battery/state", "sunbox/_store/stored"):
            other.publish(forged, b"{}", qos=1)
        store.publish("sunbox/_store/site/field/stored", report, qos=1)
        other.publish("sunbox/site/cabin/mppt/state", reading, qos=1)
        arrived = received(inbox, 2)
        assert ("sunbox/site/cabin/mppt/state", reading) in arrived, arrived
        assert not [m for m in arrived if m[1] == b"{}"], f"a site posed as another: {arrived}"
        assert received(other_inbox, 0.5) == [], "a site read another's reports"

        anonymous, anonymous_inbox = client(central_port, None, None)
        clients.append(anonymous)
        kind, code = anonymous_inbox.get(timeout=10)
        assert kind == "connack" and code != 0
        store.publish("sunbox/forged/state", b"{}", qos=1)  # the ACL lets the writer read only
        with pytest.raises(queue.Empty):
            while True:
                seen = inbox.get(timeout=2)
                assert seen[0] != "sunbox/forged/state"
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        for process in (field, central):
            process.terminate()
            process.wait(10)


def test_no_account_can_take_over_the_writers_session(tmp_path: Path) -> None:
    """Issue 16, finding 4: a clean start with the writer's client id must not drop its queue.

    The writer (``sunbox-store``, persistent session, QoS 1) goes away; readings queue for
    it; another account connects with client id ``sunbox-store`` and a clean start. The
    role's ``use_username_as_clientid`` makes that client ``sunbox-web`` instead, so the
    writer gets every queued reading back when it returns.
    """
    port = free_port()
    render(tmp_path / "central", {
        "mosquitto_port": port,
        "mosquitto_users": [
            {"name": "sunbox-collector", "password": "collector pass", "acl": ["readwrite sunbox/#"]},
            {"name": "sunbox-store", "password": "store pass", "acl": ["read sunbox/#"]},
            {"name": "sunbox-web", "password": "web pass", "acl": ["read sunbox/+/state"]},
        ],
    })  # fmt: skip
    broker = start(tmp_path / "central")
    clients: list[mqtt.Client] = []

    def connect(username: str, password: str, client_id: str, clean: bool) -> tuple[mqtt.Client, queue.Queue[Any]]:
        inbox: queue.Queue[Any] = queue.Queue()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
        c.username_pw_set(username, password)
        c.on_connect = lambda cl, ud, flags, rc, props: inbox.put(("connack", rc.value, flags.session_present))
        c.on_message = lambda cl, ud, msg: inbox.put((msg.topic, msg.payload))
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        clients.append(c)
        assert inbox.get(timeout=10)[:2] == ("connack", 0)
        return c, inbox

    try:
        wait_port(port)
        writer, _ = connect("sunbox-store", "store pass", "sunbox-store", clean=False)
        writer.subscribe("sunbox/#", qos=1)
        subprocess.run(["sleep", "0.5"], check=True)
        writer.disconnect()
        writer.loop_stop()
        collector, _ = connect("sunbox-collector", "collector pass", "sunbox-collector", clean=True)
        for n in range(5):
            collector.publish("sunbox/battery/state", json.dumps({"n": n}).encode(), qos=1).wait_for_publish(5)
        intruder, _ = connect("sunbox-web", "web pass", "sunbox-store", clean=True)
        subprocess.run(["sleep", "0.5"], check=True)
        intruder.disconnect()
        _, inbox = connect("sunbox-store", "store pass", "sunbox-store", clean=False)
        got = []
        while len(got) < 5:
            try:
                got.append(json.loads(inbox.get(timeout=5)[1])["n"])
            except queue.Empty:
                break
        assert got == [0, 1, 2, 3, 4], f"the writer got {got} of its 5 queued readings back"
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        broker.terminate()
        broker.wait(10)
