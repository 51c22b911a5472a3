"""Keep one device's task running without letting its failure stop the others.

The collector runs one task per device (a BLE link, a VE.Direct port, a Venus OS
broker) in one :class:`asyncio.TaskGroup`. A task group cancels every task when one of
them raises, so a bug that escaped one source's own error handling would drop every
BLE link and leave the restart to systemd. :func:`supervised` runs such a task again
instead, after a backoff, and reports the crash through a callback (the source's
health), while the other tasks keep their links.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sunbox.aio import raise_if_cancelled
from sunbox.ble.adapter import Backoff

LOG = logging.getLogger(__name__)

#: a run that lasted this long counts as healthy: the next crash starts the backoff anew
STABLE_AFTER_S = 300.0


async def supervised(
    name: str,
    run: Callable[[], Coroutine[Any, Any, None]],
    on_crash: Callable[[str], None],
    backoff: Backoff | None = None,
    stable_after_s: float = STABLE_AFTER_S,
) -> None:
    """Await ``run()`` for ever, starting it again whenever it raises or returns.

    ``run`` is a factory: it is called for every start. A raised exception (anything but
    :class:`asyncio.CancelledError`) is logged with its traceback, and ``on_crash`` gets
    one line naming it (``"crashed: RuntimeError: ..."``); a run that returns although it
    should not is reported as ``"ended unexpectedly"``. The next start waits
    ``backoff.next_delay()`` seconds (default: 1 s doubling to 60 s, jittered); a run that
    lasted ``stable_after_s`` resets the backoff. An exception raised by ``on_crash``
    itself is logged and ignored.

    Returns never; raises :class:`asyncio.CancelledError` when cancelled, also while
    waiting to start again.
    """
    backoff = backoff or Backoff(1.0, 60.0)
    while True:
        started = time.monotonic()
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"crashed: {type(exc).__name__}: {exc}"
            LOG.exception("%s %s; starting it again", name, message)
        else:
            message = "ended unexpectedly"
            LOG.error("%s %s; starting it again", name, message)
        raise_if_cancelled()
        if time.monotonic() - started >= stable_after_s:
            backoff.reset()
        try:
            on_crash(message)
        except Exception:
            LOG.exception("%s: reporting the crash failed", name)
        await asyncio.sleep(backoff.next_delay())
