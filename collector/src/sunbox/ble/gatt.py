"""Request/response over a GATT write characteristic and a notify characteristic.

The devices Sunbox reads are UART bridges: the host writes a request, the answer comes
back as one or more notifications. :class:`GattLink` writes, collects notifications in
an assembler and returns the first complete frame, with a timeout on every step.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bleak import BleakClient

from sunbox.aio import within


class Assembler(Protocol):
    """Anything that turns notification chunks into complete frames."""

    skipped_bytes: int

    def reset(self) -> None: ...

    def feed(self, chunk: bytes | bytearray) -> list[bytes]: ...


class LinkTimeout(TimeoutError):
    """The device did not answer a request in time."""


class GattLink:
    """One device's request/response channel on an open :class:`bleak.BleakClient`.

    Requests are serialised; notifications that arrive with no request waiting are
    counted in :attr:`unsolicited_chunks` and dropped.
    """

    def __init__(
        self,
        client: BleakClient,
        write_uuid: str,
        notify_uuid: str,
        timeout: float,
        write_with_response: bool = False,
    ) -> None:
        self.client = client
        self.write_uuid = write_uuid
        self.notify_uuid = notify_uuid
        self.timeout = timeout
        self.write_with_response = write_with_response
        self.unsolicited_chunks = 0
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._waiting = False
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return str(self.client.address)

    async def start(self) -> None:
        """Subscribe to notifications (bounded by the timeout)."""
        await within(self.client.start_notify(self.notify_uuid, self._on_notify), self.timeout)

    def _on_notify(self, _characteristic: object, data: bytearray) -> None:
        if self._waiting:
            self._chunks.put_nowait(bytes(data))
        else:
            self.unsolicited_chunks += 1

    async def write(self, payload: bytes) -> None:
        """Write without waiting for an answer."""
        await within(
            self.client.write_gatt_char(self.write_uuid, payload, response=self.write_with_response),
            self.timeout,
        )

    async def request(self, payload: bytes, assembler: Assembler, timeout: float | None = None) -> bytes:
        """Write ``payload`` and return the first complete frame from ``assembler``.

        Raises:
            LinkTimeout: no complete frame within ``timeout`` (default: the link's).
        """
        limit = self.timeout if timeout is None else timeout
        async with self._lock:
            while not self._chunks.empty():
                self._chunks.get_nowait()
                self.unsolicited_chunks += 1
            assembler.reset()
            self._waiting = True
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + limit
                await self.write(payload)
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise LinkTimeout(f"no answer to {payload.hex()} within {limit:g} s")
                    try:
                        chunk = await within(self._chunks.get(), remaining)
                    except TimeoutError:
                        raise LinkTimeout(f"no answer to {payload.hex()} within {limit:g} s") from None
                    frames = assembler.feed(chunk)
                    if frames:
                        return frames[0]
            finally:
                self._waiting = False
