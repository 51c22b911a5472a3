"""Shared fixtures: the captured frames (fixtures/devices.json) and an in-process sim world."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sunbox.sim.peripherals import JbdSimulator, LiTimeSimulator, SimWorld

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "devices.json").read_text())
    return data


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    sim = SimWorld()
    sim.add(JbdSimulator(sim.link, password="123456"))
    sim.add(LiTimeSimulator(sim.link))
    await sim.start()
    yield sim
