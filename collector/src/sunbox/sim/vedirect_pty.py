"""A VE.Direct device on a pseudo-terminal: replays a real capture, one block per interval.

The capture is cut after each block's checksum byte, so HEX frames stay where the
device put them. Every ``corrupt_every``-th block has one digit changed, which breaks its
checksum. The pseudo-terminal is raw (no newline translation), like a USB serial cable.
Like a device on a cable nobody reads, it never waits for a reader: when the terminal's
buffer is full, the rest of a block is dropped (and counted in ``dropped``), so a
replay with no reader can always be stopped.
"""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

from sunbox.protocols.vedirect import CHECKSUM_LABEL


def split_blocks(capture: bytes) -> list[bytes]:
    """The capture cut after every checksum byte (the last, incomplete part dropped)."""
    chunks = []
    start = 0
    while (end := capture.find(CHECKSUM_LABEL, start)) >= 0 and end + len(CHECKSUM_LABEL) < len(capture):
        stop = end + len(CHECKSUM_LABEL) + 1
        chunks.append(capture[start:stop])
        start = stop
    return chunks


def corrupt(block: bytes) -> bytes:
    """The block with its first value digit changed (its checksum no longer holds)."""
    data = bytearray(block)
    for index in range(data.find(b"\t") + 1, len(data)):
        if chr(data[index]).isdigit():
            data[index] = ord("0") + (data[index] - ord("0") + 1) % 10
            return bytes(data)
    return block


class VeDirectReplay:
    """Owns the pseudo-terminal; :attr:`path` is what a reader opens."""

    def __init__(self, capture: bytes, interval: float = 1.0, corrupt_every: int | None = None) -> None:
        self.blocks = split_blocks(capture)
        if not self.blocks:
            raise ValueError("no VE.Direct block in the capture")
        self.interval = interval
        self.corrupt_every = corrupt_every
        self.sent = 0
        self.dropped = 0
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)

    def link(self, where: Path) -> None:
        """A symlink to the terminal, like udev's /dev/serial/by-id names."""
        where.unlink(missing_ok=True)
        where.symlink_to(self.path)

    async def run(self) -> None:
        """Send blocks forever (from the start again at the end of the capture)."""
        while True:
            block = self.blocks[self.sent % len(self.blocks)]
            if self.corrupt_every and self.sent % self.corrupt_every == self.corrupt_every - 1:
                block = corrupt(block)
            try:
                written = os.write(self._master, block)
            except BlockingIOError:
                written = 0
            self.dropped += len(block) - written
            self.sent += 1
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
