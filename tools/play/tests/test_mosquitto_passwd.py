"""The mosquitto role's password filter against the real Mosquitto.

The filter writes password-file lines reproducibly (so the play can report changed=0);
Mosquitto itself must accept them: the right password logs in, a wrong one does not.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from types import ModuleType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox_stack.servers import Mosquitto

FILTER = Path(__file__).resolve().parents[3] / "roles/mosquitto/filter_plugins/mosquitto_passwd.py"


def load_filter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mosquitto_passwd", FILTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connects(port: int, username: str, password: str) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
        for _ in range(50):
            client.loop(0.1)
            if client.is_connected():
                return True
        return False
    finally:
        client.disconnect()


def test_hash_is_stable_and_salted_per_host_and_user() -> None:
    passwd = load_filter().mosquitto_passwd
    line = passwd("s3cret", "sunbox-store", "machine-a")
    assert line == passwd("s3cret", "sunbox-store", "machine-a")
    assert line.startswith("$7$101$")
    assert line != passwd("s3cret", "sunbox-store", "machine-b")
    assert line.split("$")[3] != passwd("s3cret", "sunbox-collector", "machine-a").split("$")[3]


def test_mosquitto_accepts_the_filters_hashes(tmp_path: Path) -> None:
    passwd = load_filter().mosquitto_passwd
    broker = Mosquitto(name="mosquitto", port=free_port(), workdir=tmp_path)
    (tmp_path / "passwd").write_text(
        f"sunbox-collector:{passwd('collector pass', 'sunbox-collector', 'host-1')}\n"
        f"sunbox-store:{passwd('store-pass', 'sunbox-store', 'host-1')}\n"
    )
    broker.start()
    try:
        assert connects(broker.port, "sunbox-collector", "collector pass")
        assert connects(broker.port, "sunbox-store", "store-pass")
        assert not connects(broker.port, "sunbox-store", "collector pass")
        assert not connects(broker.port, "nobody", "store-pass")
    finally:
        broker.stop()
