"""The client side of GetUserAvailability, checked against the server codec in both directions.

A request rendered here must be read back by the server codec as the same question; a response
rendered by the server codec must be read back here as the same answer, in every time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from cas.codecs.ews import (
    parse_envelope,
    parse_get_user_availability,
    render_fault_code,
    render_get_user_availability,
)
from cas.codecs.ews.client import (
    EwsFaultError,
    EwsProtocolError,
    parse_get_user_availability_response,
    render_get_user_availability_request,
)
from cas.codecs.ews.soap import MESSAGES_NS, SOAP_NS, TYPES_NS
from cas.codecs.ews.tzdb import rules_for_year
from cas.codecs.ews.tzrules import RuleTimeZone
from cas.errors import MailboxError
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import (
    BusyType,
    Event,
    EventDetails,
    MailboxData,
    Window,
    WorkingHours,
    WorkingPeriod,
    merged_free_busy,
)
from tests.support.ews_schema import validate_ews_body
from tests.support.golden import canonical_xml
from tests.unit.codecs.ews.conftest import DATA

UTC = UTC
NS = {"s": SOAP_NS, "m": MESSAGES_NS, "t": TYPES_NS}


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ask(
    tz: tzinfo,
    start: datetime,
    end: datetime,
    addresses: tuple[str, ...] = ("ann@contoso.test",),
    interval: int = 60,
    view: FreeBusyView = FreeBusyView.DETAILED_MERGED,
) -> AvailabilityRequest:
    return AvailabilityRequest(
        tuple(MailboxQuery(a) for a in addresses), Window(start, end), interval, view, tz
    )


def server_round_trip(
    request: AvailabilityRequest, results: list[MailboxData | MailboxError]
) -> list[MailboxData | MailboxError]:
    """Client request → server codec → server response → client parser."""
    wire = render_get_user_availability_request(request)
    seen = parse_get_user_availability(parse_envelope(wire))
    return parse_get_user_availability_response(
        render_get_user_availability(seen, results), request
    )


# ---- the request -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tz",
    [ZoneInfo("Europe/Berlin"), ZoneInfo("Australia/Sydney"), ZoneInfo("UTC"), UTC,
     timezone(timedelta(hours=5, minutes=30)), RuleTimeZone(rules_for_year("America/New_York", 2024))],
    ids=["berlin", "sydney", "utc-zoneinfo", "utc-fixed", "fixed+0530", "rule-new-york"],
)  # fmt: skip
def test_the_server_reads_the_request_as_the_same_question(tz: tzinfo) -> None:
    request = AvailabilityRequest(
        (MailboxQuery("ann@contoso.test"),
         MailboxQuery("room@contoso.test", "Room", True, "SMTP", "Room 1")),
        Window(u(2024, 3, 30, 23), u(2024, 4, 8, 22)), 30, FreeBusyView.FREE_BUSY_MERGED, tz,
    )  # fmt: skip
    wire = render_get_user_availability_request(request, server_version="Exchange2013")
    validate_ews_body(wire)
    seen = parse_get_user_availability(parse_envelope(wire))
    assert seen.mailboxes == request.mailboxes
    assert seen.window == request.window
    assert (seen.interval_minutes, seen.view, seen.server_version) == (
        30,
        request.view,
        "Exchange2013",
    )
    for moment in (u(2024, 1, 15), u(2024, 7, 15), request.window.start, request.window.end):
        assert (
            seen.tz.utcoffset(moment.astimezone(tz).replace(tzinfo=None))
            == moment.astimezone(tz).utcoffset()
        )


def test_berlin_request_has_exchangelibs_time_zone_and_utc_window() -> None:
    tz = ZoneInfo("Europe/Berlin")
    wire = render_get_user_availability_request(
        ask(tz, datetime(2024, 3, 4, 8, tzinfo=tz), datetime(2024, 3, 4, 16, tzinfo=tz))
    )
    ours, theirs = (
        etree.fromstring(wire),
        etree.parse(str(DATA / "requests" / "exchangelib_berlin.xml")),
    )
    path = "s:Body/m:GetUserAvailabilityRequest/t:TimeZone"
    assert canonical_xml(etree.tostring(ours.find(path, NS))) == canonical_xml(
        etree.tostring(theirs.getroot().find(path, NS))
    )
    assert (
        ours.find("s:Header/t:TimeZoneContext/t:TimeZoneDefinition", NS).get("Id")
        == "W. Europe Standard Time"
    )
    assert ours.findtext(".//t:StartTime", namespaces=NS) == "2024-03-04T07:00:00Z"
    assert ours.findtext(".//t:EndTime", namespaces=NS) == "2024-03-04T15:00:00Z"
    assert ours.findtext(".//t:ExcludeConflicts", namespaces=NS) == "0"
    assert ours.findtext(".//t:RoutingType", namespaces=NS) == "SMTP"


def test_a_rule_zone_is_sent_with_its_own_rules_and_no_context() -> None:
    tz = RuleTimeZone(rules_for_year("Australia/Sydney", 2024))
    wire = render_get_user_availability_request(ask(tz, u(2024, 4, 6), u(2024, 4, 8)))
    assert etree.fromstring(wire).find("s:Header/t:TimeZoneContext", NS) is None
    assert parse_get_user_availability(parse_envelope(wire)).tz == tz


def test_requested_view_none_is_refused() -> None:
    with pytest.raises(ValueError, match="None"):
        render_get_user_availability_request(
            ask(UTC, u(2024, 3, 4), u(2024, 3, 5), view=FreeBusyView.NONE)
        )


# ---- round trips -----------------------------------------------------------------------------

BERLIN, SYDNEY = ZoneInfo("Europe/Berlin"), ZoneInfo("Australia/Sydney")
DETAILS = EventDetails("id-1", "Design review", "Room 1", is_meeting=True, is_reminder_set=True)


@pytest.mark.parametrize(
    ("tz", "start", "end", "events"),
    [
        pytest.param(BERLIN, u(2024, 3, 4, 7), u(2024, 3, 4, 15), (
            Event(u(2024, 3, 4, 8), u(2024, 3, 4, 9), BusyType.BUSY, DETAILS),
            Event(u(2024, 3, 4, 13, 30), u(2024, 3, 4, 14), BusyType.TENTATIVE),
        ), id="berlin-day"),
        # CET → CEST on 31 March 02:00 local: events either side and one across the change
        pytest.param(BERLIN, u(2024, 3, 29, 23), u(2024, 4, 1, 22), (
            Event(u(2024, 3, 30, 8), u(2024, 3, 30, 9), BusyType.BUSY, DETAILS),
            Event(u(2024, 3, 30, 23, 30), u(2024, 3, 31, 2), BusyType.OOF),
            Event(u(2024, 4, 1, 7), u(2024, 4, 1, 8), BusyType.WORKING_ELSEWHERE),
        ), id="berlin-dst-spring"),
        # AEDT → AEST on 7 April 03:00 local (16:00Z on the 6th)
        pytest.param(SYDNEY, u(2024, 4, 5, 13), u(2024, 4, 8, 14), (
            Event(u(2024, 4, 5, 22), u(2024, 4, 5, 23), BusyType.BUSY, DETAILS),
            Event(u(2024, 4, 6, 14), u(2024, 4, 6, 18), BusyType.OOF),
            Event(u(2024, 4, 7, 23), u(2024, 4, 8, 0), BusyType.TENTATIVE),
        ), id="sydney-dst-autumn"),
        pytest.param(ZoneInfo("UTC"), u(2024, 7, 1), u(2024, 7, 2), (
            Event(u(2024, 6, 30, 22), u(2024, 7, 1, 1), BusyType.BUSY),
            Event(u(2024, 7, 1, 12), u(2024, 7, 1, 12), BusyType.BUSY, DETAILS),
            Event(u(2024, 7, 1, 23), u(2024, 7, 2, 3), BusyType.OOF),
        ), id="utc-edges"),
    ],
)  # fmt: skip
def test_events_merged_and_errors_survive_the_round_trip(
    tz: tzinfo, start: datetime, end: datetime, events: tuple[Event, ...]
) -> None:
    request = ask(tz, start, end, ("ann@contoso.test", "bob@contoso.test", "eve@contoso.test"), 30)
    results: list[MailboxData | MailboxError] = [
        MailboxData(events=events),
        MailboxError.of("ErrorMailRecipientNotFound", "bob@contoso.test"),
        MailboxError.of("ErrorFreeBusyGenerationFailed", "backend down", site="apac"),
    ]
    ann, bob, eve = server_round_trip(request, results)
    assert isinstance(ann, MailboxData)
    assert ann.events == events
    assert ann.merged == merged_free_busy(events, request.window, 30)
    assert (ann.merged_only, ann.coverage) == (False, None)
    assert bob == results[1]
    assert eve == results[2]  # the site came back from MessageXml, not glued to the text


def test_free_busy_views_carry_no_details_and_merged_only_only_the_string() -> None:
    events = (Event(u(2024, 3, 4, 8), u(2024, 3, 4, 9), BusyType.BUSY, DETAILS),)
    request = ask(UTC, u(2024, 3, 4), u(2024, 3, 5), view=FreeBusyView.FREE_BUSY)
    [data] = server_round_trip(request, [MailboxData(events=events)])
    assert isinstance(data, MailboxData)
    assert [(e.start, e.end, e.busy_type, e.details) for e in data.events] == [
        (u(2024, 3, 4, 8), u(2024, 3, 4, 9), BusyType.BUSY, None)
    ]
    assert data.merged is None
    [legacy] = server_round_trip(
        request, [MailboxData(merged="0" * 8 + "2" + "0" * 15, merged_only=True)]
    )
    assert isinstance(legacy, MailboxData)
    assert legacy.merged_only and legacy.merged == "0" * 8 + "2" + "0" * 15 and legacy.events == ()


@pytest.mark.parametrize(
    ("owner_zone", "named"),
    [("Europe/Berlin", "Europe/Berlin"), ("Asia/Tokyo", "Etc/GMT-9"), ("UTC", "UTC"),
     ("America/New_York", "America/New_York")],
)  # fmt: skip
def test_working_hours_come_back_in_a_zone_that_can_be_named(owner_zone: str, named: str) -> None:
    hours = WorkingHours(owner_zone, (WorkingPeriod(("Monday", "Friday"), 480, 1020),))
    request = ask(ZoneInfo("Europe/Berlin"), u(2024, 3, 4), u(2024, 3, 5))
    [data] = server_round_trip(request, [MailboxData(working_hours=hours)])
    assert isinstance(data, MailboxData)
    assert data.working_hours == WorkingHours(named, hours.periods)


def test_private_details_stay_private() -> None:
    secret = Event(u(2024, 3, 4, 8), u(2024, 3, 4, 9), BusyType.BUSY, EventDetails(is_private=True))
    [data] = server_round_trip(
        ask(UTC, u(2024, 3, 4), u(2024, 3, 5)), [MailboxData(events=(secret,))]
    )
    assert isinstance(data, MailboxData) and data.events == (secret,)


# ---- hand-written answers --------------------------------------------------------------------


def envelope(*responses: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><s:Body>'
        "<m:GetUserAvailabilityResponse><m:FreeBusyResponseArray>"
        + "".join(f"<m:FreeBusyResponse>{r}</m:FreeBusyResponse>" for r in responses)
        + "</m:FreeBusyResponseArray></m:GetUserAvailabilityResponse></s:Body></s:Envelope>"
    ).encode()


OK = '<m:ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:ResponseMessage>'


def view(content: str, kind: str = "FreeBusy") -> str:
    return f"{OK}<m:FreeBusyView><t:FreeBusyViewType>{kind}</t:FreeBusyViewType>{content}</m:FreeBusyView>"


def event(start: str, end: str, busy: str = "Busy") -> str:
    return (f"<t:CalendarEventArray><t:CalendarEvent><t:StartTime>{start}</t:StartTime>"
            f"<t:EndTime>{end}</t:EndTime><t:BusyType>{busy}</t:BusyType></t:CalendarEvent></t:CalendarEventArray>")  # fmt: skip


def test_naive_times_are_wall_times_of_the_requests_zone_and_offsets_are_kept() -> None:
    request = ask(SYDNEY, u(2024, 4, 5, 13), u(2024, 4, 8, 14), ("a@x.test", "b@x.test"))
    body = envelope(view(event("2024-04-07T02:30:00", "2024-04-07T04:00:00")),
                    view(event("2024-04-07T02:30:00+10:00", "2024-04-06T17:00:00Z")))  # fmt: skip
    first, second = parse_get_user_availability_response(body, request)
    assert isinstance(first, MailboxData) and isinstance(second, MailboxData)
    # 02:30 on the night clocks go back is read as the first (daylight) one, like zoneinfo
    assert (first.events[0].start, first.events[0].end) == (
        u(2024, 4, 6, 15, 30),
        u(2024, 4, 6, 18),
    )
    assert (second.events[0].start, second.events[0].end) == (
        u(2024, 4, 6, 16, 30),
        u(2024, 4, 6, 17),
    )


@pytest.mark.parametrize(
    ("message", "code", "text", "site"),
    [
        ('<m:MessageText>No access.</m:MessageText><m:ResponseCode>ErrorNoFreeBusyAccess</m:ResponseCode>',
         "ErrorNoFreeBusyAccess", "No access.", None),
        ('<m:ResponseCode>ErrorMailRecipientNotFound</m:ResponseCode>',
         "ErrorMailRecipientNotFound", "No mailbox with such address was found in the directory.", None),
        ('<m:MessageText>Too big (site: eu)</m:MessageText><m:ResponseCode>ErrorFreeBusyDLLimitReached</m:ResponseCode>'
         '<m:MessageXml><t:Value Name="Site">eu</t:Value></m:MessageXml>',
         "ErrorFreeBusyGenerationFailed", "ErrorFreeBusyDLLimitReached: Too big", "eu"),
        ("<m:MessageText>Odd.</m:MessageText>", "ErrorFreeBusyGenerationFailed", "(no ResponseCode): Odd.", None),
    ],
)  # fmt: skip
def test_error_responses_keep_code_message_and_site(
    message: str, code: str, text: str, site: str | None
) -> None:
    body = envelope(f'<m:ResponseMessage ResponseClass="Error">{message}</m:ResponseMessage>'
                    "<m:FreeBusyView><t:FreeBusyViewType>None</t:FreeBusyViewType></m:FreeBusyView>")  # fmt: skip
    [result] = parse_get_user_availability_response(body, ask(UTC, u(2024, 3, 4), u(2024, 3, 5)))
    assert result == MailboxError(code, text, site)


def test_a_view_of_type_none_is_no_data_never_free() -> None:
    request = ask(UTC, u(2024, 3, 4), u(2024, 3, 5))
    [data] = parse_get_user_availability_response(envelope(view("", "None")), request)
    assert isinstance(data, MailboxData) and data.coverage == ()
    assert merged_free_busy(data.events, request.window, 60, data.coverage) == "4" * 24


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (event("yesterday", "2024-03-04T10:00:00"), "StartTime"),
        (event("2024-03-04T10:00:00", "2024-03-04T11:00:00", "Sleeping"), "Sleeping"),
        (event("2024-03-04T12:00:00", "2024-03-04T11:00:00"), "before"),
        ("<t:MergedFreeBusy>00x2</t:MergedFreeBusy>", "MergedFreeBusy"),
    ],
)
def test_an_unreadable_view_costs_only_its_mailbox(content: str, words: str) -> None:
    request = ask(UTC, u(2024, 3, 4), u(2024, 3, 5), ("a@x.test", "b@x.test"))
    bad, good = parse_get_user_availability_response(envelope(view(content), view("")), request)
    assert isinstance(bad, MailboxError) and bad.code == "ErrorFreeBusyGenerationFailed"
    assert words in bad.message
    assert good == MailboxData(times_only=True)  # a FreeBusy view answers a Detailed question


def test_a_soap_fault_raises_its_code_and_message() -> None:
    body = render_fault_code("ErrorInvalidTimeInterval", "The time duration is invalid.")
    with pytest.raises(EwsFaultError) as caught:
        parse_get_user_availability_response(body, ask(UTC, u(2024, 3, 4), u(2024, 3, 5)))
    assert (caught.value.code, caught.value.message) == (
        "ErrorInvalidTimeInterval",
        "The time duration is invalid.",
    )
    bare = f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>boom</faultstring></s:Fault></s:Body></s:Envelope>'
    with pytest.raises(EwsFaultError, match="Server: boom"):
        parse_get_user_availability_response(bare.encode(), ask(UTC, u(2024, 3, 4), u(2024, 3, 5)))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"<html><body>502 Bad Gateway</body></html>", "Envelope"),
        (b"not xml at all", "well-formed"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "DTD"),
        (f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body/></s:Envelope>'.encode(), "no Body content"),
        (f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}"><s:Body><m:ConvertIdResponse/></s:Body></s:Envelope>'.encode(),
         "ConvertIdResponse"),
        (envelope(OK.replace("Success", "Success")).replace(b"<m:FreeBusyResponseArray>", b"<m:Other>").replace(b"</m:FreeBusyResponseArray>", b"</m:Other>"),
         "FreeBusyResponseArray"),
        (envelope(view(""), view("")), "2 FreeBusyResponse elements for 1 mailboxes"),
        (envelope("<m:FreeBusyView/>"), "no ResponseMessage"),
    ],
)  # fmt: skip
def test_garbage_is_a_protocol_error_with_a_clear_message(body: bytes, words: str) -> None:
    with pytest.raises(EwsProtocolError, match=words):
        parse_get_user_availability_response(body, ask(UTC, u(2024, 3, 4), u(2024, 3, 5)))


def test_server_busy_fault_carries_its_back_off() -> None:
    from cas.codecs.ews.client import EwsFaultError, parse_get_user_availability_response

    body = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        b'<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode>'
        b"<faultstring>busy</faultstring><detail>"
        b'<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode>'
        b'<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
        b'<t:Value Name="BackOffMilliseconds">1500</t:Value></t:MessageXml>'
        b"</detail></s:Fault></s:Body></s:Envelope>"
    )
    import pytest as _pytest

    with _pytest.raises(EwsFaultError) as info:
        parse_get_user_availability_response(body, None)  # type: ignore[arg-type]
    assert (info.value.code, info.value.back_off_ms) == ("ErrorServerBusy", 1500)


def test_freshness_travels_in_a_soap_header_and_comes_back() -> None:
    from datetime import datetime, timedelta, timezone

    from cas.codecs.ews import (
        parse_envelope,
        parse_get_user_availability,
        render_get_user_availability,
    )
    from cas.codecs.ews.client import (
        parse_get_user_availability_response,
        render_get_user_availability_request,
    )
    from cas.errors import MailboxError
    from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
    from cas.model.freebusy import Freshness, MailboxData, Window
    from tests.support.ews_schema import validate_ews_body

    t0 = datetime(2024, 3, 4, tzinfo=timezone.utc)
    request = AvailabilityRequest(
        (MailboxQuery("a@x.test"), MailboxQuery("b@x.test"), MailboxQuery("c@x.test")),
        Window(t0, t0 + timedelta(hours=2)),
        60,
        FreeBusyView.MERGED_ONLY,
        timezone.utc,
    )
    server_side = parse_get_user_availability(
        parse_envelope(render_get_user_availability_request(request))
    )
    results = [
        MailboxData(freshness=Freshness("stale-cache", 812.0, "eu")),
        MailboxError.of("ErrorMailRecipientNotFound"),
        MailboxData(freshness=Freshness("backend", 0.0, "us")),
    ]
    body = render_get_user_availability(server_side, results)
    validate_ews_body(body)  # the header lives outside the Body
    back = parse_get_user_availability_response(body, request)
    assert back[0].freshness == Freshness("stale-cache", 812.0, "eu")
    assert isinstance(back[1], MailboxError)
    assert back[2].freshness == Freshness("backend", 0.0, "us")
