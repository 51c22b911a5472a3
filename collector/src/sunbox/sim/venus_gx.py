"""A Venus OS stand-in on a real broker: publishes N/ topics while keep-alives arrive.

Behaves like Venus OS 3.20 and later, as far as a client sees it. The topic
``N/<portal>/system/0/Serial`` is retained, so the portal id can be found. A keep-alive
without ``suppress-republish`` triggers a full republish. While keep-alives keep coming
(within ``timeout_s``), the values are published every ``interval_s``. Then publishing
stops. Values come from a small solar charger, a battery monitor, a VE.Bus inverter
and the system service.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class VenusStandIn:
    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        portal_id: str = "c0619ab1c2d3",
        interval_s: float = 0.2,
        timeout_s: float = 3.0,
    ) -> None:
        self.portal_id = portal_id
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.published = 0
        self.full_republishes = 0
        self.keepalives: list[bytes] = []
        self._last_keepalive = 0.0
        self._stop = threading.Event()
        self._tick = 0
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"venus-{portal_id}")
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(f"R/{portal_id}/keepalive", 0)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self._thread = threading.Thread(target=self._run, name="venus-standin", daemon=True)

    def values(self) -> dict[str, Any]:
        t = self._tick
        p = self.portal_id
        return {
            f"N/{p}/solarcharger/279/Dc/0/Voltage": 13.42 + (t % 5) * 0.01,
            f"N/{p}/solarcharger/279/Dc/0/Current": 7.3,
            f"N/{p}/solarcharger/279/Pv/V": 36.83,
            f"N/{p}/solarcharger/279/Yield/Power": 98.0,
            f"N/{p}/solarcharger/279/State": 3,
            f"N/{p}/solarcharger/279/ErrorCode": 0,
            f"N/{p}/solarcharger/279/History/Daily/0/Yield": 1.25,
            f"N/{p}/solarcharger/279/Yield/User": 812.4,
            f"N/{p}/battery/512/Dc/0/Voltage": 13.38,
            f"N/{p}/battery/512/Dc/0/Current": -4.2,
            f"N/{p}/battery/512/Soc": 87.5,
            f"N/{p}/battery/512/ConsumedAmphours": -12.5,
            f"N/{p}/battery/512/TimeToGo": None,
            f"N/{p}/vebus/276/State": 9,
            f"N/{p}/vebus/276/Ac/Out/P": 230.0,
            f"N/{p}/vebus/276/Ac/Out/L1/V": 230.1,
            f"N/{p}/system/0/Dc/Battery/Soc": 87.5,
        }

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.keepalives.append(message.payload)
        self._last_keepalive = time.monotonic()
        if b"suppress-republish" not in message.payload:
            self.full_republishes += 1
            self._publish_all()

    def _publish_all(self) -> None:
        for topic, value in self.values().items():
            self.client.publish(topic, json.dumps({"value": value}), qos=0)
            self.published += 1

    def alive(self) -> bool:
        return time.monotonic() - self._last_keepalive < self.timeout_s

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick += 1
            if self.alive():
                self._publish_all()

    def start(self) -> None:
        serial = json.dumps({"value": self.portal_id})
        self.client.publish(f"N/{self.portal_id}/system/0/Serial", serial, qos=1, retain=True)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.publish(f"N/{self.portal_id}/system/0/Serial", b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()
