"""The last backup run on MQTT, announced to Home Assistant (issue 28).

After every run, ``sunbox backup run`` publishes, retained, on
``<topic_prefix>/backup/state`` (``sunbox/backup/state``)::

    {"time": "2026-12-06T03:31:07+00:00",   # when this run ended, UTC
     "ok": true,                             # this run made and verified a generation
     "last_success": "2026-12-06T03:31:07+00:00",  # null until one has
     "size_bytes": 104857,                   # of the last good generation
     "duration_s": 2.5,                      # of this run
     "error": null}                          # why this run failed

and Home Assistant discovery (retained, ``<discovery_prefix>/<component>/sunbox_backup/
<field>/config``) for one "Sunbox backup" device with three entities: the last good
backup (a timestamp, which Home Assistant shows as its age), its size (bytes), and a
problem flag for a failed run. The payloads follow Home Assistant's "MQTT Discovery"
documentation, as :mod:`sunbox.mqtt.discovery` does for the devices.

A broker that cannot be reached is logged and never fails the backup: the state file
(read by the display) is the record.
"""

from __future__ import annotations

import json
import logging
import ssl
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client
import paho.mqtt.publish

from .config import BackupMqttConfig

LOG = logging.getLogger(__name__)


def _iso(ms: Any) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if isinstance(ms, int) else None


def state_payload(state: dict[str, Any]) -> dict[str, Any]:
    """The MQTT state of one run from the state file's JSON (what
    :func:`sunbox.backup.generations.record` writes)."""
    last = state.get("last_success") if isinstance(state.get("last_success"), dict) else {}
    assert isinstance(last, dict)
    return {
        "time": _iso(state.get("last_run_ms")),
        "ok": bool(state.get("ok")),
        "last_success": _iso(state.get("last_success_ms")),
        "size_bytes": last.get("size_bytes"),
        "duration_s": state.get("duration_s"),
        "error": state.get("error"),
    }


def discovery_messages(host: str, prefix: str, discovery_prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, payload)`` of the three entities of the backup device of ``host``."""
    device = {"identifiers": ["sunbox_backup"], "name": "Sunbox backup", "manufacturer": "Sunbox", "model": host}
    state_topic = f"{prefix}/backup/state"
    entities: list[tuple[str, str, dict[str, Any]]] = [
        (
            "sensor",
            "last_success",
            {"name": "last backup", "device_class": "timestamp", "value_template": "{{ value_json.last_success }}"},
        ),
        (
            "sensor",
            "size_bytes",
            {
                "name": "backup size",
                "device_class": "data_size",
                "unit_of_measurement": "B",
                "state_class": "measurement",
                "value_template": "{{ value_json.size_bytes }}",
                "entity_category": "diagnostic",
            },
        ),
        (
            "binary_sensor",
            "problem",
            {
                "name": "backup failed",
                "device_class": "problem",
                "value_template": "{{ 'OFF' if value_json.ok else 'ON' }}",
            },
        ),
    ]
    out = []
    for component, field, extra in entities:
        payload = {
            "unique_id": f"sunbox_backup_{field}",
            "object_id": f"sunbox_backup_{field}",
            "default_entity_id": f"{component}.sunbox_backup_{field}",
            "state_topic": state_topic,
            "device": device,
            **extra,
        }
        out.append((f"{discovery_prefix}/{component}/sunbox_backup/{field}/config", payload))
    return out


def publish(config: BackupMqttConfig, host: str, state: dict[str, Any]) -> bool:
    """Publish the run's state and the discovery, retained, QoS 1. True when the broker
    took them; False (logged) when it could not be reached or refused the login."""
    messages: list[Any] = []
    if config.discovery:
        for topic, payload in discovery_messages(host, config.topic_prefix, config.discovery_prefix):
            messages.append({"topic": topic, "payload": json.dumps(payload), "qos": 1, "retain": True})
    messages.append(
        {
            "topic": f"{config.topic_prefix}/backup/state",
            "payload": json.dumps(state_payload(state)),
            "qos": 1,
            "retain": True,
        }
    )
    tls = None
    if config.tls:
        tls = {"ca_certs": str(config.ca_file) if config.ca_file else None, "tls_version": ssl.PROTOCOL_TLS_CLIENT}
    try:
        paho.mqtt.publish.multiple(
            messages,
            hostname=config.host,
            port=config.port,
            client_id=config.client_id,
            keepalive=config.keepalive,
            auth={"username": config.username, "password": config.resolved_password()},
            tls=tls,
            protocol=paho.mqtt.client.MQTTv311,
        )
    except (OSError, ValueError, paho.mqtt.MQTTException) as exc:
        LOG.warning("backup state not published to MQTT %s:%d: %s", config.host, config.port, exc)
        return False
    return True
