"""Reassembly of frames split across BLE notifications, shared by every protocol."""

from __future__ import annotations

from collections.abc import Callable

#: Given a buffer starting at a start marker, the full frame length, or None if not known yet.
LengthOf = Callable[[bytearray], int | None]


class FrameAssembler:
    """Collects notification chunks and cuts complete (unchecked) frames out of them.

    A frame starts with ``start``; bytes before a start marker are skipped and counted in
    :attr:`skipped_bytes`. ``length_of`` reads the total frame length from the header.
    """

    def __init__(self, start: bytes, length_of: LengthOf) -> None:
        self._start = start
        self._length_of = length_of
        self._buffer = bytearray()
        self.skipped_bytes = 0

    def reset(self) -> None:
        """Drop any partial frame (call before a new request)."""
        self._buffer.clear()

    def feed(self, chunk: bytes | bytearray) -> list[bytes]:
        """Add ``chunk``; return the complete frames now available, oldest first."""
        self._buffer.extend(chunk)
        frames: list[bytes] = []
        while self._buffer:
            start = self._buffer.find(self._start)
            if start < 0:
                keep = len(self._start) - 1  # a marker may straddle two chunks
                dropped = len(self._buffer) - keep if keep else len(self._buffer)
                if keep and self._buffer[-keep:] == self._start[:keep]:
                    self.skipped_bytes += dropped
                    del self._buffer[:dropped]
                else:
                    self.skipped_bytes += len(self._buffer)
                    self._buffer.clear()
                break
            if start:
                self.skipped_bytes += start
                del self._buffer[:start]
            length = self._length_of(self._buffer)
            if length is None or len(self._buffer) < length:
                break
            frames.append(bytes(self._buffer[:length]))
            del self._buffer[:length]
        return frames
