"""The free/busy model: busy types, events, windows and the merged-string algebra.

Pure values and functions, no I/O. Every adapter (CalDAV, legacy, a peer node) produces
`MailboxData`; every codec (EWS, legacy `fbdata`, JSON, iCalendar) renders from it.

Theory of operation (the merged string)
---------------------------------------
A window [start, end) is cut into slots of `interval` minutes from `start`. Slot i covers
[start + i*interval, min(start + (i+1)*interval, end)). The number of slots is
ceil(window / interval): when the window is not a multiple of the interval, the **last slot is
partial** and covers only what is left of the window (EWS leaves this open; we use ceil so that
no part of the window goes unreported).

Each slot gets one digit: the highest digit of every state that overlaps it by a positive amount
(`0` free, `1` tentative, `2` busy, `3` OOF, `4` no data). An event that only touches a slot
boundary does not overlap it. Parts of the window not covered by the mailbox's data
(`MailboxData.coverage`) count as `4`: unknown is never free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cas.model.busy import BUSY_RULES, BUSY_TYPE_OF_DIGIT, BusyType
from sitemap.model import Mailbox, WorkingHoursSpec

MIN_INTERVAL_MINUTES = 5
MAX_INTERVAL_MINUTES = 1440


# The busy types and their digits live in one table (`cas.model.busy`).
MERGED_DIGIT: dict[BusyType, str] = {rule.busy_type: rule.digit for rule in BUSY_RULES}
DIGIT_BUSY_TYPE = BUSY_TYPE_OF_DIGIT


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [start, end) in absolute time, kept in UTC.

    Aware datetimes are converted to UTC on construction: Python subtracts two datetimes that
    share one tzinfo as wall clocks, which gives wrong durations across a DST change.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        _require_aware(self.end, "end")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))
        if not self.start < self.end:
            raise ValueError(f"window start {self.start} is not before end {self.end}")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return start < self.end and end > self.start

    def clip(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        """The part of [start, end) inside the window, or None if they do not overlap."""
        lo, hi = max(start, self.start), min(end, self.end)
        return (lo, hi) if lo < hi else None

    def slot_count(self, interval_minutes: int) -> int:
        return math.ceil(self.duration / timedelta(minutes=interval_minutes))


@dataclass(frozen=True, slots=True)
class EventDetails:
    """What a Detailed view may show of one event (EWS `CalendarEventDetails`)."""

    id: str | None = None
    subject: str | None = None
    location: str | None = None
    is_meeting: bool = False
    is_recurring: bool = False
    is_exception: bool = False
    is_reminder_set: bool = False
    is_private: bool = False

    def masked(self) -> EventDetails:
        """The details a non-owner may see of a private item: only that it is private."""
        return EventDetails(
            is_meeting=self.is_meeting,
            is_recurring=self.is_recurring,
            is_exception=self.is_exception,
            is_reminder_set=self.is_reminder_set,
            is_private=True,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One busy-time item of a mailbox, in absolute time. `end` may equal `start`."""

    start: datetime
    end: datetime
    busy_type: BusyType
    details: EventDetails | None = None

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        _require_aware(self.end, "end")
        if self.end < self.start:
            raise ValueError(f"event ends ({self.end}) before it starts ({self.start})")


WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True, slots=True)
class WorkingPeriod:
    """Days (names from `WEEKDAYS`) and a span of minutes after local midnight."""

    days: tuple[str, ...]
    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        bad = [d for d in self.days if d not in WEEKDAYS]
        if bad or not self.days:
            raise ValueError(f"working days must be among {WEEKDAYS}, got {self.days}")
        if not 0 <= self.start_minute < self.end_minute <= 1440:
            raise ValueError(
                f"working period {self.start_minute}..{self.end_minute} must satisfy "
                "0 <= start < end <= 1440"
            )


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """A mailbox owner's working hours, in the owner's IANA time zone."""

    timezone: str
    periods: tuple[WorkingPeriod, ...]


DEFAULT_WORKING_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def default_working_hours(tz: str) -> WorkingHours:
    return WorkingHours(tz, (WorkingPeriod(DEFAULT_WORKING_DAYS, 8 * 60, 17 * 60),))


def working_hours_of(
    mailbox: Mailbox, default_tz: str, site_default: WorkingHoursSpec | None = None
) -> WorkingHours:
    """The mailbox's working hours, else the site's, else 08:00-17:00 Mon-Fri, in its zone."""
    zone = mailbox.timezone or default_tz
    spec = mailbox.working_hours or site_default
    if spec is None:
        return default_working_hours(zone)
    return WorkingHours(
        zone, (WorkingPeriod(tuple(spec.days), spec.start_minute, spec.end_minute),)
    )


# Where a mailbox's answer came from. The age is the age of the *data* (when the backend last
# vouched for it), not of any hop or cache copy in between.
SOURCES = ("backend", "cache", "revalidated", "stale-cache", "legacy", "remote-cache")


