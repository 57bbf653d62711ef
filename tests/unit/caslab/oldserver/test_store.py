"""MS-OXOPFFB month blocks (caslab.oldserver.months) and the free/busy message store (caslab.oldserver.store).

Expected minute offsets are computed by hand: a day is 1,440 minutes, a 31-day month 44,640
(0xAE60), a 30-day month 43,200, February 2024 (leap) 41,760 and February 2023 40,320.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.model.freebusy import Window
from caslab.oldserver.months import (
    MonthBlockError,
    decode_blocks,
    decode_months,
    encode_months,
    from_minutes_since_1601,
    minutes_in_month,
    minutes_since_1601,
    normalize,
    split_month_value,
)
from caslab.oldserver.store import (
    FreeBusyStore,
    LegacyDnError,
    merged_digits,
    message_folder,
    message_subject,
)

UTC = UTC
ANN = "/o=Contoso/ou=EU/cn=Recipients/cn=ann"


def t(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def blocks(data: bytes) -> list[tuple[int, int]]:
    return list(struct.iter_unpack("<HH", data))


# --- the 1601 clock -----------------------------------------------------------------------


def test_minutes_since_1601_of_the_unix_epoch() -> None:
    assert minutes_since_1601(t(1970, 1, 1)) == 11_644_473_600 // 60 == 194_074_560
    assert from_minutes_since_1601(194_074_560) == t(1970, 1, 1)
    assert minutes_since_1601(t(1601, 1, 1)) == 0


def test_minutes_since_1601_rounds_down_and_reads_offsets() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert minutes_since_1601(datetime(1970, 1, 1, 2, 0, 59, tzinfo=plus_two)) == 194_074_560


@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_1601_clock_round_trips(minutes: int) -> None:
    assert minutes_since_1601(from_minutes_since_1601(minutes)) == minutes


# --- encoding, by hand ---------------------------------------------------------------------


def test_month_value_is_year_times_16_plus_month() -> None:
    [(value, _)] = encode_months([(t(2024, 3, 4, 9), t(2024, 3, 4, 10))])
    assert value == 2024 * 16 + 3 == 32387
    assert split_month_value(32387) == (2024, 3)


def test_one_event_is_one_block_of_minutes_from_the_first() -> None:
    [(_, data)] = encode_months([(t(2024, 3, 4, 9), t(2024, 3, 4, 10, 30))])
    assert blocks(data) == [(3 * 1440 + 540, 3 * 1440 + 630)]
    assert data == struct.pack("<HH", 4860, 4950)


def test_event_crossing_a_month_end_is_split() -> None:
    pairs = encode_months([(t(2024, 1, 31, 23), t(2024, 2, 1, 1))])
    assert [(v, blocks(d)) for v, d in pairs] == [
        (2024 * 16 + 1, [(44_580, 44_640)]),
        (2024 * 16 + 2, [(0, 60)]),
    ]
    assert decode_months(pairs) == [(t(2024, 1, 31, 23), t(2024, 2, 1, 1))]


def test_a_whole_31_day_month_is_the_44640_minute_block() -> None:
    [(value, data)] = encode_months([(t(2024, 1, 1), t(2024, 2, 1))])
    assert value == 2024 * 16 + 1
    assert data == b"\x00\x00\x60\xae"  # 0 .. 44,640 little-endian
    assert decode_blocks(value, data) == [(t(2024, 1, 1), t(2024, 2, 1))]


def test_leap_year_february_29() -> None:
    assert minutes_in_month(2024, 2) == 41_760
    assert minutes_in_month(2023, 2) == 40_320
    [(_, data)] = encode_months([(t(2024, 2, 29, 12), t(2024, 2, 29, 13))])
    assert blocks(data) == [(28 * 1440 + 720, 28 * 1440 + 780)]
    pairs = encode_months([(t(2024, 2, 29, 23), t(2024, 3, 1, 1))])
    assert [blocks(d) for _, d in pairs] == [[(41_700, 41_760)], [(0, 60)]]


def test_event_over_three_months_fills_the_middle_one() -> None:
    pairs = encode_months([(t(2023, 12, 31, 12), t(2024, 2, 1, 12))])
    assert [(v, blocks(d)) for v, d in pairs] == [
        (2023 * 16 + 12, [(30 * 1440 + 720, 44_640)]),
        (2024 * 16 + 1, [(0, 44_640)]),
        (2024 * 16 + 2, [(0, 720)]),
    ]


def test_overlapping_and_touching_intervals_merge_and_sort() -> None:
    pairs = encode_months(
        [
            (t(2024, 5, 2, 10), t(2024, 5, 2, 11)),
            (t(2024, 5, 1, 9), t(2024, 5, 1, 10)),
            (t(2024, 5, 1, 10), t(2024, 5, 1, 10, 30)),  # touches the one before
            (t(2024, 5, 2, 10, 30), t(2024, 5, 2, 12)),  # overlaps
            (t(2024, 5, 3, 8), t(2024, 5, 3, 8)),  # empty: dropped
        ]
    )
    assert [blocks(d) for _, d in pairs] == [[(540, 630), (1440 + 600, 1440 + 720)]]


def test_seconds_round_outwards_to_whole_minutes() -> None:
    [(_, data)] = encode_months([(t(2024, 5, 1, 9, 0, 30), t(2024, 5, 1, 9, 10, 1))])
    assert blocks(data) == [(540, 551)]


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_months([(datetime(2024, 5, 1), t(2024, 5, 2))])


@pytest.mark.parametrize(
    ("value", "data", "problem"),
    [
        (2024 * 16 + 13, b"", "not year\\*16\\+month"),
        (2024 * 16 + 0, b"", "not year\\*16\\+month"),
        (2024 * 16 + 4, b"\x00\x00\x10", "whole number of 4-byte blocks"),
        (2024 * 16 + 4, struct.pack("<HH", 10, 5), "not within"),
        (2024 * 16 + 4, struct.pack("<HH", 0, 43_201), "not within 0..43200"),
    ],
)
def test_malformed_blocks_are_refused(value: int, data: bytes, problem: str) -> None:
    with pytest.raises(MonthBlockError, match=problem):
        decode_blocks(value, data)


# --- encoding, as properties ---------------------------------------------------------------

# Any instant, or one within two hours of a month's start (where the splitting happens).
instants = st.one_of(
    st.datetimes(
        min_value=datetime(2023, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
    ),
    st.builds(
        lambda y, m, minutes: t(y, m, 1) + timedelta(minutes=minutes),
        st.integers(2023, 2026),
        st.integers(1, 12),
        st.integers(-120, 120),
    ),
)
lengths = st.one_of(
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=75)),
    st.integers(0, 100_000).map(lambda minutes: timedelta(minutes=minutes)),
)
spans = st.tuples(instants, lengths)
interval_lists = st.lists(spans.map(lambda p: (p[0], p[0] + p[1])), max_size=12)


@settings(max_examples=300, deadline=None)
@given(interval_lists)
def test_round_trip_keeps_the_minute_rounded_union(
    intervals: list[tuple[datetime, datetime]],
) -> None:
    decoded = decode_months(encode_months(intervals))
    assert decoded == normalize(intervals)
    for start, end in intervals:  # every busy instant is still busy
        if start < end:
            assert any(lo <= start and end <= hi for lo, hi in decoded)


@settings(max_examples=300, deadline=None)
@given(interval_lists)
def test_encoded_months_follow_the_format(intervals: list[tuple[datetime, datetime]]) -> None:
    pairs = encode_months(intervals)
    values = [v for v, _ in pairs]
    assert values == sorted(set(values))
    for value, data in pairs:
        year, month = split_month_value(value)
        runs = blocks(data)
        assert runs, "a month without busy time is left out"
        for (s1, e1), (s2, _) in zip(runs, runs[1:]):
            assert e1 < s2, "blocks are sorted, disjoint and not touching"
        assert all(0 <= s < e <= minutes_in_month(year, month) for s, e in runs)


@settings(max_examples=200, deadline=None)
@given(interval_lists)
def test_encoding_is_idempotent(intervals: list[tuple[datetime, datetime]]) -> None:
    pairs = encode_months(intervals)
    assert encode_months(decode_months(pairs)) == pairs


# --- messages ------------------------------------------------------------------------------


def test_subject_and_folder_of_a_legacy_dn() -> None:
    assert message_subject(ANN) == "USER-/CN=RECIPIENTS/CN=ANN"
    assert message_folder(ANN) == "/o=Contoso/ou=EU"
    assert message_folder("/o=Org/cn=Recipients/cn=x") == "/o=Org"


@pytest.mark.parametrize("dn", ["ann@contoso.test", "/o=Contoso/ou=EU", "/o=Contoso/ou=/cn=x", ""])
def test_bad_legacy_dns_are_refused(dn: str) -> None:
    with pytest.raises(LegacyDnError):
        message_subject(dn)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


PUBLISHED = {"publish_start": t(2024, 3, 1), "publish_end": t(2024, 5, 1)}


def test_merged_digits_hand_computed(tmp_path) -> None:
    store = FreeBusyStore(tmp_path)
    message = store.publish(
        ANN,
        busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10, 30))],
        tentative=[(t(2024, 3, 4, 8, 15), t(2024, 3, 4, 8, 45))],
        oof=[(t(2024, 3, 4, 11, 10), t(2024, 3, 4, 11, 20))],
        **PUBLISHED,
    )
    window = Window(t(2024, 3, 4, 8), t(2024, 3, 4, 12))
    # 08:00 1 | 08:30 1 | 09:00 2 | 09:30 2 | 10:00 2 | 10:30 0 | 11:00 3 | 11:30 0
    assert merged_digits(message, window, 30) == "11222030"
    assert merged_digits(message, window, 60) == "1223"
    assert merged_digits(None, window, 60) == "4444"


def test_merged_digits_outside_and_partly_outside_the_published_range(tmp_path) -> None:
    store = FreeBusyStore(tmp_path)
    message = store.publish(
        ANN,
        busy=[(t(2024, 3, 1, 9), t(2024, 3, 1, 10))],
        publish_start=t(2024, 3, 1, 8, 45),
        publish_end=t(2024, 3, 1, 10, 15),
    )
    window = Window(t(2024, 3, 1, 8), t(2024, 3, 1, 11))
    # 08:00 out | 08:30 partly out (4 beats free) | 09:00 2 | 09:30 2 | 10:00 partly out | 10:30 out
    assert merged_digits(message, window, 30) == "442244"
    # A busy slot partly outside the range is still 4: unknown time is the highest digit.
    assert merged_digits(message, Window(t(2024, 3, 1, 8, 30), t(2024, 3, 1, 10, 30)), 60) == "44"


def test_intervals_outside_the_published_range_are_not_stored(tmp_path) -> None:
    message = FreeBusyStore(tmp_path).publish(
        ANN, busy=[(t(2024, 2, 27), t(2024, 3, 2)), (t(2024, 7, 1), t(2024, 7, 2))], **PUBLISHED
    )
    assert decode_months(message.busy) == [(t(2024, 3, 1), t(2024, 3, 2))]
    assert message.published == (t(2024, 3, 1), t(2024, 5, 1))
    assert message.publish_start == minutes_since_1601(t(2024, 3, 1))


def test_merged_pair_is_busy_or_oof_without_tentative(tmp_path) -> None:
    message = FreeBusyStore(tmp_path).publish(
        ANN,
        busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))],
        oof=[(t(2024, 3, 4, 10), t(2024, 3, 4, 11))],
        tentative=[(t(2024, 3, 4, 12), t(2024, 3, 4, 13))],
        **PUBLISHED,
    )
    assert decode_months(message.merged) == [(t(2024, 3, 4, 9), t(2024, 3, 4, 11))]


# --- duplicates and persistence -------------------------------------------------------------


def test_duplicates_get_suffixes_and_the_earliest_wins(tmp_path) -> None:
    store = FreeBusyStore(tmp_path, clock=Clock(t(2024, 1, 1)))
    first = store.publish(ANN, busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))], **PUBLISHED)
    second = store.publish(
        ANN, busy=[(t(2024, 3, 5, 9), t(2024, 3, 5, 10))], duplicate=True, **PUBLISHED
    )
    third = store.publish(ANN.upper(), duplicate=True, **PUBLISHED)
    assert [m.subject for m in store.copies(ANN)] == [
        "USER-/CN=RECIPIENTS/CN=ANN",
        "USER-/CN=RECIPIENTS/CN=ANN-2",
        "USER-/CN=RECIPIENTS/CN=ANN-3",
    ]
    assert (second.duplicate, third.duplicate) == (2, 3)
    assert store.lookup(ANN) == first
    assert len(store) == 3


def test_the_earliest_by_creation_time_wins_whatever_its_suffix(tmp_path) -> None:
    clock = Clock(t(2024, 1, 10))
    store = FreeBusyStore(tmp_path, clock=clock)
    store.publish(ANN, busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))], **PUBLISHED)
    clock.now = t(2024, 1, 1)  # the -2 copy was created earlier (clock skew, restored backup)
    older = store.publish(ANN, duplicate=True, **PUBLISHED)
    assert older.subject.endswith("-2")
    assert store.lookup(ANN) == older
    assert FreeBusyStore(tmp_path).lookup(ANN) == older


def test_plain_publish_updates_the_winner_in_place(tmp_path) -> None:
    store = FreeBusyStore(tmp_path, clock=Clock(t(2024, 1, 1)))
    first = store.publish(ANN, busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))], **PUBLISHED)
    updated = store.publish(ANN, busy=[(t(2024, 3, 6, 9), t(2024, 3, 6, 10))], **PUBLISHED)
    assert updated.created == first.created and updated.updated is not None
    assert store.copies(ANN) == [updated]
    assert decode_months(store.lookup(ANN).busy) == [(t(2024, 3, 6, 9), t(2024, 3, 6, 10))]


def test_a_new_store_on_the_same_folder_reloads_everything(tmp_path) -> None:
    store = FreeBusyStore(tmp_path, clock=Clock(t(2024, 1, 1)))
    ann = store.publish(
        ANN,
        busy=[(t(2024, 1, 31, 23), t(2024, 2, 1, 1))],
        publish_start=t(2024, 1, 1),
        publish_end=t(2024, 5, 1),
    )
    dup = store.publish(ANN, duplicate=True, **PUBLISHED)
    bob = store.publish(
        "/o=Contoso/ou=US/cn=Recipients/cn=bob", oof=[(t(2024, 3, 9), t(2024, 3, 10))], **PUBLISHED
    )
    again = FreeBusyStore(tmp_path)
    assert again.copies(ANN) == [ann, dup]
    assert again.lookup("/O=CONTOSO/OU=US/CN=RECIPIENTS/CN=BOB") == bob
    assert len(again) == 3


def test_files_are_json_named_like_the_old_webdav_urls(tmp_path) -> None:
    store = FreeBusyStore(tmp_path)
    message = store.publish(ANN, busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))], **PUBLISHED)
    path = store.path_of(message)
    assert path.name == "USER-_xF8FF_CN=RECIPIENTS_xF8FF_CN=ANN.json"
    assert path.parent.name == "EX:_xF8FF_o=contoso_xF8FF_ou=eu"
    raw = json.loads(path.read_text())
    assert raw["subject"] == "USER-/CN=RECIPIENTS/CN=ANN"
    assert raw["busy"] == [[32387, "/BI4Ew=="]]  # 4860..4920 = FC 12 38 13
    assert not list(tmp_path.rglob(".tmp-*"))


def test_unreadable_and_temporary_files_are_skipped_on_load(tmp_path) -> None:
    store = FreeBusyStore(tmp_path)
    message = store.publish(ANN, busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))], **PUBLISHED)
    folder = store.path_of(message).parent
    (folder / "USER-broken.json").write_text("{not json")
    (folder / "USER-bad-blocks.json").write_text(
        json.dumps({**json.loads(store.path_of(message).read_text()), "busy": [[32397, "AAAA"]]})
    )
    (folder / ".tmp-123.json").write_text("{}")
    again = FreeBusyStore(tmp_path)
    assert again.copies(ANN) == [message]
