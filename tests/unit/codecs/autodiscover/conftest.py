"""Fixtures for the Autodiscover codec tests: golden files and an offline exchangelib."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from lxml import etree

from cas.codecs.autodiscover import UserSettings

DATA = Path(__file__).resolve().parents[3] / "data" / "autodiscover"
UPDATE_GOLDEN = os.environ.get("CAS_UPDATE_GOLDEN") == "1"

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


def canonical_xml(xml: bytes) -> str:
    """C14N 2.0 without insignificant whitespace: comparable across pretty-printing."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    return etree.tostring(etree.fromstring(xml, parser), method="c14n2", strip_text=True).decode()


@pytest.fixture(scope="session")
def request_bytes() -> Callable[[str], bytes]:
    def load(name: str) -> bytes:
        return (DATA / "requests" / name).read_bytes()

    return load


@pytest.fixture(scope="session")
def golden() -> Callable[[str, bytes], None]:
    """`golden(name, actual)`: compare with tests/data/autodiscover/responses/<name> after C14N.

    CAS_UPDATE_GOLDEN=1 rewrites the file (pretty-printed) instead; review the diff by hand.
    """

    def check(name: str, actual: bytes) -> None:
        path = DATA / "responses" / name
        if UPDATE_GOLDEN:
            root = etree.fromstring(actual)
            etree.indent(root, space="  ")
            path.write_bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8") + b"\n")
        assert canonical_xml(actual) == canonical_xml(path.read_bytes())

    return check


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
