"""Decode throughput per protocol (frames per second, one core), on the captured frames."""

from __future__ import annotations

import time

from sunbox.protocols import jbd, litime

FRAMES = {
    "jbd 0x03": (jbd.decode, bytes.fromhex("dd03001d0536ffcb4ff253340001309b00000000000044600304030bb70bbf0bb9f84c77")),
    "jbd 0x04": (jbd.decode, bytes.fromhex("dd0400080d070d060d080d08ffa777")),
    "litime status": (
        litime.decode,
        bytes.fromhex("0103260064008f05c900d31bff008f000200000321036804ba0000800400000003000017e000000000a884"),
    ),
}


def main(seconds: float = 1.0) -> None:
    for name, (decode, frame) in FRAMES.items():
        count = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(1000):
                decode(frame)
            count += 1000
        print(f"{name:14s} {count / elapsed:>10,.0f} frames/s  ({elapsed / count * 1e6:.1f} µs/frame)")


if __name__ == "__main__":
    main()
