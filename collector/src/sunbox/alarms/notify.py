"""Sending one notification to one target: a thin adapter over Apprise.

Apprise (https://github.com/caronc/apprise) speaks ntfy, Telegram, e-mail, Pushover,
Matrix, webhooks and many more, each named by a URL (``ntfy://host/topic``,
``mailto://...``, ``json://host/path``). Sunbox only hands it a title and a body; every
delivery policy (retries, digests, once-only) lives in :mod:`sunbox.alarms.outbox`.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

LOG = logging.getLogger(__name__)


class NotifyError(ValueError):
    """A URL Apprise does not understand."""


def target_name(index: int, url: str) -> str:
    """A target as logs and ``sunbox alarms test`` show it: its number and scheme, never
    the URL (it holds tokens and passwords)."""
    return f"target {index + 1} ({urlsplit(url).scheme or '?'})"


def check_url(url: str) -> None:
    """Raises NotifyError when Apprise cannot parse ``url``."""
    import apprise  # only where a message is sent: the ``sunbox`` command starts faster

    if not apprise.Apprise().add(url):
        raise NotifyError("not an Apprise URL (https://github.com/caronc/apprise/wiki)")


def _send(url: str, title: str, body: str) -> bool:
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise NotifyError("not an Apprise URL")
    return bool(notifier.notify(title=title, body=body))


async def send(url: str, title: str, body: str) -> bool:
    """Deliver one message; True when the target accepted it (Apprise blocks: a thread).

    Raises:
        NotifyError: ``url`` is not an Apprise URL.
    """
    return await asyncio.to_thread(_send, url, title, body)
