"""Cache pieces: any window assembled from day pieces equals the backend's own answer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.cache.pieces import (
    assemble,
    days_of,
    decode_piece,
    encode_piece,
    piece_key,
    span_of,
    split,
)
from cas.model.freebusy import (
    BusyType,
    Event,
    EventDetails,
    MailboxData,
    Window,
    default_working_hours,
    events_in_window,
    merged_free_busy,
)

UTC = UTC
T0 = datetime(2024, 2, 27, tzinfo=UTC)  # crosses the end of a leap February


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


event_st = st.builds(
    lambda s, d, b, subject, private: Event(
        at(s), at(s + d), b, EventDetails(f"id{s}", subject, None, is_private=private)
    ),
    st.integers(0, 6 * 1440),
    st.integers(0, 3 * 1440),
    st.sampled_from(list(BusyType)[:5]),
    st.one_of(st.none(), st.text(max_size=8)),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(event_st, max_size=10),
    start=st.integers(0, 5 * 1440),
    length=st.integers(5, 2 * 1440),
)
def test_any_window_from_pieces_equals_the_direct_answer(events, start, length) -> None:
    full = Window(T0, at(8 * 1440))
    data = MailboxData(
        events=events_in_window(events, full), working_hours=default_working_hours("UTC")
    )
    pieces = [decode_piece(encode_piece(p)) for p in split(data, days_of(full), 1000.0)]
    window = Window(at(start), at(start + length))
    wanted = [p for p in pieces if p.day in set(days_of(window))]
    got = assemble(wanted, window)
    assert got.events == events_in_window(data.events, window)
    assert merged_free_busy(got.events, window, 5) == merged_free_busy(data.events, window, 5)
    assert got.working_hours == data.working_hours


def test_coverage_survives_and_uncovered_time_stays_unknown() -> None:
    window = Window(T0, at(2 * 1440))
    data = MailboxData(coverage=((at(600), at(900)),), merged_only=True)
    pieces = [decode_piece(encode_piece(p)) for p in split(data, days_of(window), 5.0)]
    got = assemble(pieces, window)
    assert got.merged_only and got.coverage == ((at(600), at(900)),)
    # 08:00-16:00 in hours: only 10:00-15:00 is known, and nothing is busy in it
    day = Window(at(480), at(960))
    assert merged_free_busy(got.events, day, 60, got.coverage) == "44000004"


def test_days_and_spans_are_utc_days() -> None:
    window = Window(datetime(2024, 3, 30, 23, tzinfo=UTC), datetime(2024, 4, 1, 0, 30, tzinfo=UTC))
    assert days_of(window) == [date(2024, 3, 30), date(2024, 3, 31), date(2024, 4, 1)]
    assert span_of(days_of(window)) == Window(
        datetime(2024, 3, 30, tzinfo=UTC), datetime(2024, 4, 2, tzinfo=UTC)
    )
    assert days_of(Window(T0, at(1440))) == [date(2024, 2, 27)]


def test_keys_are_versioned_and_case_blind() -> None:
    assert (
        piece_key("eu", "Ann@Contoso.test", date(2024, 3, 1))
        == "cas:v1:fb:eu:ann@contoso.test:2024-03-01"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b"not json",
        b'{"d":"2024-01-01","f":1,"e":[[1,2,"Nope",null]],"w":null,"c":null,"m":false}',
    ],
)
def test_garbage_is_not_a_piece(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_piece(raw)


def test_a_whole_answer_keeps_when_it_was_vouched_for_and_by_which_site() -> None:
    from cas.cache.pieces import decode_answer, encode_answer
    from cas.model.freebusy import Freshness

    data = MailboxData(
        events=(Event(at(60), at(120), BusyType.TENTATIVE, EventDetails("x", "Sync")),),
        merged="0100",
        freshness=Freshness("cache", 300.0, "us"),
    )
    back, vouched_at, kept_at, validated_at = decode_answer(encode_answer(data, 9_700.0, 9_990.0))
    assert back.events == data.events and back.merged == "0100"
    assert back.freshness == Freshness("cache", 0.0, "us")
    assert (vouched_at, kept_at, validated_at) == (9_700.0, 9_990.0, None)
