"""MS-OXOPFFB month blocks: intervals <-> (month value, binary blocks) pairs; the 1601 clock.

Pure functions, no I/O. The public-folder free/busy message of an old server keeps each busy class
(busy, tentative, OOF) as two parallel multi-valued properties: a list of month values and a list
of binary values, one per month that has events of that class (MS-OXOPFFB 2.2.1.2.1-2.2.1.2.2).

Theory of operation
-------------------
* A month value is `year * 16 + month` (month 1..12, Gregorian, UTC).
* The binary value of a month is a run of 4-byte blocks `uint16le start, uint16le end`: minutes
  from 00:00 UTC on the 1st of that month. A 31-day month ends at minute 44,640, which still fits
  in 16 bits, so `end` may equal the month's length (the block runs to the month's end).
* Encoding splits every interval at month boundaries, sorts the blocks and merges blocks that
  overlap or touch, so each month's blocks are disjoint, ascending and non-adjacent.
* The format counts whole minutes. Encoding rounds each start **down** and each end **up** to the
  minute, so encoded busy time never shrinks (unknown-or-busy is never turned into free).
* Decoding merges intervals that touch across a month boundary again, so
  `decode_months(encode_months(x))` is the minute-rounded union of `x`.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

Interval = tuple[datetime, datetime]
MonthBlocks = tuple[int, bytes]

UTC = UTC
# Seconds between 1601-01-01T00:00Z (the Windows FILETIME epoch) and the Unix epoch.
EPOCH_1601_OFFSET_SECONDS = 11_644_473_600
_EPOCH_1601 = datetime(1601, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_BLOCK = struct.Struct("<HH")


class MonthBlockError(ValueError):
    """A month value or binary block that does not follow MS-OXOPFFB."""


# --- the 1601 clock ------------------------------------------------------------------------


def minutes_since_1601(value: datetime) -> int:
    """Whole minutes from 1601-01-01T00:00Z to `value` (aware), rounded down."""
    _require_aware(value)
    return (value.astimezone(UTC) - _EPOCH_1601) // _MINUTE


def from_minutes_since_1601(minutes: int) -> datetime:
    """The UTC instant `minutes` after 1601-01-01T00:00Z."""
    return _EPOCH_1601 + timedelta(minutes=minutes)


# --- month values --------------------------------------------------------------------------


def month_value(year: int, month: int) -> int:
    """`year * 16 + month`, the MS-OXOPFFB month number."""
    if not 1 <= month <= 12:
        raise MonthBlockError(f"month {month} is outside 1..12")
    return year * 16 + month


def split_month_value(value: int) -> tuple[int, int]:
    """(year, month) of a month value; `MonthBlockError` if the month part is not 1..12."""
    year, month = divmod(value, 16)
    if not 1 <= month <= 12 or year < 1601:
        raise MonthBlockError(f"month value {value} is not year*16+month (got {year}, {month})")
    return year, month


def month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def minutes_in_month(year: int, month: int) -> int:
    """44,640 for a 31-day month, 41,760 for a leap February, and so on."""
    return calendar.monthrange(year, month)[1] * 24 * 60


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


# --- encode / decode -----------------------------------------------------------------------


def _require_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware, got naive {value.isoformat()}")


def _floor_minute(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return value.replace(second=0, microsecond=0)


def _ceil_minute(value: datetime) -> datetime:
    floored = _floor_minute(value)
    return floored if floored == value.astimezone(UTC) else floored + _MINUTE


def normalize(intervals: Iterable[Interval]) -> list[Interval]:
    """The minute-rounded union of `intervals` in UTC: sorted, disjoint, non-touching.

    Empty or reversed intervals are dropped. This is exactly what a round trip through the
    month-block encoding keeps.
    """
    rounded: list[Interval] = []
    for start, end in intervals:
        _require_aware(start)
        _require_aware(end)
        lo, hi = _floor_minute(start), _ceil_minute(end)
        if start < end:
            rounded.append((lo, hi))
    rounded.sort()
    merged: list[Interval] = []
    for lo, hi in rounded:
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def encode_months(intervals: Iterable[Interval]) -> list[MonthBlocks]:
    """(month value, binary blocks) pairs for `intervals`, ascending by month.

    Intervals are split at month boundaries (UTC); a month without any busy time is left out.
    """
    per_month: dict[int, list[tuple[int, int]]] = {}
    for lo, hi in normalize(intervals):
        year, month = lo.year, lo.month
        while True:
            first = month_start(year, month)
            length = minutes_in_month(year, month)
            start_minute = max(0, (lo - first) // _MINUTE)
            end_minute = min(length, (hi - first) // _MINUTE)
            if start_minute < end_minute:
                runs = per_month.setdefault(month_value(year, month), [])
                runs.append((start_minute, end_minute))
            if hi <= first + timedelta(minutes=length):
                break
            year, month = _next_month(year, month)
    # normalize() already merged overlaps; blocks stay sorted within each month.
    return [
        (value, b"".join(_BLOCK.pack(s, e) for s, e in blocks))
        for value, blocks in sorted(per_month.items())
    ]


def decode_blocks(value: int, data: bytes) -> list[Interval]:
    """The intervals of one month's binary value; `MonthBlockError` if it is malformed."""
    year, month = split_month_value(value)
    if len(data) % _BLOCK.size:
        raise MonthBlockError(
            f"month {year}-{month:02d}: {len(data)} bytes is not a whole number of 4-byte blocks"
        )
    first = month_start(year, month)
    length = minutes_in_month(year, month)
    out: list[Interval] = []
    for start_minute, end_minute in _BLOCK.iter_unpack(data):
        if not start_minute <= end_minute <= length:
            raise MonthBlockError(
                f"month {year}-{month:02d}: block {start_minute}..{end_minute} is not within "
                f"0..{length} minutes"
            )
        if start_minute < end_minute:
            out.append(
                (first + timedelta(minutes=start_minute), first + timedelta(minutes=end_minute))
            )
    return out


def decode_months(pairs: Iterable[MonthBlocks]) -> list[Interval]:
    """The UTC intervals of (month value, binary blocks) pairs, merged across month ends."""
    intervals: list[Interval] = []
    for value, data in pairs:
        intervals.extend(decode_blocks(value, bytes(data)))
    return normalize(intervals)


def clip(intervals: Sequence[Interval], start: datetime, end: datetime) -> list[Interval]:
    """The parts of `intervals` inside [start, end)."""
    out: list[Interval] = []
    for lo, hi in intervals:
        lo, hi = max(lo, start), min(hi, end)
        if lo < hi:
            out.append((lo, hi))
    return out


__all__ = [
    "EPOCH_1601_OFFSET_SECONDS",
    "Interval",
    "MonthBlockError",
    "MonthBlocks",
    "clip",
    "decode_blocks",
    "decode_months",
    "encode_months",
    "from_minutes_since_1601",
    "minutes_in_month",
    "minutes_since_1601",
    "month_start",
    "month_value",
    "normalize",
    "split_month_value",
]
