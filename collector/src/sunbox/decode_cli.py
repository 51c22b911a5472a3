"""``sunbox decode``: one frame, advert, VREG message or VE.Direct capture to data-model JSON.

Exit 0 with JSON on stdout; exit 1 with a message on stderr when the input is bad.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sunbox.protocols import jbd, litime, vedirect, victron_advert, vreg
from sunbox.protocols.errors import FrameError

PROTOCOLS = ("jbd", "litime", "victron-advert", "vreg", "vedirect")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    decode = sub.add_parser("decode", help="decode a frame, advert, VREG message or VE.Direct capture")
    decode.add_argument("protocol", choices=PROTOCOLS)
    decode.add_argument("data", help="hex (jbd, litime, victron-advert, vreg) or a capture file or - (vedirect)")
    decode.add_argument("--key", help="victron-advert: the device's Instant Readout key (32 hex digits)")
    decode.add_argument("--merge", action="store_true", help="vedirect: join a BMV's two blocks per second")


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace(":", ""))


def _fail(protocol: str, message: str) -> int:
    print(f"sunbox decode {protocol}: {message}", file=sys.stderr)
    return 1


def _vedirect(source: str, merge: bool) -> int:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        return _fail("vedirect", f"cannot read {source}: {exc.strerror}")
    parser = vedirect.BlockParser()
    blocks = parser.feed(data)
    printed = 0
    for block in vedirect.merge_pairs(blocks) if merge else blocks:
        try:
            kind, values = vedirect.to_values(block)
        except FrameError as exc:
            print(f"sunbox decode vedirect: skipped a block: {exc}", file=sys.stderr)
            continue
        print(json.dumps({"kind": kind, **values}, sort_keys=True))
        printed += 1
    s = parser.stats
    print(
        f"{s.blocks} valid blocks, {s.bad_checksums} bad checksums, {s.malformed} malformed, "
        f"{s.hex_frames} HEX frames skipped",
        file=sys.stderr,
    )
    return 0 if printed else 1


def cmd_decode(args: argparse.Namespace) -> int:
    protocol: str = args.protocol
    if protocol == "vedirect":
        return _vedirect(args.data, args.merge)
    try:
        data = _hex(args.data)
    except ValueError:
        return _fail(protocol, f"not hex: {args.data!r}")
    try:
        if protocol == "jbd":
            out = jbd.decode(data)
        elif protocol == "litime":
            out = litime.decode(data)
        elif protocol == "vreg":
            out = vreg.describe(vreg.parse_message(data))
            if "name" in out:
                out[out["name"]] = out["value"]
        else:
            if not args.key:
                return _fail(protocol, "--key is required")
            try:
                key = _hex(args.key)
            except ValueError:
                return _fail(protocol, "--key is not hex")
            kind, values = victron_advert.decode(data, key)
            out = {"kind": kind, **values}
    except FrameError as exc:
        return _fail(protocol, f"bad input: {exc}")
    print(json.dumps(out, sort_keys=True))
    return 0
