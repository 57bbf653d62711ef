"""Calendar objects -> free/busy events (cas.sources.ical), over hand-written ICS files.

Every expected time below was worked out by hand from the zone rules (CET +1 / CEST +2 from the
last Sunday of March; EST -5 / EDT -4 from the second Sunday of March to the first Sunday of
November; PDT -7; JST +9), never by running the code under test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.errors import BackendFailure
from cas.model.freebusy import BusyType, Event, Window
from cas.sources import ical
from cas.sources.davxml import parse_multistatus
from cas.sources.ical import (
    CalendarDataError,
    CalendarObject,
    busy_type_of,
    events_from_calendar,
    expand_calendar,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "ics"

FREE, TENT, BUSY, OOF, ELSEWHERE = (
    BusyType.FREE,
    BusyType.TENTATIVE,
    BusyType.BUSY,
    BusyType.OOF,
    BusyType.WORKING_ELSEWHERE,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def day(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return utc(y, m, d, h, mi)


def window(start: datetime, end: datetime) -> Window:
    return Window(start, end)


def ics(*names: str) -> list[str]:
    return [(DATA / name).read_text(encoding="utf-8") for name in names]


Row = tuple[datetime, datetime, BusyType, str]


def rows(events: list[Event]) -> list[Row]:
    return [(e.start, e.end, e.busy_type, e.details.subject if e.details else "") for e in events]


@dataclass(frozen=True)
class Case:
    name: str
    files: tuple[str, ...]
    window: Window
    zone: str
    expected: list[Row]


CASES = [
    Case(
        "outlook: CDO status wins, cancelled dropped, unknown CDO falls back",
        ("outlook_statuses.ics",),
        window(day(2024, 3, 11), day(2024, 3, 16)),
        "Europe/Berlin",
        [
            (day(2024, 3, 11, 8), day(2024, 3, 11, 16), OOF, "Out of office"),
            (day(2024, 3, 12, 9), day(2024, 3, 12, 10), BUSY, "Busy although transparent"),
            (day(2024, 3, 13, 9), day(2024, 3, 13, 9, 30), FREE, "Free although tentative"),
            (day(2024, 3, 13, 14), day(2024, 3, 13, 15), TENT, "Unknown Outlook status"),
            (day(2024, 3, 14, 7), day(2024, 3, 14, 16), ELSEWHERE, "Home office"),
            (day(2024, 3, 15, 13), day(2024, 3, 15, 14), TENT, "Budget review"),
        ],
    ),
    Case(
        "google: UTC times, tentative, transparent",
        ("google_utc.ics", "google_tentative.ics", "transparent.ics"),
        window(day(2024, 3, 12), day(2024, 3, 13)),
        "America/Los_Angeles",
        [
            (day(2024, 3, 12, 14), day(2024, 3, 12, 15), BUSY, "Standup"),
            (day(2024, 3, 12, 16), day(2024, 3, 12, 16, 30), TENT, "Maybe lunch"),
            (day(2024, 3, 12, 17), day(2024, 3, 12, 18), FREE, "Focus time (shown as free)"),
        ],
    ),
    Case(
        "weekly: EXDATE skipped, two overrides moved, CET->CEST",
        ("weekly_exdate_overrides.ics",),
        window(day(2024, 3, 1), day(2024, 4, 30)),
        "UTC",
        [
            (day(2024, 3, 4, 9), day(2024, 3, 4, 10), BUSY, "Weekly sync"),
            (day(2024, 3, 12, 13), day(2024, 3, 12, 14), BUSY, "Weekly sync (moved to Tuesday)"),
            (day(2024, 3, 25, 9), day(2024, 3, 25, 10), BUSY, "Weekly sync"),
            (day(2024, 4, 1, 8), day(2024, 4, 1, 9), BUSY, "Weekly sync"),
            (day(2024, 4, 5, 14), day(2024, 4, 5, 15), BUSY, "Weekly sync (moved to Friday)"),
        ],
    ),
    Case(
        "weekly: an instance moved out of the window leaves nothing behind",
        ("weekly_exdate_overrides.ics",),
        window(day(2024, 3, 11), day(2024, 3, 12)),
        "UTC",
        [],
    ),
    Case(
        "weekly: an instance moved into the window from outside shows up",
        ("weekly_exdate_overrides.ics",),
        window(day(2024, 4, 5), day(2024, 4, 6)),
        "UTC",
        [(day(2024, 4, 5, 14), day(2024, 4, 5, 15), BUSY, "Weekly sync (moved to Friday)")],
    ),
    Case(
        "weekly: the day an instance was moved away from is free",
        ("weekly_exdate_overrides.ics",),
        window(day(2024, 4, 8), day(2024, 4, 9)),
        "UTC",
        [],
    ),
    Case(
        "weekly: the EXDATE day is free",
        ("weekly_exdate_overrides.ics",),
        window(day(2024, 3, 18), day(2024, 3, 19)),
        "UTC",
        [],
    ),
    Case(
        "rdate: date-times in TZID (EST then EDT) and a PERIOD",
        ("rdate.ics",),
        window(day(2024, 3, 1), day(2024, 4, 1)),
        "UTC",
        [
            (day(2024, 3, 5, 18), day(2024, 3, 5, 19), BUSY, "Clinic hours"),
            (day(2024, 3, 7, 21), day(2024, 3, 7, 22), BUSY, "Clinic hours"),
            (day(2024, 3, 20, 13), day(2024, 3, 20, 14), BUSY, "Clinic hours"),
            (day(2024, 3, 22, 15), day(2024, 3, 22, 17), BUSY, "Clinic hours"),
        ],
    ),
    Case(
        "new york series over the US spring-forward change",
        ("ny_weekdays.ics",),
        window(day(2024, 3, 7), day(2024, 3, 13)),
        "Europe/Berlin",
        [
            (day(2024, 3, 7, 14), day(2024, 3, 7, 14, 30), BUSY, "NY standup"),
            (day(2024, 3, 8, 14), day(2024, 3, 8, 14, 30), BUSY, "NY standup"),
            (day(2024, 3, 11, 13), day(2024, 3, 11, 13, 30), BUSY, "NY standup"),
            (day(2024, 3, 12, 13), day(2024, 3, 12, 13, 30), BUSY, "NY standup"),
        ],
    ),
    Case(
        "new york series over the US fall-back change",
        ("ny_weekdays.ics",),
        window(day(2024, 11, 1), day(2024, 11, 6)),
        "UTC",
        [
            (day(2024, 11, 1, 13), day(2024, 11, 1, 13, 30), BUSY, "NY standup"),
            (day(2024, 11, 4, 14), day(2024, 11, 4, 14, 30), BUSY, "NY standup"),
            (day(2024, 11, 5, 14), day(2024, 11, 5, 14, 30), BUSY, "NY standup"),
        ],
    ),
    Case(
        "an event crossing spring-forward in its own zone lasts two hours",
        ("dst_crossing.ics",),
        window(day(2024, 3, 30), day(2024, 4, 1)),
        "UTC",
        [
            (
                day(2024, 3, 31, 0),
                day(2024, 3, 31, 2),
                BUSY,
                "Night shift over the spring-forward change",
            )
        ],
    ),
    Case(
        "an event crossing fall-back in its own zone lasts four hours",
        ("dst_crossing.ics",),
        window(day(2024, 11, 2), day(2024, 11, 4)),
        "UTC",
        [(day(2024, 11, 3, 4), day(2024, 11, 3, 8), BUSY, "Night shift over the fall-back change")],
    ),
    Case(
        "all-day in the owner's zone (Berlin): no DTEND, DURATION, over DST",
        ("all_day.ics",),
        window(day(2024, 3, 13), day(2024, 4, 2)),
        "Europe/Berlin",
        [
            (day(2024, 3, 13, 23), day(2024, 3, 14, 23), OOF, "Conference (no DTEND)"),
            (day(2024, 3, 19, 23), day(2024, 3, 21, 23), BUSY, "Offsite (DURATION)"),
            (day(2024, 3, 29, 23), day(2024, 3, 31, 22), FREE, "Weekend trip"),
        ],
    ),
    Case(
        "all-day in the owner's zone (Los Angeles, PDT)",
        ("all_day.ics",),
        window(day(2024, 3, 13), day(2024, 4, 2)),
        "America/Los_Angeles",
        [
            (day(2024, 3, 14, 7), day(2024, 3, 15, 7), OOF, "Conference (no DTEND)"),
            (day(2024, 3, 20, 7), day(2024, 3, 22, 7), BUSY, "Offsite (DURATION)"),
            (day(2024, 3, 30, 7), day(2024, 4, 1, 7), FREE, "Weekend trip"),
        ],
    ),
    Case(
        "all-day day already over in Berlin at 23:00Z",
        ("all_day.ics",),
        window(day(2024, 3, 14, 23), day(2024, 3, 15)),
        "Europe/Berlin",
        [],
    ),
    Case(
        "the same hour is inside the all-day day in Los Angeles",
        ("all_day.ics",),
        window(day(2024, 3, 14, 23), day(2024, 3, 15)),
        "America/Los_Angeles",
        [(day(2024, 3, 14, 7), day(2024, 3, 15, 7), OOF, "Conference (no DTEND)")],
    ),
    Case(
        "floating time read in Tokyo",
        ("floating.ics",),
        window(day(2024, 3, 13), day(2024, 3, 14)),
        "Asia/Tokyo",
        [(day(2024, 3, 13, 0), day(2024, 3, 13, 1), BUSY, "Dentist (floating time)")],
    ),
    Case(
        "floating time read in New York (EDT)",
        ("floating.ics",),
        window(day(2024, 3, 13), day(2024, 3, 14)),
        "America/New_York",
        [(day(2024, 3, 13, 13), day(2024, 3, 13, 14), BUSY, "Dentist (floating time)")],
    ),
    Case(
        "floating time outside the window for a Tokyo owner",
        ("floating.ics",),
        window(day(2024, 3, 13, 12), day(2024, 3, 13, 15)),
        "Asia/Tokyo",
        [],
    ),
    Case(
        "a cancelled instance of a series is dropped, the others stay",
        ("cancelled_instance.ics",),
        window(day(2024, 3, 1), day(2024, 4, 1)),
        "UTC",
        [
            (day(2024, 3, 5, 15), day(2024, 3, 5, 16), BUSY, "Design review"),
            (day(2024, 3, 19, 15), day(2024, 3, 19, 16), BUSY, "Design review"),
        ],
    ),
    Case(
        "two 'Customized Time Zone' definitions do not leak into each other",
        ("outlook_custom_tz_cet.ics", "outlook_custom_tz_us_eastern.ics"),
        window(day(2024, 7, 4), day(2024, 7, 5)),
        "UTC",
        [
            (day(2024, 7, 4, 8), day(2024, 7, 4, 9), BUSY, "Custom zone (central Europe rules)"),
            (day(2024, 7, 4, 14), day(2024, 7, 4, 15), BUSY, "Custom zone (US eastern rules)"),
        ],
    ),
    Case(
        "... whichever is read first",
        ("outlook_custom_tz_us_eastern.ics", "outlook_custom_tz_cet.ics"),
        window(day(2024, 7, 4), day(2024, 7, 5)),
        "UTC",
        [
            (day(2024, 7, 4, 8), day(2024, 7, 4, 9), BUSY, "Custom zone (central Europe rules)"),
            (day(2024, 7, 4, 14), day(2024, 7, 4, 15), BUSY, "Custom zone (US eastern rules)"),
        ],
    ),
    Case(
        "private and confidential events are still busy time",
        ("private_alarm.ics",),
        window(day(2024, 3, 14), day(2024, 3, 15)),
        "UTC",
        [
            (day(2024, 3, 14, 12), day(2024, 3, 14, 13), BUSY, "Doctor"),
            (day(2024, 3, 14, 15), day(2024, 3, 14, 15, 30), BUSY, "HR talk"),
        ],
    ),
    Case(
        "a malformed object is skipped, the others count",
        ("malformed_dtstart.ics", "google_utc.ics"),
        window(day(2024, 3, 12), day(2024, 3, 13)),
        "UTC",
        [(day(2024, 3, 12, 14), day(2024, 3, 12, 15), BUSY, "Standup")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_events_from_calendar(case: Case) -> None:
    events = events_from_calendar(ics(*case.files), case.window, case.zone)
    assert rows(events) == case.expected
    assert all(e.start.utcoffset() == timedelta(0) for e in events)


def details_by_subject(names: tuple[str, ...], w: Window) -> dict[str, list]:
    found: dict[str, list] = {}
    for event in events_from_calendar(ics(*names), w, "UTC"):
        assert event.details is not None
        found.setdefault(event.details.subject or "", []).append(event.details)
    return found


@pytest.mark.parametrize(
    ("files", "subject", "expected"),
    [
        (
            ("google_utc.ics",),
            "Standup",
            dict(
                location="Meeting room 1",
                is_meeting=True,
                is_reminder_set=True,
                is_recurring=False,
                is_exception=False,
                is_private=False,
            ),
        ),
        (
            ("private_alarm.ics",),
            "Doctor",
            dict(location="Clinic", is_meeting=False, is_reminder_set=True, is_private=True),
        ),
        (("private_alarm.ics",), "HR talk", dict(is_reminder_set=False, is_private=True)),
        (
            ("weekly_exdate_overrides.ics",),
            "Weekly sync",
            dict(is_meeting=True, is_recurring=True, is_exception=False, location=None),
        ),
        (
            ("weekly_exdate_overrides.ics",),
            "Weekly sync (moved to Friday)",
            dict(is_recurring=True, is_exception=True, location="Room 2"),
        ),
        (("rdate.ics",), "Clinic hours", dict(is_recurring=True, is_exception=False)),
        (("outlook_statuses.ics",), "Budget review", dict(is_meeting=True, location="Room 4.12")),
        (("outlook_statuses.ics",), "Out of office", dict(is_meeting=False, is_private=False)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_event_details(files: tuple[str, ...], subject: str, expected: dict) -> None:
    found = details_by_subject(files, window(day(2024, 3, 1), day(2024, 5, 1)))
    assert subject in found
    for details in found[subject]:
        for field, value in expected.items():
            assert getattr(details, field) == value, field


def test_ids_are_short_hex_unique_per_instance_and_stable_across_windows() -> None:
    texts = ics("weekly_exdate_overrides.ics")
    full = events_from_calendar(texts, window(day(2024, 3, 1), day(2024, 4, 30)), "UTC")
    ids = [e.details.id for e in full if e.details]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i or "") for i in ids)
    assert len(set(ids)) == len(ids) == 5
    narrow = events_from_calendar(texts, window(day(2024, 4, 5), day(2024, 4, 6)), "UTC")
    assert [e.details.id for e in narrow if e.details] == [ids[-1]]


@pytest.mark.parametrize(
    ("status", "transp", "cdo", "expected"),
    [
        ("CANCELLED", None, "BUSY", None),
        ("cancelled", "OPAQUE", None, None),
        (None, None, "OOF", OOF),
        ("TENTATIVE", None, "FREE", FREE),
        (None, "TRANSPARENT", "BUSY", BUSY),
        ("CONFIRMED", None, "WORKINGELSEWHERE", ELSEWHERE),
        (None, None, "tentative", TENT),
        ("TENTATIVE", "TRANSPARENT", None, TENT),
        ("TENTATIVE", None, "NONSENSE", TENT),
        (None, "TRANSPARENT", None, FREE),
        ("CONFIRMED", "OPAQUE", None, BUSY),
        (None, None, None, BUSY),
    ],
)
def test_busy_type_precedence(status, transp, cdo, expected) -> None:
    assert busy_type_of(status, transp, cdo) is expected


def test_all_objects_malformed_fails_the_mailbox() -> None:
    texts = [*ics("malformed_dtstart.ics"), "this is not iCalendar", b""]
    with pytest.raises(BackendFailure, match="none of 3 calendar object"):
        events_from_calendar(texts, window(day(2024, 3, 1), day(2024, 4, 1)), "UTC")


def test_no_objects_is_an_empty_calendar() -> None:
    assert events_from_calendar([], window(day(2024, 3, 1), day(2024, 4, 1)), "UTC") == []


def test_skipped_objects_are_reported_with_their_href() -> None:
    objects = [
        CalendarObject("/ann/calendar/broken.ics", '"1"', ics("malformed_dtstart.ics")[0]),
        CalendarObject("/ann/calendar/ok.ics", '"2"', ics("google_utc.ics")[0]),
    ]
    expansion = expand_calendar(objects, window(day(2024, 3, 12), day(2024, 3, 13)), "UTC")
    assert [s.label for s in expansion.skipped] == ["/ann/calendar/broken.ics"]
    assert "DTSTART" in expansion.skipped[0].reason
    assert len(expansion.events) == 1 and expansion.objects == 2


def test_runaway_recurrence_is_skipped_not_expanded_forever(monkeypatch) -> None:
    monkeypatch.setattr(ical, "MAX_OCCURRENCES_PER_OBJECT", 50)
    minutely = (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:spam\n"
        "DTSTART:20240301T000000Z\nDTEND:20240301T000100Z\nRRULE:FREQ=MINUTELY\n"
        "END:VEVENT\nEND:VCALENDAR\n"
    )
    w = window(day(2024, 3, 1), day(2024, 3, 2))
    expansion = expand_calendar([minutely, *ics("google_utc.ics")], w, "UTC")
    assert [s.label for s in expansion.skipped] == ["#0"]
    with pytest.raises(CalendarDataError, match="more than 50 occurrences"):
        events_from_calendar([minutely], w, "UTC")


def test_zero_length_event_inside_the_window_counts() -> None:
    text = (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:tick\n"
        "DTSTART:20240312T120000Z\nSUMMARY:Deadline\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    events = events_from_calendar(
        [text.encode()], window(day(2024, 3, 12), day(2024, 3, 13)), "UTC"
    )
    assert rows(events) == [(day(2024, 3, 12, 12), day(2024, 3, 12, 12), BUSY, "Deadline")]


def test_unknown_owner_zone_is_a_backend_failure() -> None:
    with pytest.raises(BackendFailure, match="Mars/Olympus"):
        events_from_calendar(
            ics("floating.ics"), window(day(2024, 3, 1), day(2024, 4, 1)), "Mars/Olympus"
        )


SERIES_FILES = ("weekly_exdate_overrides.ics", "ny_weekdays.ics", "all_day.ics", "rdate.ics")
FULL = window(day(2024, 3, 1), day(2024, 5, 1))


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=60 * 24 * 58),
    length=st.integers(min_value=1, max_value=60 * 24 * 4),
)
def test_any_sub_window_sees_exactly_the_overlapping_part_of_the_full_expansion(
    start: int, length: int
) -> None:
    texts = ics(*SERIES_FILES)
    full = events_from_calendar(texts, FULL, "Europe/Berlin")
    # the sub-window must lie inside FULL, or it sees events FULL never expanded
    sub = window(
        FULL.start + timedelta(minutes=start),
        min(FULL.start + timedelta(minutes=start + length), FULL.end),
    )
    expected = [e for e in full if sub.overlaps(e.start, e.end)]
    assert events_from_calendar(texts, sub, "Europe/Berlin") == expected


# --- the REPORT answer --------------------------------------------------------------------

# As Radicale 3.9 answers a calendar-query (one object), wrapped for line length only.
RADICALE_ANSWER = (
    b"<?xml version='1.0' encoding='utf-8'?>\n"
    b'<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response>'
    b"<href>/ann%40contoso.test/calendar/e1.ics</href><propstat><prop>"
    b'<getetag>"83c8"</getetag><C:calendar-data>BEGIN:VCALENDAR\n'
    b"VERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:e1\nDTSTART:20240304T090000Z\n"
    b"DTEND:20240304T100000Z\nEND:VEVENT\nEND:VCALENDAR\n"
    b"</C:calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>"
    b"</multistatus>"
)


def test_parse_multistatus_reads_href_etag_and_data() -> None:
    [obj] = parse_multistatus(RADICALE_ANSWER)
    assert obj.href == "/ann%40contoso.test/calendar/e1.ics"
    assert obj.etag == '"83c8"'
    assert obj.ics.startswith("BEGIN:VCALENDAR") and "UID:e1" in obj.ics


def test_parse_multistatus_of_an_empty_calendar() -> None:
    assert parse_multistatus(b'<d:multistatus xmlns:d="DAV:"/>') == []


def test_parse_multistatus_skips_a_listed_collection() -> None:
    body = (
        b'<d:multistatus xmlns:d="DAV:"><d:response><d:href>/ann/calendar/</d:href>'
        b'<d:propstat><d:prop><d:getetag>"x"</d:getetag></d:prop>'
        b"<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
    )
    assert parse_multistatus(body) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops", "not well-formed"),
        (b"", "not well-formed"),
        (b'<?xml version="1.0"?><error xmlns="DAV:"/>', "expected DAV:multistatus"),
        (
            b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b'<multistatus xmlns="DAV:">&b;</multistatus>',
            "DTD",
        ),
        (
            b'<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:response>'
            b"<d:href>/ann/calendar/gone.ics</d:href><d:propstat><d:prop><c:calendar-data/></d:prop>"
            b"<d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>"
            b"</d:multistatus>",
            r"gone.ics matched but its calendar data was not returned \(HTTP 404\)",
        ),
    ],
    ids=["html", "empty", "wrong-root", "dtd-entities", "withheld-data"],
)
def test_parse_multistatus_refuses_what_it_cannot_trust(body: bytes, message: str) -> None:
    with pytest.raises(CalendarDataError, match=message):
        parse_multistatus(body)


# --- the backend's single retry of a broken read ----------------------------------------------


async def test_a_read_whose_connection_broke_is_sent_once_more_and_only_once() -> None:
    import httpx

    from cas.sources.caldav import CalDavBackend
    from sitemap.model import CalDavBackendConfig, Mailbox

    calls: list[int] = []

    def answer(breaks: int):
        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            if len(calls) <= breaks:
                raise httpx.RemoteProtocolError("server closed the connection", request=request)
            # an empty calendar, as a sync-collection answer (the first request of a fetch)
            body = b'<multistatus xmlns="DAV:"><sync-token>t1</sync-token></multistatus>'
            return httpx.Response(207, content=body)

        return handler

    mailbox = Mailbox("ann@contoso.test", "eu")
    span = window(day(2024, 3, 4), day(2024, 3, 5))
    for breaks, survives in ((1, True), (2, False)):
        calls.clear()
        client = httpx.AsyncClient(transport=httpx.MockTransport(answer(breaks)))
        backend = CalDavBackend(CalDavBackendConfig(url="http://127.0.0.1:1/"), client=client)
        if survives:
            assert (await backend.fetch(mailbox, span)).events == ()
        else:
            with pytest.raises(BackendFailure, match="HTTP failure"):
                await backend.fetch(mailbox, span)
        assert len(calls) == 2
