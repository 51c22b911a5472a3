"""Property-based tests: random, truncated, corrupted and fragmented frames.

No exception other than FrameError escapes a decoder, and a corrupted frame never
decodes to a value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbox.protocols import jbd, litime
from sunbox.protocols.errors import FrameError

_DATA = json.loads((Path(__file__).parent / "fixtures" / "devices.json").read_text())
JBD_FRAMES = [bytes.fromhex(v["hex"]) for v in _DATA["jbd"]]
LITIME_FRAMES = [bytes.fromhex(v["hex"]) for v in _DATA["litime_mppt"]]
DECODERS = [(jbd.decode, JBD_FRAMES), (litime.decode, LITIME_FRAMES)]


@settings(max_examples=400)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    for decode, _ in DECODERS:
        try:
            decode(data)
        except FrameError:
            pass
    try:
        jbd.parse_ffaa(data)
    except FrameError:
        pass


@given(st.data())
def test_truncated_frames_are_rejected(data: st.DataObject) -> None:
    for decode, frames in DECODERS:
        frame = data.draw(st.sampled_from(frames))
        cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        with pytest.raises(FrameError):
            decode(frame[:cut])


@given(st.data())
def test_corrupted_frames_are_rejected(data: st.DataObject) -> None:
    """Any single-bit flip is caught by the checksum/CRC or the frame checks."""
    for decode, frames in DECODERS:
        frame = bytearray(data.draw(st.sampled_from(frames)))
        index = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=7))
        frame[index] ^= 1 << bit
        with pytest.raises(FrameError):
            decode(bytes(frame))


@given(st.data())
def test_fragmented_frames_reassemble(data: st.DataObject) -> None:
    for assembler_cls, frames, decode in (
        (jbd.FrameAssembler, JBD_FRAMES, jbd.decode),
        (litime.FrameAssembler, LITIME_FRAMES, litime.decode),
    ):
        frame = data.draw(st.sampled_from(frames))
        cuts = sorted(data.draw(st.lists(st.integers(1, len(frame) - 1), max_size=6, unique=True)))
        chunks = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]
        assembler = assembler_cls()
        out: list[bytes] = []
        for chunk in chunks:
            out.extend(assembler.feed(chunk))
        assert out == [frame]
        assert decode(out[0]) == decode(frame)


@given(noise=st.binary(max_size=40), chunk=st.binary(max_size=60))
def test_assemblers_survive_garbage(noise: bytes, chunk: bytes) -> None:
    for assembler in (jbd.FrameAssembler(), litime.FrameAssembler()):
        for frame in assembler.feed(noise) + assembler.feed(chunk):
            try:
                (jbd.decode if isinstance(assembler, jbd.FrameAssembler) else litime.decode)(frame)
            except FrameError:
                pass
