"""The merged-string algebra, checked against the documented example and a per-minute oracle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.model.freebusy import (
    BusyType,
    Event,
    EventDetails,
    Window,
    events_in_window,
    merged_free_busy,
    no_data,
)

UTC = UTC
T0 = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ev(start: int, end: int, busy: BusyType = BusyType.BUSY) -> Event:
    return Event(at(start), at(end), busy)


def test_documented_example_oof_busy_free() -> None:
    # EWS MergedFreeBusy doc: 4 h, 60-min slots, OOF 60 + busy 90 + free 90 -> "3220".
    events = [ev(0, 60, BusyType.OOF), ev(60, 150, BusyType.BUSY), ev(150, 240, BusyType.FREE)]
    assert merged_free_busy(events, Window(at(0), at(240)), 60) == "3220"


@pytest.mark.parametrize(
    ("events", "window_minutes", "interval", "expected"),
    [
        ([], 240, 60, "0000"),
        ([ev(30, 45, BusyType.TENTATIVE)], 120, 60, "10"),
        # highest digit wins inside a slot
        ([ev(0, 10, BusyType.TENTATIVE), ev(20, 30, BusyType.OOF), ev(40, 50)], 60, 60, "3"),
        # touching a boundary is not overlapping
        ([ev(60, 120)], 180, 60, "020"),
        # working elsewhere counts as free
        ([ev(0, 60, BusyType.WORKING_ELSEWHERE)], 60, 30, "00"),
        # partial last slot: 100 minutes in 30-minute slots -> 4 digits, last covers 10 minutes
        ([ev(95, 100)], 100, 30, "0002"),
        ([ev(89, 91)], 100, 30, "0022"),
        # events outside the window count for nothing
        ([ev(-60, 0), ev(120, 180)], 120, 60, "00"),
        # an event spanning the whole window and beyond
        ([ev(-600, 600, BusyType.OOF)], 90, 30, "333"),
        # zero-length events mark nothing
        ([ev(30, 30)], 60, 30, "00"),
    ],
)
def test_merged_string_table(events, window_minutes, interval, expected) -> None:
    assert merged_free_busy(events, Window(at(0), at(window_minutes)), interval) == expected


def test_uncovered_time_is_no_data_never_free() -> None:
    window = Window(at(0), at(240))
    coverage = [(at(60), at(180))]
    assert merged_free_busy([ev(90, 100)], window, 60, coverage) == "4204"
    assert merged_free_busy([], window, 60, coverage=[]) == "4444"
    assert no_data(window, 60) == "4444"


def test_interval_limits_are_enforced() -> None:
    window = Window(at(0), at(240))
    for bad in (4, 1441, 0):
        with pytest.raises(ValueError):
            merged_free_busy([], window, bad)


def test_window_and_event_reject_naive_or_reversed_times() -> None:
    with pytest.raises(ValueError):
        Window(datetime(2024, 1, 1), datetime(2024, 1, 2))
    with pytest.raises(ValueError):
        Window(at(10), at(10))
    with pytest.raises(ValueError):
        Event(at(10), at(5), BusyType.BUSY)


def test_events_in_window_keeps_overlapping_and_orders_them() -> None:
    window = Window(at(0), at(60))
    kept = events_in_window([ev(50, 70), ev(-10, 5), ev(60, 90), ev(30, 30), ev(-5, 0)], window)
    assert [(e.start, e.end) for e in kept] == [
        (at(-10), at(5)),
        (at(30), at(30)),
        (at(50), at(70)),
    ]


def test_masked_details_keep_only_flags() -> None:
    details = EventDetails("id1", "Salary talk", "Room 4", True, True, False, True, True)
    masked = details.masked()
    assert (masked.id, masked.subject, masked.location) == (None, None, None)
    assert masked.is_private and masked.is_meeting and masked.is_recurring


# --- property: interval arithmetic agrees with sampling every minute -------------------------

DIGIT = {BusyType.FREE: 0, BusyType.TENTATIVE: 1, BusyType.BUSY: 2, BusyType.OOF: 3}


def oracle(events: list[tuple[int, int, BusyType]], length: int, interval: int) -> str:
    """Per-minute sampling: minute m is in slot m // interval; take the max digit seen."""
    slots = [0] * -(-length // interval)
    for minute in range(length):
        for start, end, busy in events:
            if start <= minute < end:
                i = minute // interval
                slots[i] = max(slots[i], DIGIT[busy])
    return "".join(map(str, slots))


event_st = st.tuples(st.integers(-200, 900), st.integers(0, 300), st.sampled_from(list(DIGIT))).map(
    lambda t: (t[0], t[0] + t[1], t[2])
)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(event_st, max_size=8),
    length=st.integers(5, 720),
    interval=st.integers(5, 120),
)
def test_merged_string_matches_minute_oracle(events, length, interval) -> None:
    if interval > length:
        interval = length
    got = merged_free_busy([ev(s, e, b) for s, e, b in events], Window(at(0), at(length)), interval)
    assert got == oracle(events, length, interval)


def test_window_is_kept_in_utc_so_durations_are_right_across_dst() -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    # 30 March 00:00 to 1 April 00:00 Berlin is 47 hours, not 48 (clocks go forward on the 31st)
    window = Window(datetime(2024, 3, 30, tzinfo=berlin), datetime(2024, 4, 1, tzinfo=berlin))
    assert window.duration == timedelta(hours=47)
    assert window.start.tzinfo is UTC and window.slot_count(60) == 47
