"""Errors raised by the pure protocol decoders.

Every decoder raises a subclass of :class:`FrameError` for bad input and never
anything else, so callers can count and skip a bad frame with one ``except``.
"""

from __future__ import annotations


class FrameError(ValueError):
    """A frame could not be decoded (the message says why)."""


class ChecksumError(FrameError):
    """The frame's checksum or CRC does not match its content."""


class TruncatedFrameError(FrameError):
    """The frame is shorter than its header or its declared length says."""


class DeviceErrorReply(FrameError):
    """The device answered with an error status or exception code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
