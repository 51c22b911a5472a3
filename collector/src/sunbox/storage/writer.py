"""``sunbox store``: MQTT readings into the InfluxDB raw bucket, losing nothing.

Delivery contract:

* The writer holds a persistent MQTT 5 session (clean start off, session expiry from
  the config) subscribed at QoS 1 to ``<prefix>/+/state`` and ``<prefix>/+/health`` (and
  the same under every bridged field site, ``<prefix>/site/+/+/...``, see
  :mod:`sunbox.topics`), and
  acknowledges a message (paho's ``manual_ack``) only after InfluxDB accepted its point
  or the message was dead-lettered. While InfluxDB or the writer is down the broker keeps
  the backlog; it is delivered in order when both are back.
* The alarm engine's events (``<prefix>/_alarms/events``, :mod:`sunbox.alarms.service`)
  are stored the same way, in ``influx.events_bucket`` (:class:`~.points.AlarmPoint`).
* Points carry the reading's own ``time_ms``. Writing the same reading twice (after a
  redelivery) writes the same point, which InfluxDB stores once.
* Messages are written in batches (``batch_size`` points or ``batch_delay_s``).
  A failing write is retried with exponential backoff, never acknowledged meanwhile.
  When InfluxDB refuses part of a batch (HTTP 400/422, e.g. a field type conflict),
  the batch is written point by point to find the refused ones, which are dead-lettered.
* A payload that fails validation (:func:`sunbox.storage.points.parse_message`) is
  published to the dead-letter topic as JSON ``{"topic", "reason", "payload",
  "payload_encoding", "time_ms"}`` and counted; the writer keeps going.
* An acknowledgement is sent only on the connection the message arrived on: after a
  reconnect the broker redelivers what was not acknowledged, and acknowledging an old
  packet id on a new connection could acknowledge a different message.
* After each batch is written (or dead-lettered) the writer publishes, at QoS 1, a
  report ``{"<topic>": <largest time_ms>, ...}`` on ``<prefix>/_store/stored`` (a field
  site's on ``<prefix>/_store/site/<site>/stored``, with its collector's own topics): every
  reading of that topic up to that time is now in InfluxDB (or dead-lettered). A
  collector with ``hold_until_stored`` keeps each reading on its disk until then, so a
  broker that loses what it had acknowledged (killed, or the power cut between its
  autosaves) loses nothing (issue 16).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from urllib3.exceptions import HTTPError

from sunbox import topics
from sunbox.model import now_ms

from .points import AlarmPoint, PayloadError, RawPoint, parse_alarm_event, parse_message
from .store_config import StoreConfig

LOG = logging.getLogger(__name__)

#: HTTP statuses that mean "these points are refused", not "try again later"
REFUSED = frozenset({400, 422})

Point = RawPoint | AlarmPoint


@dataclass(slots=True)
class Incoming:
    """A received message, with the connection generation it arrived on."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int


@dataclass
class StoreStats:
    """Counters since start (logged every ``stats_interval_s``)."""

    received: int = 0
    written: int = 0
    dead_lettered: int = 0
    write_failures: int = 0
    batches: int = 0
    last_write_ms: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)


