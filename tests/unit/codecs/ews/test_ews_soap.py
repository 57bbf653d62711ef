"""The SOAP 1.1 envelope: requests read, the ServerVersionInfo header, faults exchangelib reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from cas.codecs.ews import parse_envelope, render_envelope, render_fault
from cas.codecs.ews.soap import (
    ERRORS_NS,
    MESSAGES_NS,
    SOAP_NS,
    TYPES_NS,
    element,
    m,
    render_fault_code,
    sub,
    t,
)
from cas.errors import (
    HostileXml,
    InvalidFreeBusyViewType,
    InvalidMergedInterval,
    InvalidTimeInterval,
    InvalidValue,
    MailboxDataArrayEmpty,
    MailboxDataArrayTooBig,
    MalformedRequest,
    RequestFault,
    TimeIntervalTooBig,
    UnknownOperation,
)

ENVELOPE = (
    f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}">'
    "{header}<s:Body>{body}</s:Body></s:Envelope>"
)


def envelope(body: str, header: str = "") -> bytes:
    return ENVELOPE.format(header=header, body=body).encode()


def test_exchangelib_request_names_operation_version_and_zone(
    request_bytes: Callable[[str], bytes],
) -> None:
    req = parse_envelope(request_bytes("exchangelib_berlin.xml"))
    assert req.operation == "GetUserAvailabilityRequest"
    assert req.element.tag == m("GetUserAvailabilityRequest")
    assert req.server_version == "Exchange2016"
    assert req.tz_context == "W. Europe Standard Time"


@pytest.mark.parametrize(
    ("name", "operation", "version"),
    [
        ("davmail_utc.xml", "GetUserAvailabilityRequest", "Exchange2007_SP1"),
        ("get_server_time_zones.xml", "GetServerTimeZones", "Exchange2016"),
        ("convert_id.xml", "ConvertId", "Exchange2016"),
        ("suggestions_only.xml", "GetUserAvailabilityRequest", None),
    ],
)
def test_operation_is_the_first_body_element(
    request_bytes: Callable[[str], bytes], name: str, operation: str, version: str | None
) -> None:
    req = parse_envelope(request_bytes(name))
    assert (req.operation, req.server_version, req.tz_context) == (operation, version, None)


def test_body_whitespace_and_comments_before_the_operation_are_skipped() -> None:
    req = parse_envelope(envelope("\n  <!-- hi -->\n  <m:ResolveNames/>"))
    assert req.operation == "ResolveNames"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            "SOAP 1.2",
        ),
        (b"<Envelope><Body/></Envelope>", "SOAP 1.1 Envelope"),
        (f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Header/></s:Envelope>'.encode(), "no Body"),
        (envelope(""), "Body is empty"),
        (envelope("  <!-- only a comment -->  "), "Body is empty"),
        (b"", "empty"),
        (b"<s:Envelope", "not well-formed"),
    ],
    ids=["soap12", "no-namespace", "no-body", "empty-body", "comment-body", "no-bytes", "broken"],
)
def test_wrong_envelopes_are_malformed_requests(body: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message) as caught:
        parse_envelope(body)
    assert caught.value.soap_status == 400


def test_a_dtd_in_the_envelope_is_hostile() -> None:
    with pytest.raises(HostileXml):
        parse_envelope(b"<!DOCTYPE s:Envelope>" + envelope("<m:ConvertId/>"))


def test_blank_header_values_count_as_absent() -> None:
    header = (
        '<s:Header><t:RequestServerVersion Version=" "/>'
        '<t:TimeZoneContext><t:TimeZoneDefinition Id=""/></t:TimeZoneContext></s:Header>'
    )
    req = parse_envelope(envelope("<m:ConvertId/>", header))
    assert req.server_version is None and req.tz_context is None


def parse_plain(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def test_render_envelope_writes_the_server_version_header() -> None:
    body = element(m("ConvertIdResponse"))
    sub(body, m("ResponseMessages"))
    data = render_envelope(body)
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = parse_plain(data)
    info = root.find(f"{{{SOAP_NS}}}Header/{t('ServerVersionInfo')}")
    assert info is not None
    assert dict(info.attrib) == {
        "MajorVersion": "15",
        "MinorVersion": "1",
        "MajorBuildNumber": "2507",
        "MinorBuildNumber": "6",
        "Version": "Exchange2016",
    }
    body_elem = root.find(f"{{{SOAP_NS}}}Body")
    assert body_elem is not None and [c.tag for c in body_elem] == [m("ConvertIdResponse")]


def test_render_envelope_without_header() -> None:
    root = parse_plain(render_envelope(element(m("X")), server_version_header=False))
    assert root.find(f"{{{SOAP_NS}}}Header") is None


def test_exchangelib_reads_the_version_from_the_header() -> None:
    from exchangelib.version import Build, Version

    root = parse_plain(render_envelope(element(m("ConvertIdResponse"))))
    version = Version.from_soap_header("Exchange2016", root.find(f"{{{SOAP_NS}}}Header"))
    assert version.build == Build(15, 1, 2507, 6)
    assert version.api_version == "Exchange2016"


def test_fault_has_the_shape_exchangelib_parses() -> None:
    fault = InvalidTimeInterval(
        "The time duration specified for FreeBusyViewOptions.TimeWindow is invalid."
    )
    root = parse_plain(render_fault(fault))
    assert root.find(f"{{{SOAP_NS}}}Header/{t('ServerVersionInfo')}") is not None
    body = root.find(f"{{{SOAP_NS}}}Body")
    assert body is not None and len(body) == 1
    node = body[0]
    assert node.tag == f"{{{SOAP_NS}}}Fault"
    assert [c.tag for c in node] == ["faultcode", "faultstring", "detail"]
    faultcode, faultstring, detail = node
    assert faultcode.text == "a:ErrorInvalidTimeInterval"
    assert faultcode.nsmap["a"] == TYPES_NS
    assert faultstring.get("{http://www.w3.org/XML/1998/namespace}lang") == "en-US"
    assert faultstring.text == fault.message
    assert [c.tag for c in detail] == [f"{{{ERRORS_NS}}}ResponseCode", f"{{{ERRORS_NS}}}Message"]
    assert [c.text for c in detail] == ["ErrorInvalidTimeInterval", fault.message]


FAULTS: list[RequestFault] = [
    InvalidTimeInterval("The time duration specified for TimeWindow is invalid."),
    MailboxDataArrayEmpty("MailboxDataArray has no mailboxes."),
    MailboxDataArrayTooBig("allowed size = 100; actual size = 101."),
    TimeIntervalTooBig("The allowed limit = 62 days; the actual limit = 63 days."),
    InvalidMergedInterval("MergedFreeBusyIntervalInMinutes must be between 5 and 1440; got 1."),
    InvalidFreeBusyViewType("RequestedView 'None' is not valid in a request."),
    InvalidValue("TimeWindow/StartTime must be an xs:dateTime, got 'x'."),
    MalformedRequest("The request body is not well-formed XML."),
    UnknownOperation("The operation 'FindItem' is not supported."),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[type(f).__name__ for f in FAULTS])
def test_exchangelib_raises_the_matching_exception(fault: RequestFault) -> None:
    import exchangelib.errors
    from exchangelib.services import GetUserAvailability

    root = parse_plain(render_fault(fault))
    node = root.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    expected = getattr(exchangelib.errors, fault.code)
    with pytest.raises(expected) as caught:
        GetUserAvailability._raise_soap_errors(fault=node)
    assert fault.message in str(caught.value)


def test_fault_text_drops_characters_xml_cannot_carry() -> None:
    root = parse_plain(render_fault_code("ErrorInvalidRequest", "bad\x00 byte\x1b here"))
    assert root.findtext(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault/faultstring") == "bad byte here"


def test_fault_golden(golden: Callable[[str, bytes], None]) -> None:
    fault = InvalidTimeInterval(
        "The time duration specified for FreeBusyViewOptions.TimeWindow is invalid."
    )
    golden("fault_invalid_time_interval.xml", render_fault(fault))


def test_public_api() -> None:
    import cas.codecs.ews as ews

    for name in (
        "parse_envelope",
        "SoapRequest",
        "render_envelope",
        "render_fault",
        "parse_get_user_availability",
        "render_get_user_availability",
        "parse_get_server_time_zones",
        "render_get_server_time_zones",
        "render_convert_id",
        "RuleTimeZone",
        "windows_to_iana",
        "iana_to_windows",
    ):
        assert name in ews.__all__ and hasattr(ews, name)
