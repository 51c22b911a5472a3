"""Topic names of a Pi's own devices and of bridged field sites (sunbox.topics)."""

from __future__ import annotations

import json

import pytest

from sunbox import topics
from sunbox.storage.points import PayloadError, parse_reading

NOW = 1_750_000_000_000


def test_own_and_site_topics_name_their_device() -> None:
    own = topics.parse("sunbox/house-battery/state", "sunbox")
    assert (own.site, own.device_id, own.leaf, own.device) == (None, "house-battery", "state", "house-battery")
    far = topics.parse("sunbox/site/cabin-2/house-battery/health", "sunbox")
    assert (far.site, far.device) == ("cabin-2", "cabin-2.house-battery")
    assert far.local("sunbox") == "sunbox/house-battery/health"
    assert topics.QUALIFIED_DEVICE_PATTERN.match(far.device) and topics.QUALIFIED_DEVICE_PATTERN.match(own.device)


@pytest.mark.parametrize(
    "topic",
    [
        "other/house-battery/state",
        "sunbox/house-battery/voltage",
        "sunbox/House/state",
        "sunbox/site/cabin-2/state",
        "sunbox/site/Cabin/house-battery/state",
        "sunbox/place/cabin-2/house-battery/state",
        "sunbox/site/a.b/house-battery/state",
        "sunbox/site/cabin-2/x/house-battery/state",
        "sunbox",
    ],
)
def test_other_shapes_are_refused(topic: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.parse(topic, "sunbox")


def test_subscriptions_and_reports_cover_both_shapes() -> None:
    assert topics.subscriptions("sunbox", ("state",)) == ["sunbox/+/state", "sunbox/site/+/+/state"]
    assert topics.stored_topic("sunbox", None) == "sunbox/_store/stored"
    assert topics.stored_topic("sunbox", "cabin-2") == "sunbox/_store/site/cabin-2/stored"


def test_a_site_reading_becomes_a_point_of_the_site_qualified_device() -> None:
    payload = json.dumps({"device_id": "house-battery", "kind": "battery", "time_ms": NOW, "soc": 80}).encode()
    point, _ = parse_reading("sunbox/site/cabin-2/house-battery/state", payload, NOW)
    assert point.device == "cabin-2.house-battery"
    with pytest.raises(PayloadError, match="does not match"):  # a site cannot name another's device in the payload
        parse_reading("sunbox/site/cabin-2/mppt/state", payload, NOW)
    with pytest.raises(PayloadError, match="unexpected topic"):
        parse_reading("sunbox/site/cabin-2/house-battery/availability", payload, NOW)


def test_the_display_shows_a_site_device_under_its_qualified_id() -> None:
    from sunbox.web.live import LiveState

    live = LiveState()
    payload = json.dumps({"device_id": "house-battery", "kind": "battery", "time_ms": NOW, "soc": 80}).encode()
    assert live.apply("sunbox/site/cabin-2/house-battery/state", payload, NOW) == "cabin-2.house-battery"
    assert live.apply("sunbox/site/cabin-2/house-battery/availability", b"offline", NOW) == "cabin-2.house-battery"
    assert live.apply("sunbox/site/cabin-2/collector/availability", b"online", NOW) is None
    assert live.collector_online is None  # a site's collector is not this Pi's
    view = live.device("cabin-2.house-battery")
    assert view["state"]["soc"] == 80 and view["online"] is False
    assert live.apply("sunbox/site/cabin-2/a/b/state", payload, NOW) is None
    assert live.skipped["unexpected topic"] == 1
