"""Fixtures for the Autodiscover codec tests: golden files and an offline exchangelib."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from cas.codecs.autodiscover import UserSettings
from tests.support.golden import golden_checker, request_loader

DATA = Path(__file__).resolve().parents[3] / "data" / "autodiscover"

# A fixed clock and node name, so POX error stamps are reproducible.
NOW = datetime(2024, 3, 4, 16, 56, 32, 616402)
NODE = "cas-eu-1"

ANN = UserSettings(
    address="ann@contoso.test",
    ews_url="https://cas-eu-1.contoso.test/EWS/Exchange.asmx",
    display_name="Ann Example",
    legacy_dn="/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=ann",
    internal_ews_url="https://cas-eu-1.eu.contoso.internal/EWS/Exchange.asmx",
    deployment_id="6c7e3a0e-4b7d-4c8e-9a1f-0d5a3c2b1e90",
)


@pytest.fixture(scope="session")
def request_bytes() -> Callable[[str], bytes]:
    return request_loader(DATA)


@pytest.fixture(scope="session")
def golden() -> Callable[[str, bytes], None]:
    """`golden(name, actual)`: compare with tests/data/autodiscover/responses/<name> after C14N."""
    return golden_checker(DATA)


@pytest.fixture(scope="session")
def autodiscover_service() -> Iterator[object]:
    """exchangelib's own GetUserSettings service on a protocol that never touches the network."""
    from exchangelib import Configuration
    from exchangelib.autodiscover import AutodiscoverProtocol
    from exchangelib.protocol import close_connections
    from exchangelib.services import GetUserSettings
    from exchangelib.transport import NOAUTH

    protocol = AutodiscoverProtocol(
        config=Configuration(
            service_endpoint="https://contoso.test/autodiscover/autodiscover.svc",
            auth_type=NOAUTH,
        )
    )
    yield GetUserSettings(protocol=protocol)
    close_connections()
