"""The base role's lan-sets script, rendered by Ansible: which networks the firewall admits.

Issue 16, finding 3: "LAN only" used to mean every private range (10/8, 172.16/12,
192.168/16, link-local). Now it is the subnets the Pi is on, or an explicit list. The
nft side (the sets loaded and matched by the real kernel) is checked on the virtual Pi.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "base"
PLAY_VENV = ROOT / ".play-venv" / "bin"

pytestmark = pytest.mark.skipif(
    not (PLAY_VENV / "ansible").exists(), reason="run ./play.sh lint once to create .play-venv"
)

#: `ip -j addr` of a Pi on a home LAN over Wi-Fi, with IPv6 from the router (addresses
#: anonymised, layout as iproute2 6.1 prints it)
IP_ADDR = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                                   {"family": "inet6", "local": "::1", "prefixlen": 128}]},
    {"ifname": "eth0", "addr_info": []},
    {"ifname": "wlan0", "addr_info": [
        {"family": "inet", "local": "192.168.178.23", "prefixlen": 24},
        {"family": "inet6", "local": "2001:db8:5:7:dea6:32ff:fe01:203", "prefixlen": 64},
        {"family": "inet6", "local": "fd00::dea6:32ff:fe01:203", "prefixlen": 64},
        {"family": "inet6", "local": "fe80::dea6:32ff:fe01:203", "prefixlen": 64}]},
    {"ifname": "usb0", "addr_info": [{"family": "inet", "local": "10.55.0.1", "prefixlen": 29}]},
]  # fmt: skip


def rendered(tmp_path: Path, **overrides: Any) -> ModuleType:
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update(overrides)
    var_file = tmp_path / "vars.json"
    var_file.write_text(json.dumps(variables))
    dest = tmp_path / "lan_sets.py"
    result = subprocess.run(
        [str(PLAY_VENV / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={PLAY_VENV / 'python'}", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / 'lan-sets.j2'} dest={dest} mode=0755", "-e", f"@{var_file}"],
        capture_output=True, text=True, check=False, timeout=120,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    spec = importlib.util.spec_from_loader("lan_sets", importlib.machinery.SourceFileLoader("lan_sets", str(dest)))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_by_default_only_the_subnets_the_pi_is_on(tmp_path: Path) -> None:
    lan = rendered(tmp_path)
    assert lan.STATIC4 == [] and lan.STATIC6 == []
    v4, v6 = lan.connected(IP_ADDR)
    assert [str(n) for n in v4] == ["10.55.0.0/29", "192.168.178.0/24"]
    assert [str(n) for n in v6] == ["2001:db8:5:7::/64", "fd00::/64", "fe80::/64"]
    text = lan.render(v4, v6)
    assert "set lan4 { type ipv4_addr; flags interval; elements = { 10.55.0.0/29, 192.168.178.0/24 }; }" in text
    for stranger in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"):
        assert stranger not in text
    assert ipaddress.ip_address("10.1.2.3") not in v4[0], "a carrier's 10.x neighbour is not admitted"


def test_no_address_leaves_the_sets_empty_and_valid(tmp_path: Path) -> None:
    lan = rendered(tmp_path)
    v4, v6 = lan.connected([{"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8}]}])
    assert (v4, v6) == ([], [])
    assert "elements" not in lan.render(v4, v6)
    assert lan.live_update(v4, v6) == "flush set inet filter lan4\nflush set inet filter lan6\n"


def test_an_explicit_list_replaces_the_connected_subnets(tmp_path: Path) -> None:
    lan = rendered(tmp_path, base_lan_networks=["192.168.1.0/24"], base_lan_networks6=["fd12:3456::/64"])
    assert lan.STATIC4 == ["192.168.1.0/24"] and lan.STATIC6 == ["fd12:3456::/64"]
