"""POX Autodiscover (MS-OXDSCLI): the Outlook 2006 request in, the 2006a response out.

This module owns `/autodiscover/autodiscover.xml` (docs/protocols.md §3.2). A
request names a mailbox by `EMailAddress` or `LegacyDN` and asks for the Outlook response schema
(`.../outlook/responseschema/2006a`); the answer gives the EWS URL of a node in the mailbox's own
site as `ASUrl` (availability), `EwsUrl` and `OOFUrl`, for the `EXCH` (inside) and `EXPR`
(outside) protocols, or a `redirectAddr`, or an `Error`.

Errors. POX reports errors in the body of a normal 200 answer, never as an HTTP error:
`parse_pox_request` raises `PoxError` (600 not XML / hostile / not an Autodiscover request,
601 a response schema we do not provide, e.g. the ActiveSync `mobilesync` one), and the answer
is `render_pox_error`. Namespace choice: an `Error` always sits in a `Response` of the *base*
namespace (`.../responseschema/2006`), as in the MS-OXDSCLI sample and the answer Exchange gives
to unusable requests, since for 600/601 no Outlook schema has been agreed on; for consistency
500/501/603 are shaped the same way. Clients find `Autodiscover/Response/Error/ErrorCode` either
way. `Time` is the time of the error (`HH:MM:SS.fffffff`), `Id` a CRC-32 of the node's name.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from lxml import etree

from cas.codecs.autodiscover.model import (
    Answer,
    InvalidRequest,
    NotFound,
    Redirect,
    ServerFailure,
    UserSettings,
)
from cas.codecs.ews.soap import SERVER_VERSION_INFO, xml_text
from cas.codecs.ews.xmlsafe import parse_xml
from cas.errors import MalformedRequest, RequestFault

_BASE = "http://schemas.microsoft.com/exchange/autodiscover"
REQUEST_NS = f"{_BASE}/outlook/requestschema/2006"
RESPONSE_NS = f"{_BASE}/responseschema/2006"
OUTLOOK_RESPONSE_NS = f"{_BASE}/outlook/responseschema/2006a"
MOBILESYNC_REQUEST_NS = f"{_BASE}/mobilesync/requestschema/2006"
MOBILESYNC_RESPONSE_NS = f"{_BASE}/mobilesync/responseschema/2006"

# Longest address or legacy DN accepted (RFC 5321 caps a path at 256; DNs are longer).
MAX_VALUE_LENGTH = 1024

# MS-OXDSCLI error codes and the message each is sent with.
ERROR_MESSAGES: dict[int, str] = {
    500: "The e-mail address cannot be found.",
    501: "No configuration settings are available for this address.",
    600: "Invalid Request",
    601: "The requested schema version is not supported.",
    602: "The address is not configured correctly.",
    603: "The server encountered an internal error.",
}

_VERSION = dict(SERVER_VERSION_INFO)


def server_version_hex() -> str:
    """Exchange's POX `ServerVersion`: 0b0111, 6 bits major, 6 minor, a 1 flag, 15 bits build."""
    major, minor = int(_VERSION["MajorVersion"]), int(_VERSION["MinorVersion"])
    build = int(_VERSION["MajorBuildNumber"])
    return f"{(0b0111 << 28) | (major << 22) | (minor << 16) | (1 << 15) | build:08X}"


class PoxError(RequestFault):
    """A POX request answered with an `Error`; `pox_code` is its MS-OXDSCLI code."""

    http_status = 200

    def __init__(self, pox_code: int, message: str | None = None) -> None:
        if pox_code not in ERROR_MESSAGES:
            raise ValueError(f"not a POX Autodiscover error code: {pox_code!r}")
        super().__init__(message or ERROR_MESSAGES[pox_code])
        self.pox_code = pox_code


@dataclass(frozen=True, slots=True)
class PoxRequest:
    """Who is asked about (by address, legacy DN or both) and the response schema wanted."""

    email: str | None
    legacy_dn: str | None
    acceptable_schema: str = OUTLOOK_RESPONSE_NS


# ---- reading ---------------------------------------------------------------------------------


def _canonical_ns(uri: str) -> str:
    """Documentation samples print `https://` schema URIs; treat them as the `http://` ones."""
    uri = uri.strip()
    return "http://" + uri[len("https://") :] if uri.lower().startswith("https://") else uri


def _child_text(parent: etree._Element, name: str) -> str | None:
    for child in parent:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            value = (child.text or "").strip()
            if len(value) > MAX_VALUE_LENGTH:
                raise PoxError(600, f"{name} is longer than {MAX_VALUE_LENGTH} characters.")
            return value or None
    return None


def parse_pox_request(body: bytes) -> PoxRequest:
    """The Outlook POX request in `body`, or `PoxError` 600 / 601."""
    try:
        root = parse_xml(body)
    except MalformedRequest:
        raise PoxError(600) from None
    qname = etree.QName(root)
    namespace = _canonical_ns(qname.namespace or "")
    if qname.localname != "Autodiscover":
        raise PoxError(600)
    if namespace == MOBILESYNC_REQUEST_NS:
        raise PoxError(601)
    if namespace != REQUEST_NS:
        raise PoxError(600)
    request = root.find(f"{{{qname.namespace}}}Request")
    if request is None:
        raise PoxError(600)
    schema = _child_text(request, "AcceptableResponseSchema")
    if schema is None:
        raise PoxError(600)
    if _canonical_ns(schema) != OUTLOOK_RESPONSE_NS:
        raise PoxError(601)
    email = _child_text(request, "EMailAddress")
    legacy_dn = _child_text(request, "LegacyDN")
    if email is None and legacy_dn is None:
        raise PoxError(600)
    return PoxRequest(email, legacy_dn, OUTLOOK_RESPONSE_NS)


