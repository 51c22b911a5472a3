"""What ``sunbox scan`` heard, as a table and as an inventory snippet (pure, no I/O).

:func:`classify` turns one advert into a :class:`Found`: the driver that would read the
device (``driver_for_advert``), and for Victron products (manufacturer data under company
id 0x02E1) whether Instant Readout is on. That is the case when the data is a "Product
advertisement" record, first byte 0x10, long enough to carry the record type, nonce,
key-check byte and ciphertext (Victron "Extra manufacturer data" 2022-12-14, layout in
``../shared/docs/protocols.md`` §3; product names from ``victron_ble``'s
``MODEL_ID_MAPPING``).

:func:`table` prints one aligned row per device, strongest first. :func:`inventory`
prints the ``host_vars`` lines for every device Sunbox can read, with a comment that
says where each secret comes from (sources: JBD ``docs/protocols.md`` §1.5, SmartSolar
§4.1, Instant Readout §3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from victron_ble.devices.base import MODEL_ID_MAPPING

from sunbox.drivers import driver_for_advert

#: Bluetooth SIG company identifier of Victron Energy B.V.
VICTRON_COMPANY_ID = 0x02E1
#: "Product advertisement" record (first byte of Victron's manufacturer data)
PRODUCT_ADVERTISEMENT = 0x10
#: bytes before the ciphertext: record, flags, model id (2), record type, nonce (2), key[0]
_HEADER = 8
#: the id Sunbox gives a device of each driver in the snippet, numbered from 1
_ID_STEM = {
    "jbd": "battery",
    "litime": "mppt",
    "smartsolar": "solar",
    "phoenix": "inverter",
    "victron-advert": "victron",
}


@dataclass(frozen=True, slots=True)
class Found:
    """One device heard: ``rssi`` in dBm (None when the stack gave none)."""

    address: str
    rssi: int | None
    name: str
    #: a ``devices:`` driver, ``victron-advert`` (read through Instant Readout) or None
    driver: str | None
    #: Victron only: True (Instant Readout on), False (off); None for other makers
    instant_readout: bool | None = None
    #: Victron only: the product's name from its model id, if known
    product: str | None = None

    @property
    def note(self) -> str:
        if self.instant_readout is True:
            return "Instant Readout on" + (f" ({self.product})" if self.product else "")
        if self.instant_readout is False:
            return "Victron, Instant Readout off"
        if self.driver is None:
            return "not a device Sunbox reads"
        return ""


def classify(
    address: str,
    rssi: int | None,
    name: str | None,
    service_uuids: Iterable[str],
    manufacturer_data: Mapping[int, bytes],
) -> Found:
    """Name the driver for one advert. Never raises on odd adverts (short data: not Victron IR)."""
    driver = driver_for_advert(name, list(service_uuids))
    victron = manufacturer_data.get(VICTRON_COMPANY_ID)
    instant_readout: bool | None = None
    product: str | None = None
    if victron is not None:
        instant_readout = len(victron) > _HEADER and victron[0] == PRODUCT_ADVERTISEMENT
        if len(victron) >= 4 and victron[0] == PRODUCT_ADVERTISEMENT:
            product = MODEL_ID_MAPPING.get(int.from_bytes(victron[2:4], "little"))
        if instant_readout and driver is None:
            driver = "victron-advert"
    return Found(address.upper(), rssi, name or "", driver, instant_readout, product)


def table(found: Iterable[Found]) -> str:
    """Aligned rows with a header, the strongest signal first."""
    rows = [("ADDRESS", "RSSI", "DRIVER", "NAME", "NOTE")]
    for item in sorted(found, key=lambda f: -(f.rssi if f.rssi is not None else -999)):
        rssi = f"{item.rssi} dBm" if item.rssi is not None else "?"
        rows.append((item.address, rssi, item.driver or "-", item.name or "-", item.note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].ljust(widths[3])]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines) + "\n"


def _ids(found: list[Found]) -> list[str]:
    counts: dict[str, int] = {}
    ids = []
    for item in found:
        stem = _ID_STEM.get(item.driver or "", "device")
        counts[stem] = counts.get(stem, 0) + 1
        ids.append(f"{stem}-{counts[stem]}")
    return ids


def inventory(found: Iterable[Found]) -> str:
    """YAML for the Pi's ``host_vars`` (``sunbox_devices``, ``sunbox_victron_adverts``).

    Secrets are vault references named after the device id, with a comment saying where
    the value comes from; devices Sunbox cannot read are left out of the YAML. The
    :func:`table` of everything heard comes first, as comments.
    """
    found = list(found)
    readable = sorted((f for f in found if f.driver), key=lambda f: f.address)
    devices: list[str] = []
    adverts: list[str] = []
    packs: list[str] = []
    for item, ident in zip(readable, _ids(readable), strict=True):
        if item.driver == "jbd":
            packs.append(ident)
        vault = "vault_sunbox_" + ident.replace("-", "_")
        head = f'  - id: {ident}\n    address: "{item.address}"\n'
        if item.driver == "victron-advert":
            adverts.append(
                head + "    # VictronConnect: open the device, gear icon, Product info, Instant readout details, Show\n"
                f'    key: "{{{{ {vault}_key }}}}"\n    interval_s: 5\n'
            )
            continue
        entry = head.replace("    address", f"    driver: {item.driver}\n    address", 1)
        if item.driver == "jbd":
            entry += (
                "    # the password set in the Xiaoxiang/JBD app (defaults seen: 123456, 123123, 000000);\n"
                "    # delete the line if it has none. Newer JBDs that pair take `passkey: 123456` instead.\n"
                f'    password: "{{{{ {vault}_password }}}}"\n'
            )
        elif item.driver in ("smartsolar", "phoenix"):
            entry += "    # passkey: 123456   # the Bluetooth PIN, if changed in VictronConnect (default 000000)\n"
        devices.append(entry + "    poll_interval_s: 5\n")
    out = [
        "# sunbox scan --inventory: paste into inventories/<site>/host_vars/<pi>.yml and put the",
        "# vault_* secrets into the vault (./play.sh vault edit .../group_vars/all/vault.yml).",
        "# Close the phone apps first: these devices accept one connection at a time, and a",
        "# connected device does not advertise (the collector's own: sudo systemctl stop sunbox-collector).",
    ]
    out.append("#")
    out.extend(("# " + row).rstrip() for row in table(found).splitlines())
    out.append("sunbox_devices:" + ("" if devices else " []"))
    out.extend(d.rstrip("\n") for d in devices)
    out.append("sunbox_victron_adverts:" + ("" if adverts else " []"))
    out.extend(a.rstrip("\n") for a in adverts)
    if len(packs) > 1:
        out += [
            "# Packs in parallel read as one battery (docs/banks.md): uncomment, and name the",
            "# battery monitor (BMV, SmartShunt) on the same bank as its meter, if there is one.",
            "# sunbox_banks:",
            "#   - id: house",
            f"#     packs: [{', '.join(packs)}]",
            "#     # meter: shunt",
        ]
    return "\n".join(out) + "\n"
