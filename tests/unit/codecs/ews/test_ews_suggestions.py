"""Meeting suggestions, until they exist: asked for, they are answered the way Exchange answers
when it cannot produce them (a SuggestionsResponse carrying an error), and the free/busy part of
the same request is answered in full. Every body is checked against the EWS schema."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from lxml import etree

from cas.codecs.ews import (
    parse_envelope,
    parse_get_user_availability,
    render_get_user_availability,
)
from cas.codecs.ews.soap import MESSAGES_NS, SOAP_NS, TYPES_NS
from cas.errors import InvalidValue, MailboxDataArrayTooBig
from cas.model.availability import FreeBusyView, Limits, check_limits
from cas.model.freebusy import BusyType, Event, MailboxData, Window
from tests.support.ews_schema import validate_ews_body

NS = {"s": SOAP_NS, "m": MESSAGES_NS, "t": TYPES_NS}
SUGGESTIONS = (
    "<t:SuggestionsViewOptions><t:MeetingDurationInMinutes>30</t:MeetingDurationInMinutes>"
    "<t:DetailedSuggestionsWindow><t:StartTime>2024-03-04T00:00:00</t:StartTime>"
    "<t:EndTime>2024-03-06T00:00:00</t:EndTime></t:DetailedSuggestionsWindow>"
    "</t:SuggestionsViewOptions>"
)


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin_with_suggestions(request_bytes: Callable[[str], bytes]) -> bytes:
    """The exchangelib Berlin request, with SuggestionsViewOptions after FreeBusyViewOptions."""
    text = request_bytes("exchangelib_berlin.xml").decode()
    end = text.index("</m:GetUserAvailabilityRequest>")
    return (text[:end] + SUGGESTIONS + text[end:]).encode()


def body_of(envelope: bytes) -> etree._Element:
    tree = etree.fromstring(envelope)
    body = tree.find("s:Body/m:GetUserAvailabilityResponse", NS)
    assert body is not None
    return body


def test_free_busy_and_suggestions_parse_as_both(request_bytes: Callable[[str], bytes]) -> None:
    request = parse_get_user_availability(parse_envelope(berlin_with_suggestions(request_bytes)))
    assert request.suggestions and request.free_busy
    assert request.window == Window(u(2024, 3, 4, 7), u(2024, 3, 4, 15))  # the free/busy window
    assert request.view is FreeBusyView.DETAILED_MERGED


def test_free_busy_answers_stay_whole_and_suggestions_carry_an_error(
    request_bytes: Callable[[str], bytes],
) -> None:
    request = parse_get_user_availability(parse_envelope(berlin_with_suggestions(request_bytes)))
    busy = MailboxData(events=(Event(u(2024, 3, 4, 9), u(2024, 3, 4, 10), BusyType.BUSY),))
    envelope = render_get_user_availability(request, [busy])
    validate_ews_body(envelope)
    body = body_of(envelope)
    assert [etree.QName(c).localname for c in body] == [
        "FreeBusyResponseArray",
        "SuggestionsResponse",
    ]
    merged = body.findtext("m:FreeBusyResponseArray/m:FreeBusyResponse//t:MergedFreeBusy", None, NS)
    assert merged == "00200000"  # 07:00-15:00 UTC by the hour; busy 09:00-10:00
    message = body.find("m:SuggestionsResponse/m:ResponseMessage", NS)
    assert message is not None
    assert message.get("ResponseClass") == "Error"
    assert message.findtext("m:ResponseCode", None, NS) == "ErrorMeetingSuggestionGenerationFailed"
    assert "suggestions" in (message.findtext("m:MessageText", "", NS) or "").lower()


def test_suggestions_alone_parse_with_their_own_window(
    request_bytes: Callable[[str], bytes],
) -> None:
    request = parse_get_user_availability(parse_envelope(request_bytes("suggestions_only.xml")))
    assert request.suggestions and not request.free_busy
    assert [m.address for m in request.mailboxes] == ["eve@example.com"]
    assert request.window == Window(u(2024, 3, 4), u(2024, 3, 5))


def test_suggestions_alone_get_only_a_suggestions_response(
    request_bytes: Callable[[str], bytes],
) -> None:
    request = parse_get_user_availability(parse_envelope(request_bytes("suggestions_only.xml")))
    envelope = render_get_user_availability(request, [])
    validate_ews_body(envelope)
    body = body_of(envelope)
    assert [etree.QName(c).localname for c in body] == ["SuggestionsResponse"]


def test_free_busy_alone_gets_no_suggestions_response(
    request_bytes: Callable[[str], bytes],
) -> None:
    request = parse_get_user_availability(parse_envelope(request_bytes("exchangelib_berlin.xml")))
    assert request.free_busy and not request.suggestions
    envelope = render_get_user_availability(request, [MailboxData()])
    assert [etree.QName(c).localname for c in body_of(envelope)] == ["FreeBusyResponseArray"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ("<t:SuggestionsViewOptions/>", "SuggestionsViewOptions has no DetailedSuggestionsWindow"),
        (
            "<t:SuggestionsViewOptions><t:DetailedSuggestionsWindow><t:StartTime>soon"
            "</t:StartTime><t:EndTime>2024-03-05T00:00:00</t:EndTime>"
            "</t:DetailedSuggestionsWindow></t:SuggestionsViewOptions>",
            "DetailedSuggestionsWindow/StartTime must be an xs:dateTime",
        ),
        (
            "<t:SuggestionsViewOptions><t:DetailedSuggestionsWindow><t:StartTime>"
            "2024-03-05T00:00:00</t:StartTime><t:EndTime>2024-03-04T00:00:00</t:EndTime>"
            "</t:DetailedSuggestionsWindow></t:SuggestionsViewOptions>",
            "DetailedSuggestionsWindow must start before it ends",
        ),
    ],
)
def test_broken_suggestions_options_alone_are_clear_errors(
    request_bytes: Callable[[str], bytes], options: str, words: str
) -> None:
    text = request_bytes("suggestions_only.xml").decode()
    start = text.index("<t:SuggestionsViewOptions>")
    end = text.index("</t:SuggestionsViewOptions>") + len("</t:SuggestionsViewOptions>")
    with pytest.raises(InvalidValue, match=words):
        parse_get_user_availability(parse_envelope((text[:start] + options + text[end:]).encode()))


def test_limits_of_a_suggestions_only_request(request_bytes: Callable[[str], bytes]) -> None:
    text = request_bytes("suggestions_only.xml").decode()
    request = parse_get_user_availability(parse_envelope(text.encode()))
    check_limits(request, Limits())  # one day, one mailbox, no merged interval: fine
    one = text[text.index("<t:MailboxData>") : text.index("</t:MailboxData>") + 16]
    many = parse_get_user_availability(parse_envelope(text.replace(one, one * 101).encode()))
    with pytest.raises(MailboxDataArrayTooBig):
        check_limits(many, Limits())
