"""Golden files for codec tests: request bytes to read, responses to compare after C14N.

`CAS_UPDATE_GOLDEN=1` rewrites the response files (pretty-printed) instead of comparing them;
review the diff by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lxml import etree

UPDATE_GOLDEN = os.environ.get("CAS_UPDATE_GOLDEN") == "1"


def canonical_xml(xml: bytes) -> str:
    """C14N 2.0 without insignificant whitespace: comparable across pretty-printing."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    return etree.tostring(etree.fromstring(xml, parser), method="c14n2", strip_text=True).decode()


def request_loader(data: Path) -> Callable[[str], bytes]:
    """`load(name)`: the bytes of `<data>/requests/<name>`."""

    def load(name: str) -> bytes:
        return (data / "requests" / name).read_bytes()

    return load


def golden_checker(data: Path) -> Callable[[str, bytes], None]:
    """`check(name, actual)`: `actual` equals `<data>/responses/<name>` after C14N."""

    def check(name: str, actual: bytes) -> None:
        path = data / "responses" / name
        if UPDATE_GOLDEN:
            root = etree.fromstring(actual)
            etree.indent(root, space="  ")
            path.write_bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8") + b"\n")
        assert canonical_xml(actual) == canonical_xml(path.read_bytes())

    return check
