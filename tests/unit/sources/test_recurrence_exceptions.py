"""EXDATE and RECURRENCE-ID remove or replace exactly the occurrence that starts at their instant.

RFC 5545 §3.8.5.1 (EXDATE) and §3.8.4.4 (RECURRENCE-ID) name an occurrence by its start; a UTC
value and a TZID value name the same occurrence when they are the same instant, and no other.
Expected times are worked out by hand: Europe/Amsterdam is UTC+1 until 2027-03-28 01:00Z.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cas.model.freebusy import Window
from cas.sources.ical import events_from_calendar

WEEK = Window(datetime(2027, 3, 19, tzinfo=UTC), datetime(2027, 3, 26, tzinfo=UTC))


def z(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 3, day, hour, minute, tzinfo=UTC)


def calendar(*components: str) -> str:
    body = "".join(components)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cas tests//EN\r\n{body}END:VCALENDAR\r\n"


def vevent(*lines: str) -> str:
    return (
        "BEGIN:VEVENT\r\nDTSTAMP:20270101T000000Z\r\n"
        + "".join(line + "\r\n" for line in lines)
        + "END:VEVENT\r\n"
    )


# The case of the issue: four occurrences (COUNT counts before exclusion, RFC 5545 §3.8.5.3),
# 14:00 and 15:00 CET on 20 and 21 March; the EXDATE is 15:00 CET on the 21st, in UTC.
MASTER = (
    "UID:exdate-by-instant",
    "SUMMARY:Twice a day",
    "DTSTART;TZID=Europe/Amsterdam:20270320T140000",
    "DTEND;TZID=Europe/Amsterdam:20270320T143000",
    "RRULE:FREQ=DAILY;COUNT=4;BYHOUR=14,15",
)


def starts(ics: str, zone: str = "Europe/Amsterdam") -> list[tuple[datetime, datetime, str]]:
    return [
        (e.start, e.end, e.details.subject if e.details else "")
        for e in events_from_calendar([ics], WEEK, zone)
    ]


def test_a_utc_exdate_removes_only_the_occurrence_at_that_instant() -> None:
    ics = calendar(vevent(*MASTER, "EXDATE:20270321T140000Z"))
    assert [s for s, _, _ in starts(ics)] == [z(20, 13), z(20, 14), z(21, 13)]


def test_an_exdate_in_the_series_zone_removes_the_same_occurrence() -> None:
    ics = calendar(vevent(*MASTER, "EXDATE;TZID=Europe/Amsterdam:20270321T150000"))
    assert [s for s, _, _ in starts(ics)] == [z(20, 13), z(20, 14), z(21, 13)]


def test_an_exdate_in_another_zone_removes_the_occurrence_at_its_instant() -> None:
    # 10:00 in New York (EDT, UTC-4 since 14 March) is 14:00Z, 15:00 CET.
    ics = calendar(vevent(*MASTER, "EXDATE;TZID=America/New_York:20270321T100000"))
    assert [s for s, _, _ in starts(ics)] == [z(20, 13), z(20, 14), z(21, 13)]


def test_an_exdate_matching_no_occurrence_removes_nothing() -> None:
    ics = calendar(vevent(*MASTER, "EXDATE:20270321T133000Z"))
    assert len(starts(ics)) == 4


def test_a_utc_recurrence_id_replaces_only_the_occurrence_at_that_instant() -> None:
    moved = vevent(
        "UID:exdate-by-instant",
        "SUMMARY:Moved",
        "RECURRENCE-ID:20270321T140000Z",
        "DTSTART;TZID=Europe/Amsterdam:20270321T170000",
        "DTEND;TZID=Europe/Amsterdam:20270321T173000",
    )
    assert starts(calendar(vevent(*MASTER), moved)) == [
        (z(20, 13), z(20, 13, 30), "Twice a day"),
        (z(20, 14), z(20, 14, 30), "Twice a day"),
        (z(21, 13), z(21, 13, 30), "Twice a day"),
        (z(21, 16), z(21, 16, 30), "Moved"),
    ]


def test_an_override_of_an_excluded_occurrence_is_dropped_too() -> None:
    moved = vevent(
        "UID:exdate-by-instant",
        "SUMMARY:Moved",
        "RECURRENCE-ID;TZID=Europe/Amsterdam:20270321T150000",
        "DTSTART;TZID=Europe/Amsterdam:20270321T170000",
        "DTEND;TZID=Europe/Amsterdam:20270321T173000",
    )
    ics = calendar(vevent(*MASTER, "EXDATE:20270321T140000Z"), moved)
    assert [s for s, _, _ in starts(ics)] == [z(20, 13), z(20, 14), z(21, 13)]


def test_a_cancelled_override_frees_its_occurrence_only() -> None:
    cancelled = vevent(
        "UID:exdate-by-instant",
        "STATUS:CANCELLED",
        "RECURRENCE-ID:20270320T130000Z",
        "DTSTART;TZID=Europe/Amsterdam:20270320T140000",
        "DTEND;TZID=Europe/Amsterdam:20270320T143000",
    )
    ics = calendar(vevent(*MASTER), cancelled)
    assert [s for s, _, _ in starts(ics)] == [z(20, 14), z(21, 13), z(21, 14)]


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "Asia/Tokyo"])
def test_all_day_series_exdate_by_date(zone: str) -> None:
    ics = calendar(
        vevent(
            "UID:daily-all-day",
            "SUMMARY:Off",
            "DTSTART;VALUE=DATE:20270320",
            "RRULE:FREQ=DAILY;COUNT=3",
            "EXDATE;VALUE=DATE:20270321",
        )
    )
    got = [s for s, _, _ in starts(ics, zone)]
    midnight = {"Europe/Amsterdam": 23, "Asia/Tokyo": 15}[zone]  # local midnight, in UTC
    assert got == [z(19, midnight), z(21, midnight)]


def test_floating_series_exdate_is_read_in_the_owner_zone() -> None:
    ics = calendar(
        vevent(
            "UID:floating-series",
            "SUMMARY:Floating",
            "DTSTART:20270320T090000",
            "DTEND:20270320T100000",
            "RRULE:FREQ=DAILY;COUNT=3",
            "EXDATE:20270321T090000",
        )
    )
    assert [s for s, _, _ in starts(ics)] == [z(20, 8), z(22, 8)]
