"""The SOAP 1.1 envelope of EWS: reading requests, writing responses and faults.

This module owns the namespaces, the `SoapRequest` value (which operation, which server version,
which time-zone context), the `ServerVersionInfo` header every answer carries (exchangelib learns
the server version from it) and the SOAP fault shape exchangelib parses (docs/protocols.md
§1). The per-operation codecs build on its small element helpers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lxml import etree

from cas.codecs.ews.xmlsafe import parse_xml
from cas.errors import InvalidValue, MalformedRequest, RequestFault

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"
XML_NS = "http://www.w3.org/XML/1998/namespace"

NSMAP = {"s": SOAP_NS, "m": MESSAGES_NS, "t": TYPES_NS}

# What this server claims to be (docs/protocols.md §2: build >= 14.0, a Version exchangelib knows).
SERVER_VERSION_INFO = (
    ("MajorVersion", "15"),
    ("MinorVersion", "1"),
    ("MajorBuildNumber", "2507"),
    ("MinorBuildNumber", "6"),
    ("Version", "Exchange2016"),
)


def s(name: str) -> str:
    return f"{{{SOAP_NS}}}{name}"


def m(name: str) -> str:
    return f"{{{MESSAGES_NS}}}{name}"


def t(name: str) -> str:
    return f"{{{TYPES_NS}}}{name}"


# Characters XML 1.0 cannot carry at all; backends' text (subjects, locations) may contain them.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """`value` without the characters XML 1.0 forbids."""
    return _NOT_XML.sub("", value)


def element(tag: str, attrib: dict[str, str] | None = None) -> etree._Element:
    """A new root element declaring the s/m/t prefixes."""
    return etree.Element(tag, attrib or {}, nsmap=NSMAP)


def sub(
    parent: etree._Element,
    tag: str,
    text: str | None = None,
    attrib: dict[str, str] | None = None,
) -> etree._Element:
    """Append a child element with optional text and attributes."""
    child = etree.SubElement(parent, tag, attrib or {})
    if text is not None:
        child.text = xml_text(text)
    return child


# ---- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SoapRequest:
    """One parsed EWS request: the Body's first element and what the SOAP header said."""

    operation: str
    element: etree._Element
    server_version: str | None = None
    tz_context: str | None = None


@functools.lru_cache(maxsize=512)
def _either(name: str) -> tuple[str, str]:
    return t(name), m(name)


def children(parent: etree._Element, name: str) -> Iterator[etree._Element]:
    """Child elements called `name` in the types or messages namespace (clients mix them up)."""
    return parent.iterchildren(*_either(name))  # type: ignore[no-any-return]


def child(parent: etree._Element, name: str) -> etree._Element | None:
    return next(children(parent, name), None)


def require(parent: etree._Element, name: str) -> etree._Element:
    found = child(parent, name)
    if found is None:
        raise InvalidValue(f"{local_name(parent)} has no {name} element.")
    return found


def text_of(parent: etree._Element, name: str) -> str | None:
    """The stripped text of child `name`, or None if the child is absent."""
    found = child(parent, name)
    if found is None:
        return None
    return (found.text or "").strip()


def local_name(elem: etree._Element) -> str:
    name: str = etree.QName(elem).localname
    return name


