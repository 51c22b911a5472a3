"""The mosquitto role's password filter against the real Mosquitto.

The filter salts each hash at random and keeps a hash that still matches (so the play can
report changed=0); Mosquitto itself must accept them: the right password logs in, a wrong
one does not.
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


def test_salt_is_random_and_a_matching_hash_is_kept() -> None:
    passwd = load_filter().mosquitto_passwd
    line = passwd("s3cret", "sunbox-store")
    assert line.startswith("$7$101$") and len(line.split("$")[3]) == 16  # 12 bytes, base64
    assert line != passwd("s3cret", "sunbox-store"), "the salt must not be derived from anything"
    current = f"sunbox-collector:{passwd('other', 'sunbox-collector')}\nsunbox-store:{line}\n"
    assert passwd("s3cret", "sunbox-store", current) == line, "an unchanged password keeps its line"
    changed = passwd("n3w s3cret", "sunbox-store", current)
    assert changed != line and passwd("n3w s3cret", "sunbox-store", f"sunbox-store:{changed}") == changed
    assert passwd("s3cret", "sunbox-web", current) not in current, "another user's line is not reused"
    for broken in ("sunbox-store:$7$101$@@$@@", "sunbox-store:$6$abc", "sunbox-store:"):
        assert passwd("s3cret", "sunbox-store", broken).startswith("$7$101$")


def test_mosquitto_accepts_the_filters_hashes(tmp_path: Path) -> None:
    passwd = load_filter().mosquitto_passwd
    broker = Mosquitto(name="mosquitto", port=free_port(), workdir=tmp_path)
    (tmp_path / "passwd").write_text(
        f"sunbox-collector:{passwd('collector pass', 'sunbox-collector')}\n"
        f"sunbox-store:{passwd('store-pass', 'sunbox-store')}\n"
    )
    broker.start()
    try:
        assert connects(broker.port, "sunbox-collector", "collector pass")
        assert connects(broker.port, "sunbox-store", "store-pass")
        assert not connects(broker.port, "sunbox-store", "collector pass")
        assert not connects(broker.port, "nobody", "store-pass")
    finally:
        broker.stop()
