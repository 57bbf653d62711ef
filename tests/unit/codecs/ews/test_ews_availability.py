"""GetUserAvailability: golden requests in, responses out, and exchangelib reading them back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from cas.codecs.ews import (
    parse_envelope,
    parse_get_user_availability,
    render_get_user_availability,
)
from cas.codecs.ews.answer import wire_busy_type
from cas.codecs.ews.soap import MESSAGES_NS, SOAP_NS, TYPES_NS
from cas.errors import (
    InvalidFreeBusyViewType,
    InvalidTimeInterval,
    InvalidValue,
    MailboxError,
)
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import (
    BusyType,
    Event,
    EventDetails,
    MailboxData,
    WorkingHours,
    WorkingPeriod,
    default_working_hours,
)

UTC = UTC
H = timedelta(hours=1)
NS = {"s": SOAP_NS, "m": MESSAGES_NS, "t": TYPES_NS}


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---- parsing -----------------------------------------------------------------------------------

PARSED = {
    "exchangelib_berlin.xml": dict(
        mailboxes=(MailboxQuery("alice@example.com", "Required", False, "SMTP", None),),
        window=(u(2024, 3, 4, 7), u(2024, 3, 4, 15)),
        interval=60,
        view=FreeBusyView.DETAILED_MERGED,
        version="Exchange2016",
        january=H,
        july=2 * H,
    ),
    "davmail_utc.xml": dict(
        mailboxes=(
            MailboxQuery("bob@example.com", "Required", False, "SMTP", None),
            MailboxQuery("room-1@example.com", "Room", False, "SMTP", None),
        ),
        window=(u(2024, 7, 1), u(2024, 7, 2)),
        interval=15,
        view=FreeBusyView.MERGED_ONLY,
        version="Exchange2007_SP1",
        january=timedelta(0),
        july=timedelta(0),
    ),
    "naive_sydney.xml": dict(
        mailboxes=(MailboxQuery("carol@example.com", "Optional", False, "SMTP", "Carol"),),
        # 12:00 AEDT (+11) on Saturday to 12:00 AEST (+10) on Sunday: 25 hours
        window=(u(2024, 4, 6, 1), u(2024, 4, 7, 2)),
        interval=30,
        view=FreeBusyView.FREE_BUSY,
        version="Exchange2013",
        january=11 * H,
        july=10 * H,
    ),
    "offset_los_angeles.xml": dict(
        mailboxes=(
            MailboxQuery("/o=Org/ou=Site/cn=Recipients/cn=board", "Room", True, "EX", "Board room"),
        ),
        window=(u(2026, 11, 1, 4), u(2026, 11, 2, 4) + timedelta(milliseconds=500)),
        interval=30,
        view=FreeBusyView.DETAILED,
        version="Exchange2010_SP2",
        january=-8 * H,
        july=-7 * H,
    ),
    "context_only_tokyo.xml": dict(
        mailboxes=(MailboxQuery("dan@example.com", "Organizer", True, "SMTP", None),),
        window=(u(2026, 1, 5, 0), u(2026, 1, 5, 9)),
        interval=60,
        view=FreeBusyView.FREE_BUSY_MERGED,
        version="Exchange2016",
        january=9 * H,
        july=9 * H,
    ),
}


@pytest.mark.parametrize("name", PARSED)
def test_golden_requests_parse(request_bytes: Callable[[str], bytes], name: str) -> None:
    expected = PARSED[name]
    request = parse_get_user_availability(parse_envelope(request_bytes(name)))
    assert request.mailboxes == expected["mailboxes"]
    assert (request.window.start, request.window.end) == expected["window"]
    assert request.window.start.tzinfo is not None and request.window.end.tzinfo is not None
    assert request.interval_minutes == expected["interval"]
    assert request.view is expected["view"]
    assert request.server_version == expected["version"]
    assert request.tz.utcoffset(datetime(2026, 1, 15, 12)) == expected["january"]
    assert request.tz.utcoffset(datetime(2026, 7, 15, 12)) == expected["july"]


def test_context_header_is_only_a_fallback(request_bytes: Callable[[str], bytes]) -> None:
    request = parse_get_user_availability(parse_envelope(request_bytes("context_only_tokyo.xml")))
    assert request.tz == ZoneInfo("Asia/Tokyo")


def berlin(request_bytes: Callable[[str], bytes], old: str = "", new: str = "") -> bytes:
    text = request_bytes("exchangelib_berlin.xml").decode()
    if old:
        assert old in text
        text = text.replace(old, new)
    return text.encode()


Loader = Callable[[str], bytes]


def parse_berlin(request_bytes: Loader, old: str = "", new: str = "") -> AvailabilityRequest:
    return parse_get_user_availability(parse_envelope(berlin(request_bytes, old, new)))


START = "<t:StartTime>2024-03-04T08:00:00+01:00</t:StartTime>"
END = "<t:EndTime>2024-03-04T16:00:00+01:00</t:EndTime>"
VIEW = "<t:RequestedView>DetailedMerged</t:RequestedView>"
INTERVAL = "<t:MergedFreeBusyIntervalInMinutes>60</t:MergedFreeBusyIntervalInMinutes>"
WINDOW_TEXT = "The time duration specified for FreeBusyViewOptions.TimeWindow is invalid."

ERRORS = [
    ("view None", VIEW, "<t:RequestedView>None</t:RequestedView>", InvalidFreeBusyViewType, "None"),
    ("view empty", VIEW, "<t:RequestedView> </t:RequestedView>", InvalidFreeBusyViewType, "empty"),
    (
        "view unknown",
        VIEW,
        "<t:RequestedView>Everything</t:RequestedView>",
        InvalidValue,
        "RequestedView",
    ),
    (
        "start == end",
        END,
        "<t:EndTime>2024-03-04T08:00:00+01:00</t:EndTime>",
        InvalidTimeInterval,
        WINDOW_TEXT,
    ),
    (
        "start > end",
        END,
        "<t:EndTime>2024-03-04T07:00:00Z</t:EndTime>",
        InvalidTimeInterval,
        WINDOW_TEXT,
    ),
    (
        "interval text",
        INTERVAL,
        "<t:MergedFreeBusyIntervalInMinutes>sixty</t:MergedFreeBusyIntervalInMinutes>",
        InvalidValue,
        "MergedFreeBusyIntervalInMinutes",
    ),
    (
        "interval decimal",
        INTERVAL,
        "<t:MergedFreeBusyIntervalInMinutes>60.5</t:MergedFreeBusyIntervalInMinutes>",
        InvalidValue,
        "MergedFreeBusyIntervalInMinutes",
    ),
    (
        "date with a space",
        START,
        "<t:StartTime>2024-03-04 08:00:00</t:StartTime>",
        InvalidValue,
        "StartTime",
    ),
    (
        "no such day",
        START,
        "<t:StartTime>2024-02-30T08:00:00</t:StartTime>",
        InvalidValue,
        "StartTime",
    ),
    ("no end", END, "", InvalidValue, "EndTime"),
    (
        "attendee type",
        "<t:AttendeeType>Required</t:AttendeeType>",
        "<t:AttendeeType>Boss</t:AttendeeType>",
        InvalidValue,
        "AttendeeType",
    ),
    (
        "exclude conflicts",
        "<t:ExcludeConflicts>0</t:ExcludeConflicts>",
        "<t:ExcludeConflicts>maybe</t:ExcludeConflicts>",
        InvalidValue,
        "ExcludeConflicts",
    ),
    (
        "empty address",
        "<t:Address>alice@example.com</t:Address>",
        "<t:Address> </t:Address>",
        InvalidValue,
        "Address",
    ),
    (
        "no email",
        "<t:Email><t:Address>alice@example.com</t:Address><t:RoutingType>SMTP</t:RoutingType>"
        "</t:Email>",
        "",
        InvalidValue,
        "Email",
    ),
    ("time zone bias", "<t:Bias>-60</t:Bias>", "<t:Bias>west</t:Bias>", InvalidValue, "Bias"),
    (
        "day order",
        "<t:DayOrder>5</t:DayOrder>",
        "<t:DayOrder>7</t:DayOrder>",
        InvalidValue,
        "DayOrder",
    ),
    (
        "wrong operation",
        "GetUserAvailabilityRequest>",
        "GetUserAvailability>",
        InvalidValue,
        "GetUserAvailabilityRequest",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "error", "message"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_bad_requests_raise_the_matching_fault(
    request_bytes: Callable[[str], bytes], old: str, new: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message.replace(".", r"\.")):
        parse_berlin(request_bytes, old, new)


def test_missing_parts_are_invalid_values(request_bytes: Callable[[str], bytes]) -> None:
    text = berlin(request_bytes).decode()
    for name in ("m:MailboxDataArray", "t:FreeBusyViewOptions"):
        start, end = text.index(f"<{name}>"), text.index(f"</{name}>") + len(name) + 3
        with pytest.raises(InvalidValue, match=name[2:]):
            parse_get_user_availability(parse_envelope((text[:start] + text[end:]).encode()))


@pytest.mark.parametrize(
    ("text", "view"),
    [
        ("MergedOnly FreeBusy", FreeBusyView.FREE_BUSY_MERGED),
        ("Detailed MergedOnly", FreeBusyView.DETAILED_MERGED),
        ("None FreeBusy", FreeBusyView.FREE_BUSY),
        ("  Detailed  ", FreeBusyView.DETAILED),
    ],
)
def test_requested_view_is_a_list_whose_contents_combine(
    request_bytes: Callable[[str], bytes], text: str, view: FreeBusyView
) -> None:
    request = parse_berlin(request_bytes, VIEW, f"<t:RequestedView>{text}</t:RequestedView>")
    assert request.view is view


def test_defaults_when_optional_elements_are_missing(request_bytes: Callable[[str], bytes]) -> None:
    request = parse_berlin(request_bytes, INTERVAL + "\n        " + VIEW, "")
    assert request.interval_minutes == 30
    assert request.view is FreeBusyView.DETAILED


@pytest.mark.parametrize(
    ("wall", "utc"),
    [
        ("2024-03-31T02:30:00", u(2024, 3, 31, 1, 30)),  # skipped hour: read before the jump
        ("2024-10-27T02:30:00", u(2024, 10, 27, 0, 30)),  # repeated hour: the first one
        ("2024-03-04T08:00:00", u(2024, 3, 4, 7)),
        ("2024-03-04T24:00:00", u(2024, 3, 4, 23)),  # xs:dateTime end of day
        ("2024-07-01T08:00:00Z", u(2024, 7, 1, 8)),
        ("2024-07-01T08:00:00-03:30", u(2024, 7, 1, 11, 30)),
    ],
)
def test_window_times_naive_z_and_offset(
    request_bytes: Callable[[str], bytes], wall: str, utc: datetime
) -> None:
    text = berlin(request_bytes, START, f"<t:StartTime>{wall}</t:StartTime>").decode()
    text = text.replace(END, "<t:EndTime>2025-01-01T00:00:00Z</t:EndTime>")
    window = parse_get_user_availability(parse_envelope(text.encode())).window
    assert window.start == utc
    assert window.start.utcoffset() == timedelta(0)


def test_limits_are_not_applied_here(request_bytes: Callable[[str], bytes]) -> None:
    text = berlin(request_bytes).decode()
    one = text[text.index("<t:MailboxData>") : text.index("</t:MailboxData>") + 16]
    many = text.replace(one, one * 101)
    many = many.replace(INTERVAL, INTERVAL.replace(">60<", ">1<"))
    many = many.replace(END, "<t:EndTime>2024-06-30T00:00:00Z</t:EndTime>")
    request = parse_get_user_availability(parse_envelope(many.encode()))
    assert len(request.mailboxes) == 101 and request.interval_minutes == 1
    assert request.window.duration > timedelta(days=100)


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "Australia/Sydney", "America/Los_Angeles", "Asia/Tokyo", "UTC"]
)
def test_requests_built_by_exchangelib_parse_to_the_same_window(
    exchangelib_protocol: object, zone: str
) -> None:
    from exchangelib import EWSTimeZone
    from exchangelib.properties import FreeBusyViewOptions, TimeWindow, TimeZone
    from exchangelib.properties import MailboxData as ELMailboxData
    from exchangelib.services import GetServerTimeZones, GetUserAvailability

    from cas.codecs.ews import TimeZonesQuery, render_get_server_time_zones

    tz = EWSTimeZone(zone)
    start = datetime(2024, 10, 26, 20, 0, tzinfo=tz)  # window over Europe's DST end
    end = start + timedelta(hours=10)
    answer = render_get_server_time_zones(TimeZonesQuery((tz.ms_id,)), year=2026)
    definition = list(GetServerTimeZones(protocol=exchangelib_protocol).parse(answer))[0]
    service = GetUserAvailability(protocol=exchangelib_protocol)
    service.tzinfo = tz
    payload = service.get_payload(
        mailbox_data=[
            ELMailboxData(email="a@example.com", attendee_type="Required", exclude_conflicts=True)
        ],
        timezone=TimeZone.from_server_timezone(tz_definition=definition, for_year=start.year),
        free_busy_view_options=FreeBusyViewOptions(
            time_window=TimeWindow(start=start, end=end),
            merged_free_busy_interval=15,
            requested_view="FreeBusyMerged",
        ),
    )
    request = parse_get_user_availability(
        parse_envelope(service.wrap(content=payload, api_version="Exchange2016"))
    )
    assert (request.window.start, request.window.end) == (start, end)
    assert request.mailboxes == (MailboxQuery("a@example.com", "Required", True, "SMTP", None),)
    assert (request.interval_minutes, request.view) == (15, FreeBusyView.FREE_BUSY_MERGED)
    for moment in (start, end, start + 5 * H):
        assert moment.astimezone(request.tz).utcoffset() == moment.utcoffset()


# ---- rendering ---------------------------------------------------------------------------------

SYNC = Event(
    u(2024, 3, 4, 9),
    u(2024, 3, 4, 10),
    BusyType.BUSY,
    EventDetails(
        id="AAMk1", subject="Sync", location="Room 1", is_meeting=True, is_reminder_set=True
    ),
)
LUNCH = Event(u(2024, 3, 4, 11), u(2024, 3, 4, 12, 30), BusyType.TENTATIVE)
AWAY = Event(
    u(2024, 3, 4, 13),
    u(2024, 3, 4, 14),
    BusyType.OOF,
    EventDetails(is_private=True, is_recurring=True),
)
BEFORE = Event(u(2024, 3, 3, 9), u(2024, 3, 3, 10), BusyType.BUSY)  # outside the window
ALICE = MailboxData(
    events=(AWAY, SYNC, LUNCH, BEFORE), working_hours=default_working_hours("Europe/Berlin")
)


def request_for(request_bytes: Loader, count: int = 1, **changes: object) -> AvailabilityRequest:
    request = parse_berlin(request_bytes)
    mailboxes = tuple(MailboxQuery(f"user{i}@example.com") for i in range(count))
    return replace(request, mailboxes=mailboxes, **changes)  # type: ignore[arg-type]


def body_of(data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    assert root.find("s:Header/t:ServerVersionInfo", NS) is not None
    return root.find("s:Body/m:GetUserAvailabilityResponse", NS)


def views_of(data: bytes) -> list[etree._Element]:
    return body_of(data).findall("m:FreeBusyResponseArray/m:FreeBusyResponse/m:FreeBusyView", NS)


def test_detailed_merged_golden(
    request_bytes: Callable[[str], bytes], golden: Callable[[str, bytes], None]
) -> None:
    request = request_for(request_bytes, 3)
    results = [
        ALICE,
        MailboxError.of("ErrorMailRecipientNotFound"),
        MailboxError.of("ErrorProxyRequestProcessingFailed", "connect timeout", site="apac"),
    ]
    golden(
        "get_user_availability_detailed_merged.xml", render_get_user_availability(request, results)
    )


CONTENTS = {
    FreeBusyView.MERGED_ONLY: (True, False, False, False),
    FreeBusyView.FREE_BUSY: (False, True, False, True),
    FreeBusyView.FREE_BUSY_MERGED: (True, True, False, True),
    FreeBusyView.DETAILED: (False, True, True, True),
    FreeBusyView.DETAILED_MERGED: (True, True, True, True),
}


@pytest.mark.parametrize("view", CONTENTS, ids=[v.value for v in CONTENTS])
def test_each_view_carries_its_parts(request_bytes: Loader, view: FreeBusyView) -> None:
    data = render_get_user_availability(request_for(request_bytes, view=view), [ALICE])
    (elem,) = views_of(data)
    present = (
        elem.find("t:MergedFreeBusy", NS) is not None,
        elem.find("t:CalendarEventArray", NS) is not None,
        elem.find("t:CalendarEventArray/t:CalendarEvent/t:CalendarEventDetails", NS) is not None,
        elem.find("t:WorkingHours", NS) is not None,
    )
    assert elem.findtext("t:FreeBusyViewType", namespaces=NS) == view.value
    assert present == CONTENTS[view]
    if view.has_merged:
        # 07:00-15:00Z in 60-minute slots: busy 09-10, tentative 11-12:30, OOF 13-14
        assert elem.findtext("t:MergedFreeBusy", namespaces=NS) == "00201130"


def test_events_are_naive_wall_times_in_the_request_zone(request_bytes: Loader) -> None:
    data = render_get_user_availability(request_for(request_bytes), [ALICE])
    (elem,) = views_of(data)
    events = elem.findall("t:CalendarEventArray/t:CalendarEvent", NS)
    assert [
        (
            e.findtext("t:StartTime", namespaces=NS),
            e.findtext("t:EndTime", namespaces=NS),
            e.findtext("t:BusyType", namespaces=NS),
        )
        for e in events
    ] == [
        ("2024-03-04T10:00:00", "2024-03-04T11:00:00", "Busy"),
        ("2024-03-04T12:00:00", "2024-03-04T13:30:00", "Tentative"),
        ("2024-03-04T14:00:00", "2024-03-04T15:00:00", "OOF"),
    ]
    details = [e.find("t:CalendarEventDetails", NS) for e in events]
    assert details[1] is None  # no details known for that event
    assert [c.tag.split("}")[1] for c in details[0]] == [
        "ID",
        "Subject",
        "Location",
        "IsMeeting",
        "IsRecurring",
        "IsException",
        "IsReminderSet",
        "IsPrivate",
    ]
    assert [c.tag.split("}")[1] for c in details[2]] == [
        "IsMeeting",
        "IsRecurring",
        "IsException",
        "IsReminderSet",
        "IsPrivate",
    ]
    assert [c.text for c in details[2]] == ["false", "true", "false", "false", "true"]


def test_southern_hemisphere_times_over_the_dst_end(request_bytes: Callable[[str], bytes]) -> None:
    request = parse_get_user_availability(parse_envelope(request_bytes("naive_sydney.xml")))
    first = Event(u(2024, 4, 6, 15, 30), u(2024, 4, 6, 16), BusyType.BUSY)  # 02:30 AEDT
    second = Event(u(2024, 4, 6, 16, 30), u(2024, 4, 6, 17), BusyType.BUSY)  # 02:30 AEST
    data = render_get_user_availability(request, [MailboxData(events=(first, second))])
    starts = etree.fromstring(data).xpath("//t:CalendarEvent/t:StartTime/text()", namespaces=NS)
    assert starts == ["2024-04-07T02:30:00", "2024-04-07T02:30:00"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, BusyType.FREE),
        ("Exchange2007", BusyType.FREE),
        ("Exchange2007_SP1", BusyType.FREE),
        ("Exchange2010_SP2", BusyType.FREE),
        ("Exchange2013", BusyType.WORKING_ELSEWHERE),
        ("Exchange2016", BusyType.WORKING_ELSEWHERE),
    ],
)
def test_working_elsewhere_is_free_for_pre_2013_clients(
    request_bytes: Callable[[str], bytes], version: str | None, expected: BusyType
) -> None:
    assert wire_busy_type(BusyType.WORKING_ELSEWHERE, version) is expected
    assert wire_busy_type(BusyType.OOF, version) is BusyType.OOF
    remote = Event(u(2024, 3, 4, 9), u(2024, 3, 4, 10), BusyType.WORKING_ELSEWHERE)
    request = request_for(request_bytes, server_version=version)
    data = render_get_user_availability(request, [MailboxData(events=(remote,))])
    assert etree.fromstring(data).xpath("//t:BusyType/text()", namespaces=NS) == [expected.value]
    assert etree.fromstring(data).xpath("//t:MergedFreeBusy/text()", namespaces=NS) == ["00000000"]


def test_no_events_still_gives_an_empty_array(request_bytes: Callable[[str], bytes]) -> None:
    (elem,) = views_of(render_get_user_availability(request_for(request_bytes), [MailboxData()]))
    array = elem.find("t:CalendarEventArray", NS)
    assert array is not None and len(array) == 0
    assert elem.find("t:WorkingHours", NS) is None


def test_given_merged_strings_are_used_as_they_are(request_bytes: Callable[[str], bytes]) -> None:
    legacy = MailboxData(merged="44412222", merged_only=True)
    peer = MailboxData(events=(SYNC,), merged="01234012")
    data = render_get_user_availability(
        request_for(request_bytes, 2, view=FreeBusyView.FREE_BUSY_MERGED), [legacy, peer]
    )
    first, second = views_of(data)
    assert first.findtext("t:FreeBusyViewType", namespaces=NS) == "MergedOnly"
    assert first.findtext("t:MergedFreeBusy", namespaces=NS) == "44412222"
    assert first.find("t:CalendarEventArray", NS) is None
    assert second.findtext("t:FreeBusyViewType", namespaces=NS) == "FreeBusyMerged"
    assert second.findtext("t:MergedFreeBusy", namespaces=NS) == "01234012"


def test_uncovered_time_is_no_data(request_bytes: Callable[[str], bytes]) -> None:
    data = MailboxData(events=(SYNC,), coverage=((u(2024, 3, 4, 7), u(2024, 3, 4, 11)),))
    (elem,) = views_of(render_get_user_availability(request_for(request_bytes), [data]))
    assert elem.findtext("t:MergedFreeBusy", namespaces=NS) == "00204444"


def test_working_hours_use_the_owner_zone(request_bytes: Callable[[str], bytes]) -> None:
    hours = WorkingHours(
        "America/Los_Angeles",
        (WorkingPeriod(("Monday", "Wednesday"), 540, 1020), WorkingPeriod(("Friday",), 600, 780)),
    )
    (elem,) = views_of(
        render_get_user_availability(request_for(request_bytes), [MailboxData(working_hours=hours)])
    )
    assert elem.findtext("t:WorkingHours/t:TimeZone/t:Bias", namespaces=NS) == "480"
    periods = elem.findall("t:WorkingHours/t:WorkingPeriodArray/t:WorkingPeriod", NS)
    assert [[c.text for c in p] for p in periods] == [
        ["Monday Wednesday", "540", "1020"],
        ["Friday", "600", "780"],
    ]


def test_unknown_owner_zone_leaves_working_hours_out(request_bytes: Callable[[str], bytes]) -> None:
    data = MailboxData(working_hours=default_working_hours("Nowhere/Special"))
    (elem,) = views_of(render_get_user_availability(request_for(request_bytes), [data]))
    assert elem.find("t:WorkingHours", NS) is None


def test_mailbox_errors_stay_per_mailbox(request_bytes: Callable[[str], bytes]) -> None:
    errors = [
        MailboxError.of("ErrorNoFreeBusyAccess"),
        MailboxError.of("ErrorFreeBusyGenerationFailed", "HTTP 503", site="eu"),
    ]
    results = [errors[0], ALICE, errors[1]]
    data = render_get_user_availability(request_for(request_bytes, 3), results)
    responses = body_of(data).findall("m:FreeBusyResponseArray/m:FreeBusyResponse", NS)
    summary = [
        (
            r.find("m:ResponseMessage", NS).get("ResponseClass"),
            r.findtext("m:ResponseMessage/m:ResponseCode", namespaces=NS),
            r.findtext("m:FreeBusyView/t:FreeBusyViewType", namespaces=NS),
        )
        for r in responses
    ]
    assert summary == [
        ("Error", "ErrorNoFreeBusyAccess", "None"),
        ("Success", "NoError", "DetailedMerged"),
        ("Error", "ErrorFreeBusyGenerationFailed", "None"),
    ]
    assert responses[0].find("m:ResponseMessage/m:MessageXml", NS) is None
    last = responses[2].find("m:ResponseMessage", NS)
    assert last.findtext("m:MessageText", namespaces=NS) == (
        "Free/busy data could not be retrieved from the mailbox backend. HTTP 503 (site: eu)"
    )
    assert last.findtext("m:DescriptiveLinkKey", namespaces=NS) == "0"
    assert last.findtext("m:MessageXml/t:Value[@Name='Site']", namespaces=NS) == "eu"
    assert len(responses[2].find("m:FreeBusyView", NS)) == 1


def test_results_must_pair_up_with_mailboxes(request_bytes: Callable[[str], bytes]) -> None:
    with pytest.raises(ValueError, match="pair up"):
        render_get_user_availability(request_for(request_bytes, 2), [ALICE])


def test_text_xml_cannot_carry_is_dropped(request_bytes: Callable[[str], bytes]) -> None:
    odd = Event(
        u(2024, 3, 4, 9),
        u(2024, 3, 4, 10),
        BusyType.BUSY,
        EventDetails(subject="Q3\x0b review\x00", location="Ra\U0001f680um"),
    )
    data = render_get_user_availability(request_for(request_bytes), [MailboxData(events=(odd,))])
    assert etree.fromstring(data).xpath("//t:Subject/text()", namespaces=NS) == ["Q3 review"]
    assert etree.fromstring(data).xpath("//t:Location/text()", namespaces=NS) == ["Ra\U0001f680um"]


# ---- exchangelib reads it ----------------------------------------------------------------------


def test_exchangelib_parses_the_response(
    request_bytes: Callable[[str], bytes], exchangelib_protocol: object
) -> None:
    from exchangelib import EWSTimeZone
    from exchangelib.errors import ErrorMailRecipientNotFound
    from exchangelib.services import GetUserAvailability

    request = request_for(request_bytes, 2)
    data = render_get_user_availability(
        request, [ALICE, MailboxError.of("ErrorMailRecipientNotFound", site="eu")]
    )
    service = GetUserAvailability(protocol=exchangelib_protocol)
    service.tzinfo = EWSTimeZone("Europe/Berlin")
    view, missing = list(service.parse(data))
    assert isinstance(missing, ErrorMailRecipientNotFound)
    assert view.view_type == "DetailedMerged" and view.merged == "00201130"
    assert [(e.start, e.end, e.busy_type) for e in view.calendar_events] == [
        (SYNC.start, SYNC.end, "Busy"),
        (LUNCH.start, LUNCH.end, "Tentative"),
        (AWAY.start, AWAY.end, "OOF"),
    ]
    assert view.calendar_events[0].details.subject == "Sync"
    assert view.calendar_events[0].details.is_reminder_set is True
    assert view.working_hours[0].weekdays == [1, 2, 3, 4, 5]
    assert view.working_hours_timezone.bias == -60
    assert view.working_hours_timezone.daylight_time.bias == -60
