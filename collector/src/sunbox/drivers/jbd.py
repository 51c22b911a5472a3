"""JBD BMS driver: GATT FF00 / notify FF01 / write FF02.

Per connection: optional passkey pairing (newer firmware), optional ``FF AA`` password
handshake (0x15 -> 0x17 -> 0x18 -> 0x17 -> 0x1D, syssi/esphome-jbd-bms PR #148), then
register 0x05 (model) once. Per poll: 0x03 (basic info) and 0x04 (cell voltages).
Protocol details and sources: :mod:`sunbox.protocols.jbd`.
"""

from __future__ import annotations

from typing import Any

from sunbox.ble.gatt import GattLink
from sunbox.protocols import jbd
from sunbox.protocols.errors import FrameError
from sunbox.protocols.framing import FrameAssembler

from .base import AuthenticationError, Driver, PairingRequired


def cell_statistics(cells: list[float | None]) -> dict[str, float | None]:
    """``cell_voltage_min``, ``_max`` and ``_delta`` (V) over the cells present.

    Absent slots (``None``, see :func:`sunbox.protocols.jbd.decode_cell_voltages`) do not
    count; with no cell present all three are ``None``.
    """
    present = [v for v in cells if v is not None]
    if not present:
        return {"cell_voltage_min": None, "cell_voltage_max": None, "cell_voltage_delta": None}
    low, high = min(present), max(present)
    return {"cell_voltage_min": low, "cell_voltage_max": high, "cell_voltage_delta": round(high - low, 3)}


class FfaaAssembler(FrameAssembler):
    """Frames ``FF AA cmd len data chk`` (length byte at offset 3) from notification chunks."""

    def __init__(self) -> None:
        super().__init__(jbd.FFAA_START, lambda b: b[3] + 5 if len(b) >= 4 else None)


class JbdDriver(Driver):
    """JBD / Xiaoxiang / Vatrer (FF00 variant) BMS."""

    name = "jbd"
    kind = "battery"
    service_uuid = "0000ff00-0000-1000-8000-00805f9b34fb"
    notify_uuid = "0000ff01-0000-1000-8000-00805f9b34fb"
    write_uuid = "0000ff02-0000-1000-8000-00805f9b34fb"
    name_prefixes = ("JBD-", "DWCK", "DDCK", "SBL-", "SX1", "DWF")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._assembler = jbd.FrameAssembler()

    @property
    def skipped_bytes(self) -> int:
        return self._assembler.skipped_bytes

    async def _ffaa(self, link: GattLink, frame: bytes) -> bytes:
        reply = await link.request(frame, FfaaAssembler())
        if reply == frame:
            raise PairingRequired("the BMS echoes requests: configure its passkey for BLE pairing")
        command, data = jbd.parse_ffaa(reply)
        if command != frame[2] or len(data) != 1:
            raise FrameError(f"unexpected FF AA reply {reply.hex()} to {frame.hex()}")
        return data

    async def _authenticate(self, link: GattLink, password: bytes) -> None:
        mac = jbd.mac_bytes(link.address)
        (code,) = await self._ffaa(link, jbd.ffaa_frame(jbd.FFAA_APP_KEY, jbd.APP_KEY))
        if code == jbd.APP_KEY_NO_PASSWORD:
            return
        if code != jbd.APP_KEY_ACCEPTED:
            raise AuthenticationError(f"app key rejected (code {code})")
        (rnd,) = await self._ffaa(link, jbd.ffaa_frame(jbd.FFAA_GET_RANDOM))
        (ack,) = await self._ffaa(link, jbd.user_password_frame(mac, password, rnd))
        if ack != 0:
            raise AuthenticationError("wrong password (FF AA 0x18 NACK)")
        (rnd,) = await self._ffaa(link, jbd.ffaa_frame(jbd.FFAA_GET_RANDOM))
        (ack,) = await self._ffaa(link, jbd.root_password_frame(mac, rnd))
        if ack != 0:
            raise AuthenticationError("root password refused (FF AA 0x1D NACK)")

    async def _read(self, link: GattLink, register: int) -> bytes:
        request = jbd.read_request(register)
        frame = await link.request(request, self._assembler)
        if frame == request:
            raise PairingRequired("the BMS echoes requests: configure its passkey for BLE pairing")
        response = jbd.parse_frame(frame)
        if response.register != register:
            raise FrameError(f"asked for register 0x{register:02x}, got 0x{response.register:02x}")
        return response.data

    async def setup(self, link: GattLink) -> None:
        if self.config.passkey is not None:
            await link.client.pair()
        if self.config.password is not None:
            await self._authenticate(link, self.config.password.encode())
        self.static = {"model": jbd.decode_model(await self._read(link, jbd.REG_MODEL))}

    async def poll(self, link: GattLink) -> dict[str, Any]:
        values = jbd.decode_basic_info(await self._read(link, jbd.REG_BASIC_INFO))
        cells = jbd.decode_cell_voltages(await self._read(link, jbd.REG_CELL_VOLTAGES))
        if values["cell_count"] and len(cells) != values["cell_count"]:
            raise FrameError(f"0x04 has {len(cells)} cells, 0x03 says {values['cell_count']}")
        values["cell_voltages"] = cells
        values.update(cell_statistics(cells))
        values.update(self.static)
        return values
