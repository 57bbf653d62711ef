"""Presence from hand-built calendar data: every state, its span, the slot digits, freshness.

Expectations are written out by hand from the data each test builds (times, digits), never
computed with the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cas.errors import MailboxError
from cas.model.busy import BusyType, Presence
from cas.model.freebusy import Event, EventDetails, Freshness, MailboxData, Window
from cas.presence.state import Shape, next_boundary, view_of

SHAPE = Shape(slots=8, slot_minutes=15, lookback_minutes=60)


def at(hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(2030, 1, 7, int(hours), int(minutes), tzinfo=UTC)


def item(
    start: str, end: str, busy: BusyType = BusyType.BUSY, *, meeting: bool | None = True,
    subject: str | None = "Planning", location: str | None = "Room 1", private: bool = False,
) -> Event:  # fmt: skip
    details = None
    if meeting is not None:
        details = EventDetails(
            subject=subject, location=location, is_meeting=meeting, is_private=private
        )
    return Event(at(start), at(end), busy, details)


def view(events: list[Event], now: str, **data: object):  # type: ignore[no-untyped-def]
    moment = at(now)
    held = SHAPE.window(moment)
    result = MailboxData(events=tuple(events), **data)  # type: ignore[arg-type]
    return view_of("ann@contoso.test", result, held, moment, SHAPE)


def test_the_window_asked_for_starts_a_lookback_before_the_slot_of_now() -> None:
    held = SHAPE.window(at("09:37"))
    assert held == Window(at("08:30"), at("11:30"))  # slot 09:30, one hour back, 8 x 15 ahead


def test_a_meeting_with_attendees_is_in_a_meeting_from_its_start_to_its_end() -> None:
    v = view([item("09:00", "10:00")], "09:37")
    assert v.state is Presence.IN_A_MEETING
    assert (v.since, v.until, v.next_state) == (at("09:00"), at("10:00"), Presence.AVAILABLE)
    assert (v.subject, v.location) == ("Planning", "Room 1")
    # slots from 09:30: 09:30 and 09:45 busy, the six after free
    assert (v.slot_start, v.slots) == (at("09:30"), "22000000")


def test_a_busy_item_without_attendees_is_busy() -> None:
    assert view([item("09:00", "10:00", meeting=False)], "09:10").state is Presence.BUSY


def test_a_requester_who_sees_only_times_sees_busy_and_no_subject() -> None:
    v = view([item("09:00", "10:00", meeting=None)], "09:10", times_only=True)
    assert (v.state, v.subject, v.location) == (Presence.BUSY, None, None)


@pytest.mark.parametrize(
    ("busy", "state"),
    [
        (BusyType.FREE, Presence.AVAILABLE),
        (BusyType.TENTATIVE, Presence.AVAILABLE),
        (BusyType.WORKING_ELSEWHERE, Presence.AVAILABLE),
        (BusyType.OOF, Presence.AWAY),
        (BusyType.NO_DATA, Presence.UNKNOWN),
    ],
)
def test_each_busy_type_gives_its_state(busy: BusyType, state: Presence) -> None:
    assert view([item("09:00", "10:00", busy)], "09:10").state is state


def test_away_wins_over_a_meeting_and_a_meeting_over_an_appointment() -> None:
    events = [
        item("09:00", "12:00", meeting=False, subject="Focus"),
        item("09:30", "10:00", subject="Standup"),
        item("10:15", "10:45", BusyType.OOF, meeting=False, subject="Dentist"),
    ]
    assert (view(events, "09:10").state, view(events, "09:10").subject) == (Presence.BUSY, "Focus")
    meeting = view(events, "09:40")
    assert (meeting.state, meeting.subject, meeting.until) == (
        Presence.IN_A_MEETING, "Standup", at("10:00"),
    )  # fmt: skip
    away = view(events, "10:20")
    assert (away.state, away.since, away.until, away.next_state) == (
        Presence.AWAY, at("10:15"), at("10:45"), Presence.BUSY,
    )  # fmt: skip


def test_back_to_back_meetings_are_one_span_and_the_subject_follows_the_item() -> None:
    events = [item("09:15", "10:00", subject="A"), item("10:00", "10:30", subject="B")]
    first = view(events, "09:50")
    assert (first.until, first.next_state, first.subject) == (at("10:30"), Presence.AVAILABLE, "A")
    second = view(events, "10:05")
    assert (second.since, second.subject) == (at("09:15"), "B")
    # a state that began before the data read (one hour back from the slot) has no since
    assert view(events, "10:20").since is None


def test_a_state_that_outlasts_the_slots_ahead_has_no_until() -> None:
    v = view([item("09:00", "18:00", meeting=False)], "09:10")
    assert (v.state, v.until, v.next_state) == (Presence.BUSY, None, None)


def test_available_until_the_next_meeting() -> None:
    v = view([item("10:00", "10:30")], "09:10")
    assert (v.state, v.until, v.next_state) == (
        Presence.AVAILABLE,
        at("10:00"),
        Presence.IN_A_MEETING,
    )
    assert v.subject is None
    assert v.slots == "00002200"  # 09:00..10:00 free, 10:00..10:30 busy, then free


def test_a_private_item_shows_no_subject() -> None:
    masked = EventDetails(is_meeting=True, is_private=True)
    v = view([Event(at("09:00"), at("10:00"), BusyType.BUSY, masked)], "09:10")
    assert (v.state, v.subject, v.location) == (Presence.IN_A_MEETING, None, None)


def test_time_the_data_does_not_cover_is_unknown_never_available() -> None:
    covered = ((at("08:30"), at("10:00")),)
    v = view([], "09:10", coverage=covered)
    assert (v.state, v.until, v.next_state) == (Presence.AVAILABLE, at("10:00"), Presence.UNKNOWN)
    assert v.slots == "00004444"  # 09:00..10:00 covered and free, the rest unknown
    assert view([], "10:10", coverage=covered).state is Presence.UNKNOWN


def test_an_error_or_stale_data_is_unknown_with_every_slot_unknown() -> None:
    held = SHAPE.window(at("09:10"))
    error = MailboxError.of("ErrorFreeBusyGenerationFailed")
    v = view_of("ann@contoso.test", error, held, at("09:10"), SHAPE)
    assert (v.state, v.slots, v.error) == (Presence.UNKNOWN, "44444444", error)
    stale = Freshness("stale-cache", 300.0, "eu")
    s = view([item("09:00", "10:00")], "09:10", freshness=stale)
    assert (s.state, s.slots, s.subject, s.freshness) == (Presence.UNKNOWN, "44444444", None, stale)


def test_old_server_data_reads_the_merged_digits_as_items_without_attendees() -> None:
    # held window 08:00..11:00 in 15-minute digits: 08:00-09:00 free, 09:00-09:30 busy,
    # 09:30-10:00 OOF, 10:00-10:15 tentative, then no data
    moment = at("09:05")
    held = SHAPE.window(moment)
    assert held.start == at("08:00")
    merged = "0000" + "22" + "33" + "1" + "444"
    data = MailboxData(merged=merged, merged_only=True, freshness=Freshness("legacy", 40.0, "eu"))
    v = view_of("old@contoso.test", data, held, moment, SHAPE)
    assert (v.state, v.since, v.until, v.next_state) == (
        Presence.BUSY, at("09:00"), at("09:30"), Presence.AWAY,
    )  # fmt: skip
    assert v.slots == "22331444"
    assert v.freshness is not None and v.freshness.source == "legacy"


def test_the_next_boundary_is_the_next_item_edge_or_slot_edge() -> None:
    moment = at("09:05")
    held = SHAPE.window(moment)
    data = MailboxData(events=(item("09:07", "09:08"),))
    assert next_boundary(data, held, moment, SHAPE) == at("09:07")
    assert next_boundary(data, held, at("09:08"), SHAPE) == at("09:15")
    later = held.start + timedelta(hours=1)
    assert next_boundary(MailboxData(), held, later, SHAPE) == at("09:15")


def test_data_not_vouched_for_recently_enough_is_unknown() -> None:
    from cas.presence.state import Trust

    moment = at("09:10")
    held = SHAPE.window(moment)
    # read at 09:10 from a cache: read 50 s before, confirmed 30 s before
    data = MailboxData(
        events=(item("09:00", "10:00"),), freshness=Freshness("cache", 50.0, "eu", 30.0)
    )
    fresh = view_of("a@contoso.test", data, held, moment, SHAPE, trust=Trust(60))
    assert fresh.state is Presence.IN_A_MEETING
    # the same answer looked at 31 s later: vouched for 61 s ago
    later = moment + timedelta(seconds=31)
    old = view_of("a@contoso.test", data, held, later, SHAPE, read_at=moment, trust=Trust(60))
    assert (old.state, old.slots) == (Presence.UNKNOWN, "44444444")
    # after a stale answer vouched at 09:09:40, an answer vouched no later says nothing new
    doubted = Trust(None, moment - timedelta(seconds=30))
    assert view_of("a@contoso.test", data, held, moment, SHAPE, trust=doubted).state is (
        Presence.UNKNOWN
    )
    newer = Trust(None, moment - timedelta(seconds=31))
    assert view_of("a@contoso.test", data, held, moment, SHAPE, trust=newer).state is (
        Presence.IN_A_MEETING
    )