@dataclass(frozen=True, slots=True)
class Freshness:
    """Where one answer came from, how old its data is (since the source read it), how long
    ago the source last confirmed it unchanged (None: never since the read), and the owner's
    version of the mailbox's calendar when known (how other sites check their copies)."""

    source: str
    age_seconds: float
    site: str | None = None
    validated_seconds: float | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"freshness source must be one of {SOURCES}, got {self.source!r}")
        if self.age_seconds < 0:
            object.__setattr__(self, "age_seconds", 0.0)
        if self.validated_seconds is not None and self.validated_seconds < 0:
            object.__setattr__(self, "validated_seconds", 0.0)

    @property
    def current_within(self) -> float:
        """Seconds since the source last vouched for the data (read or confirmed)."""
        if self.validated_seconds is None:
            return self.age_seconds
        return min(self.age_seconds, self.validated_seconds)

    @property
    def stale(self) -> bool:
        return self.source == "stale-cache"


@dataclass(frozen=True, slots=True)
class MailboxData:
    """What a backend knows about one mailbox for one window.

    `events` overlap the window (they are not clipped). `coverage` lists the absolute ranges
    for which the data is authoritative; None means the whole window. Anything outside the
    coverage is "no data" (`4`), never free. `merged_only` marks sources (legacy public
    folders) that carry only the merged string, with no events. `times_only` marks data the
    requester may see only the times of (permission level FreeBusyTimeOnly): its events carry
    no details, and a Detailed view of it is answered as a FreeBusy view.
    """

    events: tuple[Event, ...] = ()
    working_hours: WorkingHours | None = None
    coverage: tuple[tuple[datetime, datetime], ...] | None = None
    merged: str | None = None
    merged_only: bool = False
    freshness: Freshness | None = None
    times_only: bool = False


def merged_free_busy(
    events: Iterable[Event],
    window: Window,
    interval_minutes: int,
    coverage: Sequence[tuple[datetime, datetime]] | None = None,
) -> str:
    """The merged free/busy string of `events` over `window` (see the module docstring)."""
    if not MIN_INTERVAL_MINUTES <= interval_minutes <= MAX_INTERVAL_MINUTES:
        raise ValueError(
            f"interval {interval_minutes} is outside {MIN_INTERVAL_MINUTES}..{MAX_INTERVAL_MINUTES}"
        )
    step = timedelta(minutes=interval_minutes)
    count = window.slot_count(interval_minutes)
    digits = [0] * count

    def mark(start: datetime, end: datetime, digit: int) -> None:
        clipped = window.clip(start, end)
        if clipped is None:
            return
        lo, hi = clipped
        first = (lo - window.start) // step
        last = math.ceil((hi - window.start) / step)  # exclusive
        for i in range(first, min(last, count)):
            if digit > digits[i]:
                digits[i] = digit

    for event in events:
        if event.end > event.start:
            mark(event.start, event.end, int(event.busy_type.digit))

    if coverage is not None:
        for gap_start, gap_end in _gaps(window, coverage):
            mark(gap_start, gap_end, 4)

    return "".join(str(d) for d in digits)


def _gaps(
    window: Window, coverage: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """Parts of the window that no coverage range covers."""
    gaps: list[tuple[datetime, datetime]] = []
    cursor = window.start
    for start, end in sorted(coverage):
        if start > cursor:
            gaps.append((cursor, min(start, window.end)))
        cursor = max(cursor, end)
        if cursor >= window.end:
            break
    if cursor < window.end:
        gaps.append((cursor, window.end))
    return [(s, e) for s, e in gaps if s < e]


def events_in_window(events: Iterable[Event], window: Window) -> tuple[Event, ...]:
    """Events that overlap the window, ordered by start then end.

    A zero-length event counts when it lies inside [start, end).
    """
    kept = [
        e
        for e in events
        if window.overlaps(e.start, e.end)
        or (e.start == e.end and window.start <= e.start < window.end)
    ]
    return tuple(sorted(kept, key=lambda e: (e.start, e.end)))


def no_data(window: Window, interval_minutes: int) -> str:
    """The merged string of a mailbox nothing is known about."""
    return "4" * window.slot_count(interval_minutes)


__all__ = [
    "DEFAULT_WORKING_DAYS",
    "DIGIT_BUSY_TYPE",
    "MAX_INTERVAL_MINUTES",
    "MERGED_DIGIT",
    "MIN_INTERVAL_MINUTES",
    "SOURCES",
    "WEEKDAYS",
    "BusyType",
    "Event",
    "EventDetails",
    "Freshness",
    "MailboxData",
    "Window",
    "WorkingHours",
    "WorkingPeriod",
    "default_working_hours",
    "events_in_window",
    "merged_free_busy",
    "no_data",
]
