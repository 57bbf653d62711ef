"""Lab seed data: plausible unique mailboxes; calendars that parse, expand and repeat exactly."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import icalendar
import pytest
import recurring_ical_events
from hypothesis import given, settings
from hypothesis import strategies as st

from caslab.seed import (
    EVENT_KINDS,
    ZONES,
    SeedEvent,
    SeedMailbox,
    generate_calendar,
    generate_directory,
    generate_mailboxes,
)

START = date(2025, 3, 24)  # a Monday, a week before Europe's clocks change


def calendar_of(mailbox: SeedMailbox, **kwargs: object) -> list[SeedEvent]:
    options: dict[str, object] = {"start": START, "days": 28, "rng_seed": 7} | kwargs
    return generate_calendar(mailbox, **options)  # type: ignore[arg-type]


def expand(event: SeedEvent, days: int = 120) -> list[icalendar.Event]:
    calendar = icalendar.Calendar.from_ical(event.ics)
    return list(
        recurring_ical_events.of(calendar).between(
            START - timedelta(days=1), START + timedelta(days=days)
        )
    )


# --- mailboxes ------------------------------------------------------------------------------


def test_mailboxes_are_plausible_people_with_unique_addresses() -> None:
    people = generate_mailboxes("eu", 40, "contoso.test")
    assert len(people) == 40
    assert len({p.address.casefold() for p in people}) == 40
    for person in people:
        first, last = person.display_name.split(" ")
        assert person.address == f"{first.lower()}.{last.lower()}@contoso.test"
        assert person.timezone in ZONES


def test_time_zones_are_spread_over_all_zones() -> None:
    assert {p.timezone for p in generate_mailboxes("us", 12, "contoso.test")} == set(ZONES)


def test_mailboxes_are_deterministic_and_differ_by_site() -> None:
    assert generate_mailboxes("eu", 10, "contoso.test") == generate_mailboxes(
        "eu", 10, "contoso.test"
    )
    assert generate_mailboxes("eu", 10, "contoso.test") != generate_mailboxes(
        "us", 10, "contoso.test"
    )


def test_more_mailboxes_than_names_still_get_unique_addresses() -> None:
    people = generate_mailboxes("eu", 1500, "contoso.test")
    assert len({p.address for p in people}) == 1500
    assert any(re.search(r"\d@", p.address) for p in people)


def test_taken_addresses_are_avoided_and_directory_is_unique_across_sites() -> None:
    first = generate_mailboxes("eu", 3, "contoso.test")
    again = generate_mailboxes("eu", 3, "contoso.test", taken=[m.address.upper() for m in first])
    assert not {m.address for m in first} & {m.address for m in again}
    directory = generate_directory(["eu", "us", "apac"], 200, "contoso.test")
    addresses = [m.address for people in directory.values() for m in people]
    assert len(addresses) == 600 == len(set(addresses))


def test_no_mailboxes_and_bad_counts() -> None:
    assert generate_mailboxes("eu", 0, "contoso.test") == []
    with pytest.raises(ValueError):
        generate_mailboxes("eu", -1, "contoso.test")
    with pytest.raises(ValueError):
        calendar_of(SeedMailbox("a@b.test", "A B", "UTC"), days=0)


# --- calendars ------------------------------------------------------------------------------

ANN = SeedMailbox("ann.jansen@contoso.test", "Ann Jansen", "Europe/Amsterdam")


@pytest.fixture(scope="module")
def events() -> list[SeedEvent]:
    return calendar_of(ANN)


def of_kind(events: list[SeedEvent], kind: str) -> list[SeedEvent]:
    return [e for e in events if e.kind == kind]


def test_every_kind_appears(events: list[SeedEvent]) -> None:
    assert {e.kind for e in events} == set(EVENT_KINDS)


def test_every_object_parses_expands_and_holds_one_uid(events: list[SeedEvent]) -> None:
    for event in events:
        calendar = icalendar.Calendar.from_ical(event.ics)
        assert event.ics.startswith("BEGIN:VCALENDAR") and "PRODID:" in event.ics
        assert {str(v["UID"]) for v in calendar.walk("VEVENT")} == {event.uid}
        assert expand(event)
    assert len({e.uid for e in events}) == len(events)


def test_generation_is_deterministic(events: list[SeedEvent]) -> None:
    assert calendar_of(ANN) == events
    assert calendar_of(ANN, rng_seed=8) != events


def test_weekly_meeting_has_a_deleted_and_a_moved_instance(events: list[SeedEvent]) -> None:
    [weekly] = of_kind(events, "weekly")
    calendar = icalendar.Calendar.from_ical(weekly.ics)
    master, moved = calendar.walk("VEVENT")
    assert master["RRULE"]["FREQ"] == ["WEEKLY"] and "EXDATE" in master
    assert "RECURRENCE-ID" in moved and "RRULE" not in moved
    first = master.decoded("DTSTART")
    starts = [e.decoded("DTSTART") for e in expand(weekly)]
    assert first + timedelta(weeks=1) not in starts  # EXDATE
    assert first + timedelta(weeks=2) not in starts  # moved away...
    assert moved.decoded("DTSTART") in starts  # ...to here
    assert first.tzinfo is not None and "TZID=Europe/Amsterdam" in weekly.ics


def test_standup_is_counted_daily(events: list[SeedEvent]) -> None:
    [standup] = of_kind(events, "standup")
    assert re.search(r"RRULE:FREQ=DAILY;COUNT=\d+", standup.ics)
    count = int(re.search(r"COUNT=(\d+)", standup.ics)[1])  # type: ignore[index]
    assert len(expand(standup)) == count


def test_one_off_meetings_have_attendees_and_a_location(events: list[SeedEvent]) -> None:
    meetings = of_kind(events, "meeting")
    assert len(meetings) >= 3
    for meeting in meetings:
        assert "ATTENDEE;" in meeting.ics and "LOCATION:" in meeting.ics
        assert 'ORGANIZER;CN="Ann Jansen":mailto:ann.jansen@contoso.test' in meeting.ics
        assert "mailto:ann.jansen@contoso.test" not in meeting.ics.split("ORGANIZER")[0]


@pytest.mark.parametrize(
    ("kind", "marks"),
    [
        ("tentative", ["STATUS:TENTATIVE"]),
        ("oof", ["X-MICROSOFT-CDO-BUSYSTATUS:OOF", "DTSTART;VALUE=DATE:"]),
        ("free", ["TRANSP:TRANSPARENT", "DTSTART;VALUE=DATE:"]),
        ("private", ["CLASS:PRIVATE", "BEGIN:VALARM", "TRIGGER:-PT15M"]),
        ("elsewhere", ["X-MICROSOFT-CDO-BUSYSTATUS:WORKINGELSEWHERE"]),
        ("cancelled", ["STATUS:CANCELLED"]),
    ],
)
def test_each_special_item(events: list[SeedEvent], kind: str, marks: list[str]) -> None:
    [item] = of_kind(events, kind)
    for mark in marks:
        assert mark in item.ics


def test_zoned_items_carry_a_vtimezone_and_some_items_are_in_utc(events: list[SeedEvent]) -> None:
    zoned = [e for e in events if "TZID=Europe/Amsterdam" in e.ics]
    assert zoned and all("BEGIN:VTIMEZONE\r\nTZID:Europe/Amsterdam" in e.ics for e in zoned)
    in_utc = [e for e in events if re.search(r"DTSTART:\d{8}T\d{6}Z", e.ics)]
    assert in_utc and all("BEGIN:VTIMEZONE" not in e.ics for e in in_utc)


def test_items_fall_in_the_window_and_in_working_hours(events: list[SeedEvent]) -> None:
    zone = icalendar.Calendar.from_ical(events[0].ics).walk("VEVENT")[0].decoded("DTSTART").tzinfo
    end = datetime.combine(START + timedelta(days=28 + 35), datetime.min.time(), UTC)
    for event in events:
        for occurrence in expand(event):
            begin = occurrence.decoded("DTSTART")
            if isinstance(begin, datetime):
                local = begin.astimezone(zone)
                assert 8 <= local.hour <= 17, (event.kind, local)
                assert begin < end
            else:
                assert START <= begin < START + timedelta(days=28)


@settings(max_examples=40, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=st.dates(date(2020, 1, 1), date(2035, 12, 31)),
    days=st.integers(1, 70),
    seed=st.integers(0, 2**32),
)
def test_any_zone_start_and_length_give_calendars_that_expand(
    zone: str, start: date, days: int, seed: int
) -> None:
    mailbox = SeedMailbox("x.y@contoso.test", "X Y", zone)
    events = generate_calendar(mailbox, start=start, days=days, rng_seed=seed)
    assert {e.kind for e in events} == set(EVENT_KINDS)
    for event in events:
        calendar = icalendar.Calendar.from_ical(event.ics)
        recurring_ical_events.of(calendar).between(
            start - timedelta(days=1), start + timedelta(days=days + 60)
        )
