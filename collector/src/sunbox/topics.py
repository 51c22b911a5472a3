"""MQTT topic names: one Pi's own, and those of field sites bridged to a central Pi.

Pure, no I/O. A collector publishes under its broker's prefix (``docs/data-model.md``)::

    <prefix>/<device_id>/state | health | availability

A field Pi's bridge (roles/mosquitto, ``mosquitto_bridge_site``) carries those to the
central broker under its site's own branch, where the central ACL lets that site's
account publish and nowhere else (so one site cannot pose as another, issue 16)::

    <prefix>/site/<site>/<device_id>/state | health | availability

On the central Pi a site's device is known as ``<site>.<device_id>`` (the InfluxDB
``device`` tag, the display's device id): a dot is not allowed in a device id or a site
name, so the two parts never run together and two sites may both have a ``house-battery``.

The writer's reports of what it stored go back the same way: ``<prefix>/_store/stored``
for the central Pi's own collector, ``<prefix>/_store/site/<site>/stored`` for a site
(its bridge brings that in as the field Pi's ``<prefix>/_store/stored``). A report is
``{"<local topic>": <largest time_ms stored>, ...}`` with the topics as the field Pi's
collector published them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
#: A device id or a site name: lower-case letters, digits, ``_`` and ``-``, at most 63.
NAME_PATTERN = re.compile(rf"^{_NAME}$")
#: A device as the central Pi knows it: ``<device_id>`` or ``<site>.<device_id>``.
QUALIFIED_DEVICE_PATTERN = re.compile(rf"^(?:{_NAME}\.)?{_NAME}$")
#: The topic level under the prefix that starts a site's branch.
SITE_LEVEL = "site"
#: The branch under the prefix where the alarm engine publishes (``sunbox.alarms``) and the
#: display reads and acknowledges: no device id starts with ``_``.
ALARMS_LEVEL = "_alarms"
#: The leaf under :data:`ALARMS_LEVEL` where the engine publishes every raised,
#: acknowledged and cleared event (QoS 1, not retained), which the writer stores.
ALARM_EVENTS_LEAF = "events"
#: The leaves a collector publishes per device.
LEAVES = ("state", "health", "availability")


class TopicError(ValueError):
    """A topic that is none of the shapes above."""


@dataclass(frozen=True)
class Topic:
    """One parsed device topic.

    Attributes:
        site: the field site's name, or None for the broker's own collector.
        device_id: the device id as its collector publishes it.
        leaf: ``state``, ``health`` or ``availability``.
    """

    site: str | None
    device_id: str
    leaf: str

    @property
    def device(self) -> str:
        """The device as the central Pi knows it: ``device_id`` or ``site.device_id``."""
        return self.device_id if self.site is None else f"{self.site}.{self.device_id}"

    def local(self, prefix: str) -> str:
        """The topic as the device's own collector published it."""
        return f"{prefix}/{self.device_id}/{self.leaf}"


def parse(topic: str, prefix: str) -> Topic:
    """Split a device topic (either shape in the module docstring).

    Raises:
        TopicError: another prefix, another shape, an unknown leaf or a bad name.
    """
    parts = topic.split("/")
    if parts[0] != prefix:
        raise TopicError(f"unexpected topic {topic!r}")
    if len(parts) == 3:
        site, device_id, leaf = None, parts[1], parts[2]
    elif len(parts) == 5 and parts[1] == SITE_LEVEL:
        site, device_id, leaf = parts[2], parts[3], parts[4]
        if not NAME_PATTERN.match(site):
            raise TopicError(f"unexpected topic {topic!r}")
    else:
        raise TopicError(f"unexpected topic {topic!r}")
    if leaf not in LEAVES or not NAME_PATTERN.match(device_id):
        raise TopicError(f"unexpected topic {topic!r}")
    return Topic(site, device_id, leaf)


def subscriptions(prefix: str, leaves: tuple[str, ...]) -> list[str]:
    """The topic filters for these leaves of every device, the Pi's own and every site's."""
    return [f"{prefix}/+/{leaf}" for leaf in leaves] + [f"{prefix}/{SITE_LEVEL}/+/+/{leaf}" for leaf in leaves]


def alarm_events_topic(prefix: str) -> str:
    """Where the alarm engine publishes its events for the writer (``docs/alarms.md``)."""
    return f"{prefix}/{ALARMS_LEVEL}/{ALARM_EVENTS_LEAF}"


def stored_topic(prefix: str, site: str | None) -> str:
    """Where the writer reports what it stored for the Pi's own collector or for a site."""
    return f"{prefix}/_store/stored" if site is None else f"{prefix}/_store/{SITE_LEVEL}/{site}/stored"
