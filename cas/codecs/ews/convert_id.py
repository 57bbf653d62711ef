"""The EWS ConvertId operation, answered only as the version probe exchangelib uses it for.

This server stores no items, so every id is answered with a schema-valid per-item
`ErrorInvalidIdMalformed` (which exchangelib returns in-band instead of raising). What matters is
the envelope: its `ServerVersionInfo` header tells the client the server version
(docs/protocols.md §2).
"""

from __future__ import annotations

from cas.codecs.ews.soap import SoapRequest, child, element, local_name, m, render_envelope, sub

ID_KINDS = ("AlternateId", "AlternatePublicFolderId", "AlternatePublicFolderItemId")
MESSAGE = "Id is malformed. This server keeps no mailbox items, so ids cannot be converted."


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


__all__ = ["render_convert_id"]
