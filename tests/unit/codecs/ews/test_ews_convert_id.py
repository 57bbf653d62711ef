"""ConvertId: per-id errors exchangelib returns in-band, in an envelope that names the version."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from cas.codecs.ews import parse_envelope, render_convert_id
from cas.codecs.ews.soap import MESSAGES_NS, SOAP_NS, TYPES_NS

NS = {"s": SOAP_NS, "m": MESSAGES_NS, "t": TYPES_NS}


def convert_request(ids: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><s:Body>'
        f'<m:ConvertId DestinationFormat="EntryId">{ids}</m:ConvertId></s:Body></s:Envelope>'
    ).encode()


def test_golden(
    request_bytes: Callable[[str], bytes], golden: Callable[[str, bytes], None]
) -> None:
    golden("convert_id.xml", render_convert_id(parse_envelope(request_bytes("convert_id.xml"))))


@pytest.mark.parametrize(
    ("ids", "count"),
    [
        ('<m:SourceIds><t:AlternateId Format="EwsId" Id="A" Mailbox="a@x"/></m:SourceIds>', 1),
        (
            '<m:SourceIds><t:AlternateId Format="EwsId" Id="A" Mailbox="a@x"/>'
            '<t:AlternatePublicFolderId Format="EwsId" FolderId="F"/>'
            '<t:AlternateId Format="EwsId" Id="B" Mailbox="b@x"/></m:SourceIds>',
            3,
        ),
        ("<m:SourceIds/>", 1),
        ("", 1),
    ],
)
def test_one_error_message_per_id(ids: str, count: int) -> None:
    data = render_convert_id(parse_envelope(convert_request(ids)))
    messages = etree.fromstring(data).xpath("//m:ConvertIdResponseMessage", namespaces=NS)
    assert len(messages) == count
    for message in messages:
        assert message.get("ResponseClass") == "Error"
        assert message.findtext("m:ResponseCode", namespaces=NS) == "ErrorInvalidIdMalformed"
        assert message.findtext("m:DescriptiveLinkKey", namespaces=NS) == "0"


def test_exchangelib_learns_the_version_and_gets_the_error_in_band(
    request_bytes: Callable[[str], bytes], exchangelib_protocol: object
) -> None:
    from exchangelib.errors import ErrorInvalidIdMalformed
    from exchangelib.services import ConvertId
    from exchangelib.version import Build, Version

    data = render_convert_id(parse_envelope(request_bytes("convert_id.xml")))
    (result,) = list(ConvertId(protocol=exchangelib_protocol).parse(data))
    assert isinstance(result, ErrorInvalidIdMalformed)
    header = etree.fromstring(data).find(f"{{{SOAP_NS}}}Header")
    version = Version.from_soap_header("Exchange2016", header)
    assert version.build == Build(15, 1, 2507, 6) and version.build >= Build(14, 0)


def test_the_probe_a_client_sends_is_read_by_the_server_and_its_answer_names_the_version() -> None:
    from cas.codecs.ews.convert_id import parse_convert_id_response, render_convert_id_request

    probe = parse_envelope(render_convert_id_request())
    assert probe.operation == "ConvertId" and probe.server_version == "Exchange2016"
    ids = probe.element.xpath("m:SourceIds/t:AlternateId", namespaces=NS)
    assert [(i.get("Format"), i.get("Id")) for i in ids] == [("EwsId", "DUMMY")]
    assert parse_convert_id_response(render_convert_id(probe)) == "Exchange2016 (15.1.2507.6)"


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (b"not xml", "EwsProtocolError", "well-formed"),
        (
            f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}"><s:Body>'
            "<m:ConvertIdResponse/></s:Body></s:Envelope>".encode(),
            "EwsProtocolError",
            "no ServerVersionInfo",
        ),
        (
            f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}"><s:Body>'
            "<m:GetServerTimeZonesResponse/></s:Body></s:Envelope>".encode(),
            "EwsProtocolError",
            "Expected a ConvertIdResponse",
        ),
        (
            f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault><faultcode>a:ErrorServerBusy'
            "</faultcode><faultstring>later</faultstring></s:Fault></s:Body></s:Envelope>".encode(),
            "EwsFaultError",
            "ErrorServerBusy: later",
        ),
    ],
)
def test_an_unusable_answer_to_the_probe_says_why(body: bytes, error: str, words: str) -> None:
    from cas.codecs.ews import client
    from cas.codecs.ews.convert_id import parse_convert_id_response

    with pytest.raises(getattr(client, error), match=words):
        parse_convert_id_response(body)
