"""Publishes readings to MQTT (paho-mqtt), spilling to a disk queue while the broker is away.

Topics (``prefix`` = ``sunbox`` by default), all QoS 1:

* ``<prefix>/<device_id>/state``: reading JSON (see ``docs/data-model.md``)
* ``<prefix>/<device_id>/health``: link health JSON, same envelope
* ``<prefix>/<device_id>/availability``: ``online`` / ``offline``, retained
* ``<prefix>/collector/availability``: ``online``, retained; last will ``offline``

Ordering and loss: a message is published directly only while the broker is connected
and the disk queue is empty; otherwise it is appended to the queue, which a drain
thread replays in order (original payloads, so original timestamps) once the broker is
back, deleting rows only after the broker acknowledged them. Messages still in flight
at shutdown are written to the queue.

Held until stored (``mqtt.hold_until_stored``, the appliance's setting): the broker's
acknowledgement is not enough, because Mosquitto keeps messages in memory between its
autosaves, so a pulled plug or a killed broker loses what it had acknowledged (issue 16).
Every reading and health record then goes into the queue first (synced to disk at once,
or after ``queue.sync_after_s`` if the writer has not reported it stored by then, see
``sunbox.mqtt.queue``) and stays there until the writer reports it stored in InfluxDB: ``sunbox store`` publishes
``{"<topic>": <time_ms>, ...}`` on ``<prefix>/_store/stored`` after each write, meaning
every reading of that topic up to that time is in InfluxDB. Rows sent but not reported
stored are sent again after every reconnect, and when no report came for
``ack_timeout_s`` (doubling up to an hour while the writer stays away). A reading sent
twice is one point in InfluxDB (same series and time), so a resend never duplicates.

Home Assistant discovery (``mqtt.discovery``, :mod:`sunbox.mqtt.discovery`): each entity
is announced the first time its device sends a value for it, again on every connect
and when Home Assistant publishes ``online`` on ``<discovery_prefix>/status``. The reading
that brought new entities, and every message after it, waits :data:`SETTLE_S` in the
queue: Home Assistant subscribes to a new entity's state topic only after its config
arrived, and state topics are not retained, so its first value would be lost. (Sending
the state twice instead would let a copy overtake older readings still queued, and the
writer's "stored through" report would then acknowledge readings it never stored.)
What was announced is kept retained on ``<prefix>/_discovery/announced``; a device in it
that the configuration no longer has is removed (empty retained configs).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sunbox.config import MqttConfig
from sunbox.model import Reading, now_ms

from .discovery import config_topic, discovery_messages, entity_keys, removal_messages
from .queue import DiskQueue, Message

LOG = logging.getLogger(__name__)

DRAIN_BATCH = 200
#: After announcing new entities, messages wait this many seconds before they are sent:
#: Home Assistant subscribes to a new entity's state topic some milliseconds after its
#: config arrives, and state topics are not retained.
SETTLE_S = 2.0


class MqttPublisher:
    """Thread-safe publisher; :meth:`publish_reading` may be called from the event loop."""

    def __init__(self, config: MqttConfig, queue: DiskQueue, configured: Callable[[str], bool] | None = None) -> None:
        """``configured(device_id)``: whether a device id belongs to the configuration (a
        device announced to Home Assistant by an earlier run that is no longer configured
        is removed from it); None: every device is kept."""
        self.config = config
        self._configured = configured
        self.queue = queue
        self.prefix = config.topic_prefix
        self.published = 0
        self.queued = 0
        # _lock orders publishing against the queue; paho is called while holding it.
        # No paho callback takes _lock: paho runs callbacks while holding its own locks,
        # and taking _lock there would invert the lock order and deadlock against a
        # concurrent publish(). Acknowledgements are read from paho's MQTTMessageInfo.
        self._lock = threading.RLock()
        self._inflight: deque[tuple[mqtt.MQTTMessageInfo, Message]] = deque()
        self._connected = False
        #: the broker as last seen: "connecting", "connected", "refused: <reason>",
        #: "unreachable" or "disconnected: <reason>" (logged on every change)
        self.broker_state = "connecting"
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Home Assistant discovery: the entity keys announced per device, its model,
        #: until when (monotonic) messages wait for announcements to settle, and the
        #: config topics announced per device (kept retained in the broker on
        #: ``<prefix>/_discovery/announced``, merged with an earlier run's)
        self._entities: dict[str, set[str]] = {}
        self._models: dict[str, str | None] = {}
        self._settle_until = 0.0
        self._index: dict[str, list[str]] = {}
        self.index_topic = f"{self.prefix}/_discovery/announced"
        self.status_topic = f"{config.discovery_prefix}/status"
        self._ha_online = False
        self._index_payload: bytes | None = None
        self._availability: dict[str, str] = {}
        self.hold = config.hold_until_stored
        self.stored_topic = f"{self.prefix}/_store/stored"
        #: readings the writer reported stored (rows removed), and bad reports skipped
        self.stored = 0
        self.bad_reports = 0
        self.resends = 0
        self._ack_timeout_s = config.ack_timeout_s
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
        )
        client.username_pw_set(config.username, config.resolved_password())
        if config.tls:
            client.tls_set(ca_certs=str(config.ca_file) if config.ca_file else None)
        client.will_set(f"{self.prefix}/collector/availability", "offline", qos=1, retain=True)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self._drainer = threading.Thread(target=self._drain_loop, name="mqtt-drain", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected

    def healthy(self) -> bool:
        """The drain thread runs (it prunes and replays the disk queue); for the watchdog."""
        return self._drainer.is_alive() and not self._stop.is_set()

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()
        self._drainer.start()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the broker acknowledged everything and the disk
        queue is empty; True when it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = any(not info.is_published() for info, _ in self._inflight)
            if not pending and len(self.queue) == 0 and self._connected:  # held: stored, too
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Announce offline, flush what the broker has not acknowledged to disk, disconnect."""
        self._stop.set()
        self._wake.set()
        if self._drainer.is_alive():
            self._drainer.join(10)
        with self._lock:
            if self._connected:
                info = self.client.publish(f"{self.prefix}/collector/availability", "offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(2)
                except (RuntimeError, ValueError):
                    pass
            pending = [message for info, message in self._inflight if not info.is_published()]
            self._inflight.clear()
        if pending:
            self.queue.put_many(pending)
            self.published -= len(pending)  # sent but never acknowledged: back in the queue
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (network thread) ----------------------------------------

    def _set_state(self, state: str, level: int, detail: str = "") -> None:
        """Log the broker's state when it changes (once per change, not per retry)."""
        if state == self.broker_state:
            return
        self.broker_state = state
        where = f"{self.config.host}:{self.config.port}"
        LOG.log(level, "MQTT broker %s: %s%s", where, state, detail)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._set_state(
                f"refused: {reason}",
                logging.ERROR,
                "; check mqtt.username and the password (retrying every 30 s at most; readings wait in the disk queue)",
            )
            return
        self._set_state("connected", logging.INFO)
        client.publish(f"{self.prefix}/collector/availability", "online", qos=1, retain=True)
        with self._lock:
            self._connected = True
            availability = dict(self._availability)
        if self.config.discovery:
            # the retained index of what was announced before (removals, on its arrival),
            # and Home Assistant's own birth message (announce again, on "online")
            client.subscribe([(self.index_topic, 1), (self.status_topic, 1)])
            self._announce_all()
        for device_id, state in availability.items():
            client.publish(f"{self.prefix}/{device_id}/availability", state, qos=1, retain=True)
        if self.hold:
            # reports sent while away are missed (clean session): whatever was sent and
            # not reported stored goes again, after the subscription on this connection
            client.subscribe(self.stored_topic, qos=1)
            self.queue.resend_all()
        self._wake.set()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self._set_state(
            "unreachable",
            logging.WARNING,
            "; check mqtt.host and mqtt.port (retrying every 30 s at most; readings wait in the disk queue)",
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected = False  # a plain store; see the note on _lock
        if not self._stop.is_set() and not self.broker_state.startswith("refused"):
            self._set_state(f"disconnected: {reason}", logging.WARNING, "; readings go to the disk queue")

    # --- publishing -------------------------------------------------------------

    def _announce(self, device_id: str, keys: set[str], model: str | None) -> None:
        for topic, payload in discovery_messages(device_id, model, keys, self.prefix, self.config.discovery_prefix):
            self.client.publish(topic, payload, qos=1, retain=True)

    def _announce_all(self) -> None:
        """Announce every entity known (on connect, and when Home Assistant comes online;
        then Home Assistant shows each value from the device's next reading)."""
        with self._lock:
            entities = {device_id: set(keys) for device_id, keys in self._entities.items()}
            models = dict(self._models)
        for device_id, keys in entities.items():
            self._announce(device_id, keys, models.get(device_id))

    def _discover(self, reading: Reading) -> None:
        """Announce the entities this reading gives a value for that are not announced
        yet (all of them again when the model changes); what is published next waits
        :data:`SETTLE_S`."""
        keys = entity_keys(reading.values)
        model = reading.values.get("model") if reading.kind != "health" else None
        with self._lock:
            known = self._entities.setdefault(reading.device_id, set())
            new = keys - known
            if reading.kind != "health" and model is not None and model != self._models.get(reading.device_id):
                self._models[reading.device_id] = model
                new = keys | known
            if not new:
                return
            known.update(keys)
            model = self._models.get(reading.device_id)
            connected = self._connected
            index = self._index.setdefault(reading.device_id, [])
            added = [t for t in (config_topic(self.config.discovery_prefix, reading.device_id, k) for k in keys) if t]
            grew = not set(added) <= set(index)
            index.extend(t for t in added if t not in index)
            if connected:
                self._settle_until = time.monotonic() + SETTLE_S
        if connected:
            self._announce(reading.device_id, new, model)
            if grew:
                self._publish_index()

    def _publish_index(self) -> None:
        with self._lock:
            index = json.dumps(self._index, separators=(",", ":"), sort_keys=True).encode()
        self.client.publish(self.index_topic, index, qos=1, retain=True)

    def _on_index(self, payload: bytes) -> None:
        """An earlier run's index of announced config topics (retained, once per connect):
        the devices no longer configured are removed from Home Assistant; the rest is
        kept, so an entity announced before and not yet sent in this run stays."""
        try:
            earlier = json.loads(payload) if payload else {}
            if not isinstance(earlier, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(t, str) for t in v)
                for k, v in earlier.items()
            ):
                raise ValueError("not an object of device id: [config topics]")
        except ValueError as exc:
            LOG.warning("skipped the discovery index on %s: %s", self.index_topic, exc)
            return
        gone = {d: t for d, t in earlier.items() if self._configured is not None and not self._configured(d)}
        with self._lock:
            for device_id, topics in earlier.items():
                if device_id in gone:
                    continue
                index = self._index.setdefault(device_id, [])
                index.extend(t for t in topics if t not in index)
            changed = self._index != earlier
        for device_id, topics in gone.items():
            LOG.info("removing %s from Home Assistant: no longer configured (%d entities)", device_id, len(topics))
            for topic, empty in removal_messages(topics):
                self.client.publish(topic, empty, qos=1, retain=True)
        if changed:
            self._publish_index()

    def _discovery_work(self) -> None:
        """(drain thread) What the network thread handed over, and the copies due."""
        payload, self._index_payload = self._index_payload, None
        if payload is not None:
            self._on_index(payload)
        if self._ha_online:
            self._ha_online = False
            LOG.info("Home Assistant is online: announcing every entity again")
            self._announce_all()

    def _settling_for(self) -> float:
        """Seconds messages still wait for the newest announcements (0: none)."""
        return max(0.0, self._settle_until - time.monotonic())

    def set_availability(self, device_id: str, online: bool) -> None:
        state = "online" if online else "offline"
        with self._lock:
            if self._availability.get(device_id) == state:
                return
            self._availability[device_id] = state
            connected = self._connected
        if connected:
            self.client.publish(f"{self.prefix}/{device_id}/availability", state, qos=1, retain=True)

    def publish(self, message: Message) -> None:
        if message.held:  # to disk first; the drain thread sends it
            self.queue.put(message)
            self.queued += 1
            self._wake.set()
            return
        with self._lock:
            if self._connected and len(self.queue) == 0 and not self._settling_for():
                info = self.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    if message.qos:
                        self._inflight.append((info, message))
                        while self._inflight and self._inflight[0][0].is_published():
                            self._inflight.popleft()
                        if len(self._inflight) > 10_000:  # an old message still waits: prune behind it
                            self._inflight = deque(e for e in self._inflight if not e[0].is_published())
                    self.published += 1
                    return
            self.queue.put(message)
            self.queued += 1

    def publish_reading(self, reading: Reading) -> None:
        """Publish a reading or health record to its topic (announcing to Home Assistant
        what it sends for the first time)."""
        leaf = "health" if reading.kind == "health" else "state"
        if reading.kind == "health":
            self.set_availability(reading.device_id, bool(reading.values.get("connected")))
        elif reading.device_id not in self._availability:
            # a device with no health of its own (a Venus OS GX's batteries and chargers):
            # its reading says it is there
            self.set_availability(reading.device_id, True)
        if self.config.discovery:
            self._discover(reading)
        topic = f"{self.prefix}/{reading.device_id}/{leaf}"
        self.publish(Message(topic, reading.to_json(), 1, False, reading.time_ms, held=self.hold))

    # --- drain (own thread) -----------------------------------------------------

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            # every second while readings wait in the fresh queue: what waited there
            # longer than sync_after_s is synced (the pulled-plug bound, docs/storage.md)
            wait = 1.0 if self.queue.sync_after_ms else 5.0
            settling = self._settling_for()
            self._wake.wait(min(wait, settling) if settling else wait)
            self._wake.clear()
            self._discovery_work()
            now = now_ms()
            self.queue.spill(now)
            self.queue.prune(now)
            if self.hold:
                self._resend_if_unreported()
            while self._connected and not self._stop.is_set() and len(self.queue) and not self._settling_for():
                if not self._drain_batch():
                    break

    def _resend_if_unreported(self) -> None:
        oldest = self.queue.oldest_unacknowledged_ms()
        if oldest is None or now_ms() - oldest < self._ack_timeout_s * 1000:
            return
        count = self.queue.resend_all()
        self.resends += 1
        LOG.warning(
            "the writer reported nothing stored for %.0f s: sending %d readings again (next try after %.0f s)",
            self._ack_timeout_s,
            count,
            min(self._ack_timeout_s * 2, 3600.0),
        )
        self._ack_timeout_s = min(self._ack_timeout_s * 2, 3600.0)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        """The writer's report (it touches only the queue, never ``_lock``: see the note
        on ``_lock``), Home Assistant's birth message, or the discovery index: those two
        are handed to the drain thread."""
        if message.topic == self.stored_topic:
            self._on_stored(message)
        elif message.topic == self.status_topic and message.payload == b"online":
            self._ha_online = True  # plain stores: the drain thread does the work
            self._wake.set()
        elif message.topic == self.index_topic:
            self._index_payload = message.payload
            self._wake.set()

    def _on_stored(self, message: mqtt.MQTTMessage) -> None:
        """The writer's report (network thread; touches only the queue, never ``_lock``)."""
        try:
            report = json.loads(message.payload)
            if not isinstance(report, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in report.items()
            ):
                raise ValueError("not an object of topic: time_ms")
        except ValueError as exc:  # includes JSON errors
            self.bad_reports += 1
            if self.bad_reports == 1 or self.bad_reports % 1000 == 0:
                LOG.warning("skipped a bad stored report on %s (%d so far): %s", message.topic, self.bad_reports, exc)
            return
        ours = {topic: through for topic, through in report.items() if topic.startswith(self.prefix + "/")}
        self.stored += self.queue.acknowledge(ours)
        self._ack_timeout_s = self.config.ack_timeout_s

    def _drain_batch(self) -> bool:
        batch = self.queue.peek(DRAIN_BATCH)
        if not batch:
            return True
        infos = []
        for _row_id, message in batch:
            info = self.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            infos.append(info)
        # at most 15 s for the batch's acknowledgements, and not a moment once stopping
        # or disconnected: stop() waits for this thread
        deadline = time.monotonic() + 15
        try:
            for info in infos:
                while not info.is_published():
                    if self._stop.is_set() or not self._connected or time.monotonic() > deadline:
                        return False
                    info.wait_for_publish(0.5)
        except (RuntimeError, ValueError):
            return False
        self.queue.settle(batch[-1][0], now_ms())
        self.published += len(batch)
        LOG.info("replayed %d queued messages, %d left", len(batch), len(self.queue))
        return True
