"""Parse untrusted XML request bodies without expanding, fetching or trusting anything.

This module owns the one place where request bytes become an lxml tree. SOAP forbids document
type declarations, so any DTD is refused (`HostileXml`) before or right after parsing; entities are
never resolved, nothing is loaded from the network or the file system, and libxml2's size limits
stay on (no `huge_tree`). Anything that is not well-formed XML is a `MalformedRequest` carrying
lxml's message with its line and column.
"""

from __future__ import annotations

import re

from lxml import etree

from cas.errors import HostileXml, MalformedRequest

# Byte-order marks and the first bytes of "<" / "<?" in the encodings XML 1.0 Appendix F lists.
_SNIFF: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
    (b"<\x00", "utf-16-le"),
)

# The first markup that is neither a processing instruction nor a comment/declaration start,
# or a DOCTYPE: whichever comes first tells whether the prolog declares a DTD.
_FIRST_MARKUP = re.compile(r"<!DOCTYPE|<!ENTITY|<[^?!]")

_HOSTILE_MESSAGE = (
    "XML document type declarations (DTD) and entity declarations are not allowed in SOAP requests."
)


def _sniff_text(body: bytes) -> str:
    """The body as text, good enough to spot an ASCII DOCTYPE in any common encoding."""
    for prefix, encoding in _SNIFF:
        if body.startswith(prefix):
            return body.decode(encoding, errors="replace")
    # Every other encoding a server would accept is ASCII-compatible for markup characters.
    return body.decode("latin-1")


def declares_dtd(body: bytes) -> bool:
    """True if the prolog of `body` contains a DOCTYPE (or an entity declaration)."""
    match = _FIRST_MARKUP.search(_sniff_text(body))
    return match is not None and match.group().startswith("<!")


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers must not be shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_xml(body: bytes) -> etree._Element:
    """The root element of `body`, or `HostileXml` / `MalformedRequest`."""
    if not body or not body.strip():
        raise MalformedRequest("The request body is empty; a SOAP envelope was expected.")
    if declares_dtd(body):
        raise HostileXml(_HOSTILE_MESSAGE)
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        text = str(exc)
        if "entit" in text.lower() or "amplification" in text.lower():
            raise HostileXml(f"{_HOSTILE_MESSAGE} ({text})") from None
        raise MalformedRequest(f"The request body is not well-formed XML: {text}") from None
    except ValueError as exc:  # e.g. a str with an encoding declaration, unknown encodings
        raise MalformedRequest(f"The request body is not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise HostileXml(_HOSTILE_MESSAGE)
    return root


__all__ = ["declares_dtd", "parse_xml"]
