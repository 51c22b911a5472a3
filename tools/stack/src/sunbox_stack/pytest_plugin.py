"""pytest fixtures for the real servers (session scope): ``mosquitto``, ``influxdb``, ``grafana``.

Registered through the ``pytest11`` entry point of the ``sunbox-stack`` package. A server
that cannot be provided fails the tests that need it with the provisioning message;
Grafana, which cannot be built here, skips them with the reason instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import provision
from .provision import StackError
from .servers import Grafana, InfluxDB, Mosquitto, free_port


def _fail(exc: StackError) -> None:
    pytest.fail(f"test stack: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    try:
        server = Mosquitto("mosquitto", free_port(), Path(tmp_path_factory.mktemp("mosquitto")))
        server.start()
    except StackError as exc:
        _fail(exc)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    try:
        server = InfluxDB("influxd", free_port(), Path(tmp_path_factory.mktemp("influxdb")))
        server.start()
    except StackError as exc:
        _fail(exc)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grafana(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grafana]:
    try:
        home = provision.grafana_home()
    except StackError as exc:
        _fail(exc)
    if home is None:
        pytest.skip(provision.GRAFANA_MISSING)
    server = Grafana("grafana", free_port(), Path(tmp_path_factory.mktemp("grafana")), home=home)
    try:
        server.start()
    except StackError as exc:
        _fail(exc)
    yield server
    server.stop()
