"""Fixtures for the EWS codec tests: golden files, canonical XML and an offline exchangelib."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.golden import golden_checker, request_loader

DATA = Path(__file__).resolve().parents[3] / "data" / "ews"


@pytest.fixture(scope="session")
def request_bytes() -> Callable[[str], bytes]:
    return request_loader(DATA)


@pytest.fixture(scope="session")
def golden() -> Callable[[str, bytes], None]:
    """`golden(name, actual)`: compare with tests/data/ews/responses/<name> after C14N."""
    return golden_checker(DATA)


@pytest.fixture(scope="session")
def exchangelib_protocol() -> Iterator[object]:
    """An exchangelib Protocol that never touches the network (only parse/wrap are used)."""
    from exchangelib import Build, Configuration, Version
    from exchangelib.protocol import Protocol, close_connections
    from exchangelib.transport import NOAUTH

    config = Configuration(
        service_endpoint="http://127.0.0.1:9/EWS/Exchange.asmx",
        auth_type=NOAUTH,
        version=Version(build=Build(15, 1, 2507, 6)),
    )
    yield Protocol(config=config)
    close_connections()
