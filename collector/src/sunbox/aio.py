"""asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``await awaitable``, raising :class:`TimeoutError` after ``timeout`` seconds.

    Used instead of :func:`asyncio.wait_for`: on Python 3.11, which Raspberry Pi OS Bookworm
    ships, ``wait_for`` can swallow a cancellation that arrives while the inner awaitable
    completes in the same loop iteration (CPython gh-86296, fixed in 3.12), and a link
    task that lost its cancellation never stops. ``asyncio.timeout`` counts cancellations
    and re-raises them. Found on the virtual Pi: ``sunbox run --once`` hung at exit.
    """
    async with asyncio.timeout(timeout):
        return await awaitable


def raise_if_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` if the current task has a cancellation pending.

    Some libraries turn a cancellation that reaches them into their own error (a
    ``BleakError``, say). The task's cancellation request then stays pending
    (``Task.cancelling()``), but nothing raises it, and a retry loop would go on for ever.
    Long-running loops call this after every caught error and before every retry.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