def parse_envelope(body: bytes) -> SoapRequest:
    """The operation element of a SOAP 1.1 request, or `MalformedRequest` / `HostileXml`."""
    root = parse_xml(body)
    if root.tag == f"{{{SOAP12_NS}}}Envelope":
        raise MalformedRequest(
            f"SOAP 1.2 envelopes are not supported; EWS speaks SOAP 1.1 ({SOAP_NS})."
        )
    if root.tag != s("Envelope"):
        raise MalformedRequest(
            f"Expected a SOAP 1.1 Envelope ({{{SOAP_NS}}}Envelope) but the document element "
            f"is {root.tag}."
        )
    body_elem = root.find(s("Body"))
    if body_elem is None:
        raise MalformedRequest("The SOAP Envelope has no Body.")
    operation = next((c for c in body_elem if isinstance(c.tag, str)), None)
    if operation is None:
        raise MalformedRequest("The SOAP Body is empty; it should hold one EWS operation.")
    server_version = tz_context = None
    header = root.find(s("Header"))
    if header is not None:
        version_elem = header.find(t("RequestServerVersion"))
        if version_elem is not None:
            server_version = (version_elem.get("Version") or "").strip() or None
        tz_elem = header.find(f"{t('TimeZoneContext')}/{t('TimeZoneDefinition')}")
        if tz_elem is not None:
            tz_context = (tz_elem.get("Id") or "").strip() or None
    return SoapRequest(local_name(operation), operation, server_version, tz_context)


# ---- writing ---------------------------------------------------------------------------------


def _envelope(server_version_header: bool) -> tuple[etree._Element, etree._Element]:
    env = etree.Element(s("Envelope"), nsmap=NSMAP)
    if server_version_header:
        header = etree.SubElement(env, s("Header"))
        info = etree.SubElement(header, t("ServerVersionInfo"))
        for name, value in SERVER_VERSION_INFO:
            info.set(name, value)
    return env, etree.SubElement(env, s("Body"))


def _serialize(env: etree._Element) -> bytes:
    # No namespace clean-up: faultcode carries a QName in its text ("a:Code").
    out: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
    return out


def render_envelope(
    body_element: etree._Element,
    *,
    server_version_header: bool = True,
    extra_headers: Sequence[etree._Element] = (),
) -> bytes:
    """`body_element` inside a SOAP 1.1 envelope, utf-8 with an XML declaration."""
    env, body = _envelope(server_version_header)
    if extra_headers:
        header = env.find(s("Header"))
        if header is None:
            header = etree.Element(s("Header"))
            env.insert(0, header)
        header.extend(extra_headers)
    body.append(body_element)
    return _serialize(env)


def render_fault_code(code: str, message: str, back_off_ms: int | None = None) -> bytes:
    """A SOAP 1.1 fault in the shape exchangelib turns into the exception named `code`; with
    `back_off_ms`, the `BackOffMilliseconds` an ErrorServerBusy fault tells clients to wait."""
    env, body = _envelope(True)
    fault = etree.SubElement(body, s("Fault"))
    faultcode = etree.SubElement(fault, "faultcode", nsmap={"a": TYPES_NS})
    faultcode.text = f"a:{code}"
    faultstring = sub(fault, "faultstring", message)
    faultstring.set(f"{{{XML_NS}}}lang", "en-US")
    detail = etree.SubElement(fault, "detail")
    for name, text in (("ResponseCode", code), ("Message", message)):
        item = etree.SubElement(detail, f"{{{ERRORS_NS}}}{name}", nsmap={"e": ERRORS_NS})
        item.text = xml_text(text)
    if back_off_ms is not None:
        holder = etree.SubElement(detail, t("MessageXml"), nsmap={"t": TYPES_NS})
        value = etree.SubElement(holder, t("Value"), Name="BackOffMilliseconds")
        value.text = str(back_off_ms)
    return _serialize(env)


def render_fault(fault: RequestFault) -> bytes:
    """The SOAP fault for a request fault (its EWS code, message and any back-off)."""
    return render_fault_code(fault.code, fault.message, fault.back_off_ms)


__all__ = [
    "ERRORS_NS",
    "MESSAGES_NS",
    "NSMAP",
    "SERVER_VERSION_INFO",
    "SOAP_NS",
    "TYPES_NS",
    "SoapRequest",
    "child",
    "children",
    "element",
    "local_name",
    "m",
    "parse_envelope",
    "render_envelope",
    "render_fault",
    "render_fault_code",
    "require",
    "s",
    "sub",
    "t",
    "text_of",
    "xml_text",
]
