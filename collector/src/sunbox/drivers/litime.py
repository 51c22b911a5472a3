"""LiTime MPPT driver: GATT FFE0, one characteristic FFE1 for write and notify.

Per connection: the device-info block (0x000A, 11 registers) once. Per poll: the
status block (0x0101, 19 registers). The load output is switched through register
0x0120 only when the device's ``control`` option is on. Protocol details and sources:
:mod:`sunbox.protocols.litime`.
"""

from __future__ import annotations

from typing import Any

from sunbox.ble.gatt import GattLink
from sunbox.protocols import litime
from sunbox.protocols.errors import FrameError

from .base import Driver


class ControlDisabled(PermissionError):
    """Writing to the charger was requested while ``control`` is off in the config."""


class LiTimeDriver(Driver):
    """LiTime / HQST 60 A MPPT (BT-LTMPPT...)."""

    name = "litime"
    kind = "charger"
    service_uuid = "0000ffe0-0000-1000-8000-00805f9b34fb"
    notify_uuid = "0000ffe1-0000-1000-8000-00805f9b34fb"
    write_uuid = "0000ffe1-0000-1000-8000-00805f9b34fb"
    name_prefixes = ("BT-LTMPPT",)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._assembler = litime.FrameAssembler()

    @property
    def skipped_bytes(self) -> int:
        return self._assembler.skipped_bytes

    async def _read(self, link: GattLink, start: int, count: int) -> bytes:
        frame = await link.request(litime.read_request(start, count), self._assembler)
        registers = litime.parse_response(frame, litime.READ_HOLDING)
        if len(registers) != 2 * count:
            raise FrameError(f"asked for {count} registers, got {len(registers) // 2}")
        return registers

    async def setup(self, link: GattLink) -> None:
        info = litime.decode_device_info(await self._read(link, litime.DEVICE_INFO_START, litime.DEVICE_INFO_COUNT))
        self.static = {"model": info["model"], "firmware_version": info["firmware_version"]}

    async def poll(self, link: GattLink) -> dict[str, Any]:
        values = litime.decode_status(await self._read(link, litime.STATUS_START, litime.STATUS_COUNT))
        values.update(self.static)
        return values

    async def set_load(self, link: GattLink, on: bool) -> None:
        """Switch the load output (write single register 0x0120).

        Raises:
            ControlDisabled: ``control`` is off for this device.
            FrameError: the charger did not echo the write.
        """
        if not self.config.control:
            raise ControlDisabled(f"{self.config.id}: control is disabled in the configuration")
        request = litime.write_single_request(litime.LOAD_REGISTER, 1 if on else 0)
        reply = await link.request(request, self._assembler)
        litime.parse_response(reply, litime.WRITE_SINGLE)
        if reply != request:
            raise FrameError(f"load write not echoed: {reply.hex()}")
