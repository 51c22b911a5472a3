"""Victron Instant Readout adverts to data-model values. Pure code, no I/O.

Input: the manufacturer data after Victron's company id 0x02E1 (``0x10``, a byte,
product id u16 LE, record type, nonce u16 LE, key check byte, AES-128-CTR ciphertext).
The decryption (AES-CTR, counter = the nonce, little-endian) and the product table are
victron-ble's (``keshavdv/victron-ble`` 0.9.3, ``victron_ble/devices/base.py``); the
records' bit layouts and their mapping to data-model names are Sunbox's own, from
Victron's document (:mod:`sunbox.protocols.victron_records`), so that every record the
document specifies is decoded and no unknown code ever refuses an advert. Facts:
Victron "Extra manufacturer data" 2022-12-14 and ``docs/protocols.md`` section 3.

Record type -> kind (:data:`sunbox.protocols.victron_records.RECORD_TYPES`): solar
charger and AC charger -> ``charger``; battery monitor (and Smart Battery Sense),
SmartLithium and Lynx Smart BMS -> ``battery``; inverter, Inverter RS, VE.Bus and Multi
RS -> ``inverter``; DC/DC and Orion XS -> ``dcdc``; DC energy meter -> ``dc_meter``;
Smart BatteryProtect -> ``protect``; GX device -> ``system``; test record -> ``test``.
"""

from __future__ import annotations

import struct
from typing import Any

from victron_ble.devices.base import MODEL_ID_MAPPING, Device

from .errors import FrameError
from .victron_records import RECORD_TYPES, decode_record

COMPANY_ID = 0x02E1
PRODUCT_ADVERTISEMENT = 0x10
#: bytes before the ciphertext: 0x10, a byte, product id, record type, nonce, key check
HEADER = 8


class AdvertKeyError(FrameError):
    """The advert's key check byte does not match the configured key (wrong or changed key)."""


class _Cipher(Device):  # type: ignore[misc]  # victron-ble has no type information
    """victron-ble's decryption alone (its record parsers are not used)."""

    def parse_decrypted(self, decrypted: bytes) -> dict[str, Any]:
        raise NotImplementedError


def parse_header(data: bytes) -> tuple[int, int, int]:
    """``(product_id, record_type, nonce)`` of an advert.

    Raises:
        FrameError: too short, or not a Victron product advertisement (first byte 0x10).
    """
    if len(data) < 9:
        raise FrameError(f"Victron advert too short: {len(data)} bytes")
    if data[0] != PRODUCT_ADVERTISEMENT:
        raise FrameError(f"not a Victron product advertisement (record 0x{data[0]:02x})")
    product_id, record_type, nonce = struct.unpack_from("<HBH", data, 2)
    return product_id, record_type, nonce


def decode(data: bytes, key: bytes) -> tuple[str, dict[str, Any]]:
    """Decrypt and decode one advert.

    Args:
        data: manufacturer data after the company id 0x02E1.
        key: the device's 16-byte Instant Readout key (VictronConnect: Product info).

    Returns:
        ``(kind, values)``, values in data-model names (``docs/data-model.md``): volts,
        amps, watts, Wh, °C, ``time_to_go`` in s (None = infinite or unknown),
        ``consumed_ah`` ≥ 0 = Ah drawn, states as text with ``*_code`` the raw number
        (``unknown_<n>`` for a code Sunbox has no name for), ``model`` from the product
        id. A quantity the record marks "not available", or that a short record does not
        hold, is None.

    Raises:
        AdvertKeyError: the key check byte does not match ``key``.
        FrameError: malformed advert or a record type without a known layout.
    """
    if len(key) != 16:
        raise FrameError("a Victron advert key is 16 bytes (32 hex digits)")
    product_id, record_type, _nonce = parse_header(data)
    if record_type not in RECORD_TYPES:
        raise FrameError(f"unknown Victron record type 0x{record_type:02x}")
    if data[HEADER - 1] != key[0]:
        raise AdvertKeyError(
            f"advert key check byte 0x{data[HEADER - 1]:02x} does not match the configured key (0x{key[0]:02x}...)"
        )
    plaintext = _Cipher(key.hex()).decrypt(data)[: len(data) - HEADER]
    kind, values = decode_record(record_type, plaintext)
    values["model"] = MODEL_ID_MAPPING.get(product_id, f"0x{product_id:04X}")
    values["product_id"] = f"0x{product_id:04X}"
    return kind, values
