"""The EWS ConvertId operation, used only as the version probe exchangelib sends.

Server side: this server stores no items, so every id is answered with a schema-valid per-item
`ErrorInvalidIdMalformed` (which exchangelib returns in-band instead of raising). What matters is
the envelope: its `ServerVersionInfo` header tells the client the server version
(docs/protocols.md §2).

Client side: `render_convert_id_request` writes that probe as exchangelib does (one dummy
`AlternateId`), and `parse_convert_id_response` reads the server version from the answer.
"""

from __future__ import annotations

from lxml import etree

from cas.codecs.ews.client import EwsProtocolError, answer_of
from cas.codecs.ews.soap import (
    NSMAP,
    SoapRequest,
    child,
    element,
    local_name,
    m,
    render_envelope,
    s,
    sub,
    t,
)

ID_KINDS = ("AlternateId", "AlternatePublicFolderId", "AlternatePublicFolderItemId")
MESSAGE = "Id is malformed. This server keeps no mailbox items, so ids cannot be converted."
_BUILD = ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber")


def _id_count(req: SoapRequest) -> int:
    source = child(req.element, "SourceIds")
    if source is None:
        return 0
    return sum(1 for item in source if isinstance(item.tag, str) and local_name(item) in ID_KINDS)


def render_convert_id(req: SoapRequest) -> bytes:
    """One error message per source id (at least one), in a full ConvertIdResponse envelope."""
    response = element(m("ConvertIdResponse"))
    messages = sub(response, m("ResponseMessages"))
    for _ in range(max(1, _id_count(req))):
        message = sub(messages, m("ConvertIdResponseMessage"), None, {"ResponseClass": "Error"})
        sub(message, m("MessageText"), MESSAGE)
        sub(message, m("ResponseCode"), "ErrorInvalidIdMalformed")
        sub(message, m("DescriptiveLinkKey"), "0")
    return render_envelope(response)


def render_convert_id_request(*, server_version: str = "Exchange2016") -> bytes:
    """The version probe: ConvertId of one dummy EwsId to EntryId, as exchangelib sends it."""
    env = etree.Element(s("Envelope"), nsmap=NSMAP)
    header = sub(env, s("Header"))
    sub(header, t("RequestServerVersion"), None, {"Version": server_version})
    operation = sub(sub(env, s("Body")), m("ConvertId"), None, {"DestinationFormat": "EntryId"})
    ids = sub(operation, m("SourceIds"))
    sub(ids, t("AlternateId"), None, {"Format": "EwsId", "Id": "DUMMY", "Mailbox": "DUMMY"})
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def parse_convert_id_response(body: bytes) -> str:
    """The server version an answer to the probe names, e.g. "Exchange2016 (15.1.2507.6)".

    The per-id results do not matter; `EwsFaultError` for a fault, `EwsProtocolError` when
    the answer is not a ConvertIdResponse or has no `ServerVersionInfo` header."""
    root, _ = answer_of(body, "ConvertIdResponse")
    header = root.find(s("Header"))
    info = None if header is None else header.find(t("ServerVersionInfo"))
    if info is None:
        raise EwsProtocolError("The ConvertIdResponse has no ServerVersionInfo header.")
    build = ".".join(info.get(name, "?") for name in _BUILD)
    version = info.get("Version")
    return f"{version} ({build})" if version else build


__all__ = ["parse_convert_id_response", "render_convert_id", "render_convert_id_request"]