# ---- writing ---------------------------------------------------------------------------------


def _sub(parent: etree._Element, ns: str, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, f"{{{ns}}}{name}")
    if text is not None:
        child.text = xml_text(text)
    return child


def _serialize(root: etree._Element) -> bytes:
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    return out


def _root() -> etree._Element:
    return etree.Element(f"{{{RESPONSE_NS}}}Autodiscover", nsmap={None: RESPONSE_NS})


def render_pox_error(
    code: int, message: str | None = None, *, node_name: str, now: datetime
) -> bytes:
    """`Autodiscover/Response/Error` with `code`, stamped with `now` and the node's name."""
    if code not in ERROR_MESSAGES:
        raise ValueError(f"not a POX Autodiscover error code: {code!r}")
    root = _root()
    response = _sub(root, RESPONSE_NS, "Response")
    stamp = f"{now:%H:%M:%S}.{now.microsecond * 10:07d}"
    ident = str(zlib.crc32(node_name.encode("utf-8")))
    error = _sub(response, RESPONSE_NS, "Error")
    error.set("Time", stamp)
    error.set("Id", ident)
    _sub(error, RESPONSE_NS, "ErrorCode", str(code))
    _sub(error, RESPONSE_NS, "Message", message or ERROR_MESSAGES[code])
    _sub(error, RESPONSE_NS, "DebugData")
    return _serialize(root)


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _server_dn(legacy_dn: str | None, server: str) -> str | None:
    """`/o=<org>/ou=.../cn=Servers/cn=<server>` when the user's legacy DN names the org."""
    if not legacy_dn or not legacy_dn.lower().startswith("/o="):
        return None
    org = legacy_dn.split("/")[1]
    label = server.split(".")[0].upper()
    return (
        f"/{org}/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
        f"/cn=Configuration/cn=Servers/cn={label}"
    )


def _protocol(account: etree._Element, kind: str, server: str) -> etree._Element:
    ns = OUTLOOK_RESPONSE_NS
    protocol = _sub(account, ns, "Protocol")
    _sub(protocol, ns, "Type", kind)
    _sub(protocol, ns, "Server", server)
    return protocol


def _urls(protocol: etree._Element, url: str) -> None:
    for name in ("ASUrl", "EwsUrl", "OOFUrl"):
        _sub(protocol, OUTLOOK_RESPONSE_NS, name, url)


def _render_settings(response: etree._Element, settings: UserSettings) -> None:
    ns = OUTLOOK_RESPONSE_NS
    user = _sub(response, ns, "User")
    if settings.display_name:
        _sub(user, ns, "DisplayName", settings.display_name)
    if settings.legacy_dn:
        _sub(user, ns, "LegacyDN", settings.legacy_dn)
    _sub(user, ns, "AutoDiscoverSMTPAddress", settings.address)
    if settings.deployment_id:
        _sub(user, ns, "DeploymentId", settings.deployment_id)

    account = _sub(response, ns, "Account")
    _sub(account, ns, "AccountType", "email")
    _sub(account, ns, "Action", "settings")

    internal = settings.effective_internal_ews_url
    inside = settings.server or _host(internal)
    exch = _protocol(account, "EXCH", inside)
    server_dn = _server_dn(settings.legacy_dn, inside)
    if server_dn:
        _sub(exch, ns, "ServerDN", server_dn)
    _sub(exch, ns, "ServerVersion", server_version_hex())
    _urls(exch, internal)

    expr = _protocol(account, "EXPR", _host(settings.ews_url))
    ssl = "On" if settings.ews_url.lower().startswith("https://") else "Off"
    _sub(expr, ns, "SSL", ssl)
    _urls(expr, settings.ews_url)


def render_pox(request: PoxRequest, answer: Answer, *, node_name: str, now: datetime) -> bytes:
    """The 2006a answer to `request`; errors are stamped with `now` and `node_name`."""
    if _canonical_ns(request.acceptable_schema) != OUTLOOK_RESPONSE_NS:
        return render_pox_error(601, node_name=node_name, now=now)
    if isinstance(answer, NotFound):
        return render_pox_error(500, node_name=node_name, now=now)
    if isinstance(answer, InvalidRequest):
        return render_pox_error(600, answer.message, node_name=node_name, now=now)
    if isinstance(answer, ServerFailure):
        return render_pox_error(603, answer.message, node_name=node_name, now=now)
    root = _root()
    response = etree.SubElement(
        root, f"{{{OUTLOOK_RESPONSE_NS}}}Response", nsmap={None: OUTLOOK_RESPONSE_NS}
    )
    if isinstance(answer, UserSettings):
        _render_settings(response, answer)
    elif isinstance(answer, Redirect):
        account = _sub(response, OUTLOOK_RESPONSE_NS, "Account")
        _sub(account, OUTLOOK_RESPONSE_NS, "AccountType", "email")
        _sub(account, OUTLOOK_RESPONSE_NS, "Action", "redirectAddr")
        _sub(account, OUTLOOK_RESPONSE_NS, "RedirectAddr", answer.address)
    else:
        raise TypeError(f"not an Autodiscover answer: {answer!r}")
    return _serialize(root)


__all__ = [
    "ERROR_MESSAGES",
    "MOBILESYNC_RESPONSE_NS",
    "OUTLOOK_RESPONSE_NS",
    "REQUEST_NS",
    "RESPONSE_NS",
    "PoxError",
    "PoxRequest",
    "parse_pox_request",
    "render_pox",
    "render_pox_error",
    "server_version_hex",
]