class Store:
    """The writer service. :meth:`start` and :meth:`stop` may be called from any thread."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.stats = StoreStats()
        self._cond = threading.Condition()
        self._pending: deque[Incoming] = deque()
        self._generation = 0
        self._connected = threading.Event()
        self._stopping = threading.Event()
        prefix = config.mqtt.topic_prefix
        self._topics = [(t, 1) for t in topics.subscriptions(prefix, ("state", "health"))]
        self._events_topic = topics.alarm_events_topic(prefix) if config.influx.events_bucket else None
        if self._events_topic:
            self._topics.append((self._events_topic, 1))
        self._influx = InfluxDBClient(
            url=config.influx.url,
            token=config.influx.resolved_token(),
            org=config.influx.org,
            timeout=int(config.influx.timeout_s * 1000),
        )
        self._write_api = self._influx.write_api(write_options=SYNCHRONOUS)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.mqtt.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(config.mqtt.username, config.mqtt.resolved_password())
        if config.mqtt.tls:
            client.tls_set(ca_certs=str(config.mqtt.ca_file) if config.mqtt.ca_file else None)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client
        self._worker = threading.Thread(target=self._work, name="store-writer", daemon=True)
        #: time.monotonic() when the worker last went round a loop (waiting included)
        self.last_beat = time.monotonic()

    def alive(self, max_age_s: float) -> bool:
        """The worker runs and went round a loop within ``max_age_s`` (for the watchdog).

        Every wait of the worker is bounded (1 s for messages, ``retry_max_s`` between
        write attempts, the InfluxDB timeout per write), so a longer silence is a hang.
        """
        return self._worker.is_alive() and time.monotonic() - self.last_beat < max_age_s

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.mqtt.session_expiry_s
        props.ReceiveMaximum = self.config.mqtt.receive_maximum
        self.client.connect_async(
            self.config.mqtt.host,
            self.config.mqtt.port,
            keepalive=self.config.mqtt.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._worker.start()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed (the broker acknowledged the subscription)."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the batch in hand (acknowledging what was written), then disconnect.

        Messages received but not written stay unacknowledged; the broker redelivers them
        to the next session.
        """
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self._influx.close()
        self._log_stats()

    # --- paho callbacks (network thread) ------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            LOG.error("MQTT broker refused the connection: %s", reason)
            return
        with self._cond:
            self._generation += 1
        LOG.info(
            "MQTT connected to %s:%d (session %s)",
            self.config.mqtt.host,
            self.config.mqtt.port,
            "resumed" if flags.session_present else "new",
        )
        client.subscribe(self._topics)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            LOG.error("MQTT broker refused the subscription: %s (check the ACL)", failed)
            return
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            LOG.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._pending.append(Incoming(message.mid, message.qos, message.topic, message.payload, self._generation))
            self.stats.received += 1
            if len(self._pending) == 1 or len(self._pending) >= self.config.batch_size:
                self._cond.notify()

    # --- the worker ---------------------------------------------------------------

    def _take_batch(self) -> list[Incoming]:
        size = self.config.batch_size
        with self._cond:
            while not self._pending and not self._stopping.is_set():
                self.last_beat = time.monotonic()
                self._cond.wait(1.0)
            if not self._pending:
                return []
            deadline = time.monotonic() + self.config.batch_delay_s
            while len(self._pending) < size and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            count = min(size, len(self._pending))
            return [self._pending.popleft() for _ in range(count)]

    def _work(self) -> None:
        next_stats = time.monotonic() + self.config.stats_interval_s
        while not self._stopping.is_set():
            self.last_beat = time.monotonic()
            batch = self._take_batch()
            if batch:
                try:
                    self.process(batch)
                except Exception:  # a bug must not stop the writer; the batch stays unacknowledged
                    LOG.exception("unexpected error while writing a batch; it will be redelivered")
                    time.sleep(self.config.retry_initial_s)
            if time.monotonic() >= next_stats:
                self._log_stats()
                next_stats = time.monotonic() + self.config.stats_interval_s

    def process(self, batch: list[Incoming]) -> bool:
        """Validate, write and acknowledge one batch. False if stopped before it was written."""
        now = now_ms()
        good: list[tuple[Incoming, Point]] = []
        bad: list[tuple[Incoming, str]] = []
        for item in batch:
            try:
                if item.topic == self._events_topic:
                    good.append((item, parse_alarm_event(item.payload, now)))
                else:
                    good.append((item, parse_message(item.topic, item.payload, now, self.config.mqtt.topic_prefix)))
            except PayloadError as exc:
                bad.append((item, str(exc)))
        refused = self._write_all(good)
        if refused is None:
            return False
        bad.extend(refused)
        for item, reason in bad:
            if not self._dead_letter(item, reason):
                return False
        self._ack(batch)
        if self.config.mqtt.report_stored:
            self._report_stored([(item, point.time_ms) for item, point in good] + [(i, None) for i, _ in bad])
        self.stats.batches += 1
        self.stats.written += len(good) - len(refused)
        return True

    def _write(self, bucket: str, records: list[dict[str, Any]]) -> None:
        self._write_api.write(
            bucket=bucket,
            org=self.config.influx.org,
            record=records,
            write_precision=WritePrecision.MS,
        )

    def _bucket(self, point: Point) -> str:
        if isinstance(point, AlarmPoint):
            return self.config.influx.events_bucket or ""  # only parsed when it is set
        return self.config.influx.bucket

    def _write_all(self, good: list[tuple[Incoming, Point]]) -> list[tuple[Incoming, str]] | None:
        """Write every point, bucket by bucket; returns the refused ones with reasons, or
        None if stopping."""
        groups: dict[str, list[tuple[Incoming, Point]]] = {}
        for item, point in good:
            groups.setdefault(self._bucket(point), []).append((item, point))
        refused: list[tuple[Incoming, str]] = []
        for bucket, group in groups.items():
            out = self._write_group(bucket, group)
            if out is None:
                return None
            refused += out
        return refused

    def _write_group(self, bucket: str, good: list[tuple[Incoming, Point]]) -> list[tuple[Incoming, str]] | None:
        records = [point.to_record() for _, point in good]
        delay = self.config.retry_initial_s
        while True:
            self.last_beat = time.monotonic()
            try:
                self._write(bucket, records)
                self.stats.last_write_ms = now_ms()
                return []
            except ApiException as exc:
                if exc.status in REFUSED:
                    return self._write_one_by_one(bucket, good)
                self._write_failed(f"HTTP {exc.status} {exc.reason}: {_body(exc)}")
            except (HTTPError, OSError) as exc:  # connection refused, timeouts: InfluxDB away
                self._write_failed(f"{type(exc).__name__}: {exc}")
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, self.config.retry_max_s)

    def _write_failed(self, reason: str) -> None:
        self.stats.write_failures += 1
        LOG.warning("InfluxDB write failed (%s); retrying, nothing is acknowledged meanwhile", reason)

    def _write_one_by_one(self, bucket: str, good: list[tuple[Incoming, Point]]) -> list[tuple[Incoming, str]] | None:
        refused: list[tuple[Incoming, str]] = []
        for item, point in good:
            delay = self.config.retry_initial_s
            while True:
                self.last_beat = time.monotonic()
                try:
                    self._write(bucket, [point.to_record()])
                    break
                except ApiException as exc:
                    if exc.status in REFUSED:
                        refused.append((item, f"InfluxDB refused the point: {_body(exc)}"))
                        break
                    self._write_failed(f"HTTP {exc.status} {exc.reason}: {_body(exc)}")
                except (HTTPError, OSError) as exc:
                    self._write_failed(f"{type(exc).__name__}: {exc}")
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.config.retry_max_s)
        return refused

    def _dead_letter(self, item: Incoming, reason: str) -> bool:
        try:
            text, encoding = item.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(item.payload).decode(), "base64"
        body = json.dumps(
            {"topic": item.topic, "reason": reason, "payload": text, "payload_encoding": encoding, "time_ms": now_ms()}
        )
        LOG.warning("dead-lettered a message from %s: %s", item.topic, reason)
        key = reason.split(":")[0][:60]
        self.stats.reasons[key] = self.stats.reasons.get(key, 0) + 1
        info = self.client.publish(self.config.mqtt.dead_letter_topic, body, qos=1)
        while not self._stopping.is_set():
            self.last_beat = time.monotonic()
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError):  # not connected now: paho sends it after reconnecting
                self._stopping.wait(self.config.retry_initial_s)
            if info.is_published():
                self.stats.dead_lettered += 1
                return True
        return False

    def _report_stored(self, handled: list[tuple[Incoming, int | None]]) -> None:
        """Publish the largest time_ms handled per topic (fire and forget: a lost report
        only makes the collector send those readings again, which writes nothing new)."""
        prefix = self.config.mqtt.topic_prefix
        by_site: dict[str | None, dict[str, int]] = {}
        for item, time_ms in handled:
            stamp = time_ms if time_ms is not None else _time_ms_of(item.payload)
            try:
                where = topics.parse(item.topic, prefix)
            except topics.TopicError:
                continue  # dead-lettered for its topic: no collector publishes there
            through = by_site.setdefault(where.site, {})
            local = where.local(prefix)  # as that site's collector knows it
            if stamp is not None and stamp > through.get(local, -1):
                through[local] = stamp
        for site, through in by_site.items():
            if through:
                payload = json.dumps(through, separators=(",", ":"))
                self.client.publish(topics.stored_topic(prefix, site), payload, qos=1)

    def _ack(self, batch: list[Incoming]) -> None:
        with self._cond:
            generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                self.client.ack(item.mid, item.qos)

    def _log_stats(self) -> None:
        s = self.stats
        with self._cond:
            pending = len(self._pending)
        LOG.info(
            "store: %d received, %d written, %d dead-lettered %s, %d write failures, %d waiting",
            s.received,
            s.written,
            s.dead_lettered,
            s.reasons or "",
            s.write_failures,
            pending,
        )


def _time_ms_of(payload: bytes) -> int | None:
    """A dead-lettered message's own time_ms, when it has an integer one."""
    try:
        value = json.loads(payload).get("time_ms")
    except (ValueError, AttributeError):  # not JSON, or not an object
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _body(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", ""))[:300]
    except ValueError:
        return str(exc.body)[:300]
