"""Fixtures for the EWS codec tests: golden files, canonical XML and an offline exchangelib."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

DATA = Path(__file__).resolve().parents[3] / "data" / "ews"
UPDATE_GOLDEN = os.environ.get("CAS_UPDATE_GOLDEN") == "1"


def canonical_xml(xml: bytes) -> str:
    """Exclusive C14N 2.0 without insignificant whitespace: comparable across pretty-printing."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    root = etree.fromstring(xml, parser)
    return etree.tostring(root, method="c14n2", strip_text=True).decode()


@pytest.fixture(scope="session")
def request_bytes() -> Callable[[str], bytes]:
    def load(name: str) -> bytes:
        return (DATA / "requests" / name).read_bytes()

    return load


@pytest.fixture(scope="session")
def golden() -> Callable[[str, bytes], None]:
    """`golden(name, actual)`: compare with tests/data/ews/responses/<name> after C14N.

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
