"""End to end: exchangelib asks a node over verified HTTPS; the node reads a real Radicale.

Events are written with the `caldav` client library. Expected answers are the UTC instants
written by hand below and a per-minute oracle for merged strings, never the code under test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

import caldav
import httpx
import pytest
from exchangelib import DELEGATE, Account, Configuration, Credentials, EWSTimeZone
from exchangelib.errors import ErrorMailRecipientNotFound
from exchangelib.protocol import close_connections
from exchangelib.transport import BASIC

from cas.app import create_app
from cas.settings import load_settings
from caslab.radicale import ensure_calendar
from sitemap.model import (
    CalDavBackendConfig,
    ClientAuth,
    ClientUser,
    Mailbox,
    SecretRef,
    Site,
    Sitemap,
)
from tests.support.node import ThreadedServer, make_test_ca

UTC = dt.UTC
DOMAIN = "contoso.test"
CLIENT = ("scheduler", "s3cret-" + uuid.uuid4().hex[:6])


def u(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def to_utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime of any tz class (exchangelib's included) as a plain UTC datetime."""
    assert value.tzinfo is not None
    return dt.datetime.fromtimestamp(value.timestamp(), UTC)


@dataclass(frozen=True)
class Expected:
    start: dt.datetime
    end: dt.datetime
    busy: str
    subject: str | None
    private: bool = False
    meeting: bool = False
    recurring: bool = False
    exception: bool = False


# --- alice: one of each kind (mailbox zone Europe/Berlin) ------------------------------------

ALICE_ICS = [
    # 09:00-10:00 Berlin (CET) = 08:00-09:00Z, a meeting with a location
    """BEGIN:VEVENT
UID:{p}-review
DTSTAMP:20240101T000000Z
DTSTART;TZID=Europe/Berlin:20240304T090000
DTEND;TZID=Europe/Berlin:20240304T100000
SUMMARY:Design review
LOCATION:Room 1
ORGANIZER:mailto:boss@contoso.test
ATTENDEE:mailto:alice@contoso.test
END:VEVENT""",
    """BEGIN:VEVENT
UID:{p}-lunch
DTSTAMP:20240101T000000Z
DTSTART:20240304T133000Z
DTEND:20240304T140000Z
SUMMARY:Maybe lunch
STATUS:TENTATIVE
END:VEVENT""",
    # all-day OOF on 6 March in the mailbox's zone: 5 Mar 23:00Z - 6 Mar 23:00Z
    """BEGIN:VEVENT
UID:{p}-conf
DTSTAMP:20240101T000000Z
DTSTART;VALUE=DATE:20240306
DTEND;VALUE=DATE:20240307
SUMMARY:Conference
X-MICROSOFT-CDO-BUSYSTATUS:OOF
END:VEVENT""",
    # daily 10:00 New York (EST, 15:00Z) from 1 March, 10 times; 5 March cancelled by EXDATE,
    # 6 March moved to 12:00-12:30 New York (17:00Z)
    """BEGIN:VEVENT
UID:{p}-standup
DTSTAMP:20240101T000000Z
DTSTART;TZID=America/New_York:20240301T100000
DTEND;TZID=America/New_York:20240301T101500
RRULE:FREQ=DAILY;COUNT=10
EXDATE;TZID=America/New_York:20240305T100000
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:{p}-standup
DTSTAMP:20240101T000000Z
RECURRENCE-ID;TZID=America/New_York:20240306T100000
DTSTART;TZID=America/New_York:20240306T120000
DTEND;TZID=America/New_York:20240306T123000
SUMMARY:Standup (moved)
END:VEVENT""",
    """BEGIN:VEVENT
UID:{p}-doctor
DTSTAMP:20240101T000000Z
DTSTART:20240307T110000Z
DTEND:20240307T120000Z
SUMMARY:Doctor
CLASS:PRIVATE
BEGIN:VALARM
ACTION:DISPLAY
DESCRIPTION:Doctor
TRIGGER:-PT15M
END:VALARM
END:VEVENT""",
    """BEGIN:VEVENT
UID:{p}-focus
DTSTAMP:20240101T000000Z
DTSTART:20240305T080000Z
DTEND:20240305T090000Z
SUMMARY:Focus time
TRANSP:TRANSPARENT
END:VEVENT""",
    """BEGIN:VEVENT
UID:{p}-cancelled
DTSTAMP:20240101T000000Z
DTSTART:20240305T100000Z
DTEND:20240305T110000Z
SUMMARY:Cancelled sync
STATUS:CANCELLED
END:VEVENT""",
    """BEGIN:VEVENT
UID:{p}-remote
DTSTAMP:20240101T000000Z
DTSTART:20240307T070000Z
DTEND:20240307T080000Z
SUMMARY:Home office
X-MICROSOFT-CDO-BUSYSTATUS:WORKINGELSEWHERE
END:VEVENT""",
]

ALICE_EXPECTED = [
    Expected(u(2024, 3, 4, 8), u(2024, 3, 4, 9), "Busy", "Design review", meeting=True),
    Expected(u(2024, 3, 4, 13, 30), u(2024, 3, 4, 14), "Tentative", "Maybe lunch"),
    Expected(u(2024, 3, 5, 23), u(2024, 3, 6, 23), "OOF", "Conference"),
    *[
        Expected(u(2024, 3, d, 15), u(2024, 3, d, 15, 15), "Busy", "Standup", recurring=True)
        for d in (1, 2, 3, 4, 7, 8, 9, 10)
    ],
    Expected(
        u(2024, 3, 6, 17),
        u(2024, 3, 6, 17, 30),
        "Busy",
        "Standup (moved)",
        recurring=True,
        exception=True,
    ),
    Expected(u(2024, 3, 7, 11), u(2024, 3, 7, 12), "Busy", None, private=True),
    Expected(u(2024, 3, 5, 8), u(2024, 3, 5, 9), "Free", "Focus time"),
    Expected(u(2024, 3, 7, 7), u(2024, 3, 7, 8), "WorkingElsewhere", "Home office"),
]

# --- dave: daily 09:00-10:00 Berlin over both DST changes of spring 2024 ---------------------

DAVE_ICS = [
    """BEGIN:VEVENT
UID:{p}-daily
DTSTAMP:20240101T000000Z
DTSTART;TZID=Europe/Berlin:20240328T090000
DTEND;TZID=Europe/Berlin:20240328T100000
RRULE:FREQ=DAILY;COUNT=14
SUMMARY:Daily
END:VEVENT"""
]
# CET (UTC+1) until 31 March 02:00, CEST (UTC+2) after
DAVE_EXPECTED = [
    Expected(u(2024, 3, d, 8), u(2024, 3, d, 9), "Busy", "Daily", recurring=True)
    for d in (28, 29, 30)
] + [
    Expected(u(2024, m, d, 7), u(2024, m, d, 8), "Busy", "Daily", recurring=True)
    for m, d in [(3, 31)] + [(4, day) for day in range(1, 11)]
]

VTIMEZONES = """BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
DTSTART:19810329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
DTSTART:19961027T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:DAYLIGHT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
DTSTART:20070311T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
DTSTART:20071104T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
END:VTIMEZONE"""


def wrap(component: str) -> str:
    body = f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//tests//EN\n{VTIMEZONES}\n{component}\nEND:VCALENDAR\n"
    return body.replace("\n", "\r\n")


DIGITS = {"Free": 0, "WorkingElsewhere": 0, "Tentative": 1, "Busy": 2, "OOF": 3}


def oracle_merged(
    expected: list[Expected], start: dt.datetime, end: dt.datetime, interval: int
) -> str:
    """Sample every minute of the window; each slot takes the highest digit seen in it."""
    minutes = int((end - start).total_seconds() // 60)
    slots = [0] * -(-minutes // interval)
    for m in range(minutes):
        t = start + dt.timedelta(minutes=m)
        for e in expected:
            if e.start <= t < e.end:
                slots[m // interval] = max(slots[m // interval], DIGITS[e.busy])
    return "".join(map(str, slots))


def overlapping(expected: list[Expected], start: dt.datetime, end: dt.datetime) -> list[Expected]:
    return sorted(
        (e for e in expected if e.start < end and e.end > start), key=lambda e: (e.start, e.end)
    )


# --- the cluster under test ------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    url: str
    alice: str
    dave: str
    broken: str
    ca_pem: Path


def _write_calendar(radicale, address: str, components: list[str]) -> str:
    async def make() -> str:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            return await ensure_calendar(client, radicale.url, address, radicale.admin)

    url = asyncio.run(make())
    client = caldav.DAVClient(
        url=radicale.url, username=radicale.admin[0], password=radicale.admin[1]
    )
    calendar = client.calendar(url=url)
    prefix = uuid.uuid4().hex[:8]
    for component in components:
        calendar.add_event(wrap(component.replace("{p}", prefix)))
    return url


@pytest.fixture(scope="module")
def node(radicale, tmp_path_factory, monkeypatch_module) -> Node:
    tmp = tmp_path_factory.mktemp("ews-node")
    tls = make_test_ca(tmp / "tls")
    secret = tmp / "caldav-password"
    secret.write_text(radicale.service[1])
    client_secret = tmp / "client-password"
    client_secret.write_text(CLIENT[1])
    tag = uuid.uuid4().hex[:6]
    alice, dave, broken = (f"{n}-{tag}@{DOMAIN}" for n in ("alice", "dave", "broken"))
    _write_calendar(radicale, alice, ALICE_ICS)
    _write_calendar(radicale, dave, DAVE_ICS)
    sitemap = Sitemap(
        source="test",
        sites=(
            Site(
                "eu",
                timezone="Europe/Berlin",
                caldav=CalDavBackendConfig(
                    url=radicale.url + "/",
                    username=radicale.service[0],
                    password=SecretRef(file=str(secret)),
                ),
            ),
            Site("us", timezone="America/New_York"),
        ),
        mailboxes=(
            Mailbox(alice, "eu", timezone="Europe/Berlin", aliases=(f"ally-{tag}@{DOMAIN}",)),
            Mailbox(dave, "eu", timezone="Europe/Berlin"),
            Mailbox(broken, "eu"),  # no calendar was made for it: the backend answers 404
            Mailbox(f"far-{tag}@{DOMAIN}", "us"),
        ),
        domains=(DOMAIN,),
        auth=ClientAuth(users=(ClientUser(CLIENT[0], SecretRef(file=str(client_secret))),)),
    )
    app = create_app(load_settings({}), sitemap, "eu")
    monkeypatch_module.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_pem))
    with ThreadedServer(app, tls) as server:
        try:
            yield Node(server.url, alice, dave, broken, tls.ca_pem)
        finally:
            close_connections()  # the client hangs up first, so the server has nobody to wait for


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def account(node: Node, address: str) -> Account:
    close_connections()
    config = Configuration(
        service_endpoint=node.url + "/EWS/Exchange.asmx",
        credentials=Credentials(*CLIENT),
        auth_type=BASIC,
    )
    return Account(address, config=config, autodiscover=False, access_type=DELEGATE)


def free_busy(
    node: Node,
    addresses: list[str],
    tz: str,
    start: dt.datetime,
    end: dt.datetime,
    interval: int,
    view: str,
) -> list:
    acc = account(node, addresses[0])
    zone = EWSTimeZone(tz)
    return list(
        acc.protocol.get_free_busy_info(
            [(a, "Required", False) for a in addresses],
            start.astimezone(zone),
            end.astimezone(zone),
            interval,
            view,
        )
    )


def check_events(view, expected: list[Expected], detailed: bool) -> None:
    got = view.calendar_events or []
    assert [(to_utc(e.start), to_utc(e.end), e.busy_type) for e in got] == [
        (e.start, e.end, e.busy) for e in expected
    ]
    for event, want in zip(got, expected):
        if not detailed:
            assert event.details is None
            continue
        d = event.details
        assert (d.subject, d.is_private, d.is_meeting, d.is_recurring, d.is_exception) == (
            want.subject,
            want.private,
            want.meeting,
            want.recurring,
            want.exception,
        ), want


# --- tests -------------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "Asia/Tokyo", "Australia/Sydney"]  # DST north, no DST, DST south
VIEWS = ["MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed", "DetailedMerged"]


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("view", VIEWS)
def test_every_view_in_every_zone(node: Node, tz: str, view: str) -> None:
    # the window is midnight to midnight in the request's zone
    start = dt.datetime(2024, 3, 4, tzinfo=EWSTimeZone(tz)).astimezone(UTC)
    end = dt.datetime(2024, 3, 8, tzinfo=EWSTimeZone(tz)).astimezone(UTC)
    [result] = free_busy(node, [node.alice], tz, start, end, 30, view)
    assert result.view_type == view
    expected = overlapping(ALICE_EXPECTED, start, end)
    if "Merged" in view:
        assert result.merged == oracle_merged(ALICE_EXPECTED, start, end, 30)
    else:
        assert result.merged is None
    if view == "MergedOnly":
        assert result.calendar_events is None
    else:
        check_events(result, expected, detailed=view.startswith("Detailed"))
        assert result.working_hours[0].start == dt.time(8) and result.working_hours[
            0
        ].end == dt.time(17)
    # the request's zone is where the wall times come from: naive times read in it give UTC back
    if result.calendar_events:
        first = result.calendar_events[0].start
        assert to_utc(first) == expected[0].start


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [
        ("Europe/Berlin", dt.datetime(2024, 3, 30), dt.datetime(2024, 4, 2)),  # 71 hours
        ("Australia/Sydney", dt.datetime(2024, 4, 6), dt.datetime(2024, 4, 9)),  # 73 hours
        ("America/Los_Angeles", dt.datetime(2024, 3, 9), dt.datetime(2024, 3, 12)),
    ],
)
def test_window_across_a_dst_change(
    node: Node, tz: str, start: dt.datetime, end: dt.datetime
) -> None:
    zone = EWSTimeZone(tz)
    s, e = start.replace(tzinfo=zone).astimezone(UTC), end.replace(tzinfo=zone).astimezone(UTC)
    [result] = free_busy(node, [node.dave], tz, s, e, 60, "DetailedMerged")
    expected = overlapping(DAVE_EXPECTED, s, e)
    assert len(result.merged) == -(-int((e - s).total_seconds() // 60) // 60)
    assert result.merged == oracle_merged(DAVE_EXPECTED, s, e, 60)
    check_events(result, expected, detailed=True)


def test_unknown_mailbox_is_reported_in_place_and_others_answer(node: Node) -> None:
    start, end = u(2024, 3, 4), u(2024, 3, 5)
    results = free_busy(
        node,
        [node.alice, f"nobody@{DOMAIN}", node.dave],
        "Europe/Berlin",
        start,
        end,
        60,
        "FreeBusy",
    )
    assert isinstance(results[1], ErrorMailRecipientNotFound)
    check_events(results[0], overlapping(ALICE_EXPECTED, start, end), detailed=False)
    assert results[2].calendar_events is None or results[2].calendar_events == []


def test_alias_answers_for_the_mailbox(node: Node) -> None:
    alias = node.alice.replace("alice-", "ally-")
    start, end = u(2024, 3, 4), u(2024, 3, 5)
    [result] = free_busy(node, [alias], "Europe/Berlin", start, end, 60, "MergedOnly")
    assert result.merged == oracle_merged(ALICE_EXPECTED, start, end, 60)


# --- raw SOAP: per-mailbox errors that exchangelib would raise on -------------------------------


def soap(
    addresses: list[str], start: str, end: str, view: str = "FreeBusyMerged", interval: int = 60
) -> bytes:
    boxes = "".join(
        f"<t:MailboxData><t:Email><t:Address>{a}</t:Address></t:Email>"
        "<t:AttendeeType>Required</t:AttendeeType></t:MailboxData>"
        for a in addresses
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
 xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header>
<s:Body><m:GetUserAvailabilityRequest>
<t:TimeZone><t:Bias>0</t:Bias>
<t:StandardTime><t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>1</t:DayOrder><t:Month>1</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:StandardTime>
<t:DaylightTime><t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>1</t:DayOrder><t:Month>1</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:DaylightTime>
</t:TimeZone>
<m:MailboxDataArray>{boxes}</m:MailboxDataArray>
<t:FreeBusyViewOptions><t:TimeWindow><t:StartTime>{start}</t:StartTime><t:EndTime>{end}</t:EndTime></t:TimeWindow>
<t:MergedFreeBusyIntervalInMinutes>{interval}</t:MergedFreeBusyIntervalInMinutes>
<t:RequestedView>{view}</t:RequestedView></t:FreeBusyViewOptions>
</m:GetUserAvailabilityRequest></s:Body></s:Envelope>""".encode()


def post(node: Node, body: bytes, auth: tuple[str, str] | None = CLIENT) -> httpx.Response:
    with httpx.Client(verify=str(node.ca_pem), trust_env=False, timeout=30) as client:
        return client.post(
            node.url + "/EWS/Exchange.asmx",
            content=body,
            headers={"Content-Type": "text/xml; charset=utf-8"},
            auth=auth,
        )


def response_codes(body: bytes) -> list[str]:
    from lxml import etree

    tree = etree.fromstring(body)
    ns = {"m": "http://schemas.microsoft.com/exchange/services/2006/messages"}
    return tree.xpath("//m:FreeBusyResponse/m:ResponseMessage/m:ResponseCode/text()", namespaces=ns)


def test_backend_failure_and_other_site_stay_per_mailbox(node: Node) -> None:
    from tests.support.ews_schema import validate_ews_body

    far = node.alice.replace("alice-", "far-")
    r = post(
        node,
        soap(
            [node.alice, node.broken, far, f"x@{DOMAIN}"],
            "2024-03-04T00:00:00Z",
            "2024-03-05T00:00:00Z",
        ),
    )
    assert r.status_code == 200, r.text
    validate_ews_body(r.content)
    assert response_codes(r.content) == [
        "NoError",
        "ErrorFreeBusyGenerationFailed",
        "ErrorProxyRequestProcessingFailed",
        "ErrorMailRecipientNotFound",
    ]
    # the failed mailbox is never reported as free
    assert b"<t:MergedFreeBusy>" in r.content and r.content.count(b"<t:MergedFreeBusy>") == 1


def test_login_is_required(node: Node) -> None:
    r = post(node, soap([node.alice], "2024-03-04T00:00:00Z", "2024-03-05T00:00:00Z"), auth=None)
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
    r = post(
        node,
        soap([node.alice], "2024-03-04T00:00:00Z", "2024-03-05T00:00:00Z"),
        auth=(CLIENT[0], "wrong"),
    )
    assert r.status_code == 401
