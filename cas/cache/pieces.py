"""What the cache stores: one piece per mailbox per UTC day, from which any window is assembled.

A piece holds the events overlapping its day (with their details), the mailbox's working hours,
what part of the day the data covers, and when the backend vouched for it. Any window and any
interval can be answered from the pieces of the days it touches, so one cached read serves
every later question about those days. Pure values and functions: no I/O.

Keys are versioned (`cas:v1:...`); a change of this format changes the version, so nodes of
two versions never read each other's pieces.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cas.model.freebusy import (
    BusyType,
    Event,
    EventDetails,
    Freshness,
    MailboxData,
    Window,
    WorkingHours,
    WorkingPeriod,
    events_in_window,
)

VERSION = "v1"
UTC = UTC
DAY = timedelta(days=1)


def piece_key(site: str, address: str, day: date, variant: str = "") -> str:
    suffix = f":{variant}" if variant else ""
    return f"cas:{VERSION}:fb:{site}:{address.casefold()}:{day.isoformat()}{suffix}"


def mailbox_prefix(site: str, address: str) -> str:
    """The prefix of every key of one mailbox (pieces, meta, negative entries)."""
    return f"cas:{VERSION}:fb:{site}:{address.casefold()}:"


def forgotten_channel(site: str) -> str:
    """Where a site's nodes announce that a mailbox's pieces were dropped (each drops its own
    first-level copies at once)."""
    return f"cas:{VERSION}:forgotten:{site}"


def meta_key(site: str, address: str) -> str:
    return mailbox_prefix(site, address) + "meta"


def negative_key(site: str, address: str) -> str:
    return mailbox_prefix(site, address) + "missing"


def flight_key(site: str, address: str, span: Window, variant: str = "") -> str:
    return (
        f"cas:{VERSION}:flight:{site}:{address.casefold()}:"
        f"{span.start:%Y%m%d}-{span.end:%Y%m%d}{variant}"
    )


def days_of(window: Window) -> list[date]:
    """The UTC days the window touches."""
    first = window.start.date()
    last = (window.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_window(day: date) -> Window:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Window(start, start + DAY)


def span_of(days: Sequence[date]) -> Window:
    """The whole days from the first to the last of `days`."""
    return Window(day_window(min(days)).start, day_window(max(days)).end)


@dataclass(frozen=True, slots=True)
class Piece:
    day: date
    fetched_at: float  # unix time at which the backend vouched for this data
    events: tuple[Event, ...]
    working_hours: WorkingHours | None = None
    coverage: tuple[tuple[datetime, datetime], ...] | None = None
    merged_only: bool = False
    ctag: str | None = None  # the calendar's change tag when this piece was read, if known
    validated_at: float | None = None  # when the backend last confirmed it unchanged, if since


def split(data: MailboxData, days: Iterable[date], fetched_at: float) -> list[Piece]:
    """One piece per day; an event spanning days is kept in each day it overlaps."""
    pieces = []
    for day in days:
        window = day_window(day)
        coverage = None
        if data.coverage is not None:
            clipped = (window.clip(s, e) for s, e in data.coverage)
            coverage = tuple(c for c in clipped if c is not None)
        pieces.append(
            Piece(
                day,
                fetched_at,
                events_in_window(data.events, window),
                data.working_hours,
                coverage,
                data.merged_only,
            )
        )
    return pieces


def assemble(pieces: Sequence[Piece], window: Window) -> MailboxData:
    """The mailbox's data for `window` from the pieces of every day it touches."""
    # An event spanning several days is stored in each day's piece: keep it once. Identical
    # events within one day are distinct items and all stay: multiplicity per identity is the
    # most any single piece holds.
    kept: Counter[tuple[object, ...]] = Counter()
    events: list[Event] = []
    coverage: list[tuple[datetime, datetime]] | None = None
    for piece in pieces:
        here = Counter((e.start, e.end, e.busy_type, e.details) for e in piece.events)
        for event in piece.events:
            identity = (event.start, event.end, event.busy_type, event.details)
            if kept[identity] < here[identity]:
                kept[identity] += 1
                events.append(event)
        if piece.coverage is not None or coverage is not None:
            coverage = coverage or []
            # a day without a coverage list is covered whole
            coverage.extend(piece.coverage if piece.coverage is not None else [_whole(piece.day)])
    return MailboxData(
        events=events_in_window(events, window),
        working_hours=next((p.working_hours for p in pieces if p.working_hours), None),
        coverage=tuple(coverage) if coverage is not None else None,
        merged_only=any(p.merged_only for p in pieces),
    )


def _whole(day: date) -> tuple[datetime, datetime]:
    w = day_window(day)
    return (w.start, w.end)


# --- bytes -------------------------------------------------------------------------------------


def _t(value: datetime) -> int:
    return int(value.timestamp())


def _dt(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _encode_event(e: Event) -> list[object]:
    d = e.details
    details = None
    if d is not None:
        flags = (d.is_meeting, d.is_recurring, d.is_exception, d.is_reminder_set, d.is_private)
        details = [d.id, d.subject, d.location, sum(1 << i for i, f in enumerate(flags) if f)]
    return [_t(e.start), _t(e.end), e.busy_type.value, details]


def _decode_event(raw: list[Any]) -> Event:
    start, end, busy, details = raw
    info = None
    if details is not None:
        ident, subject, location, flags = details
        info = EventDetails(ident, subject, location, *[bool(flags & (1 << i)) for i in range(5)])
    return Event(_dt(start), _dt(end), BusyType(busy), info)


def _encode_common(
    events: Iterable[Event],
    wh: WorkingHours | None,
    coverage: Sequence[tuple[datetime, datetime]] | None,
    merged_only: bool,
) -> dict[str, Any]:
    return {
        "e": [_encode_event(e) for e in events],
        "w": [wh.timezone, [[list(p.days), p.start_minute, p.end_minute] for p in wh.periods]]
        if wh
        else None,
        "c": [[_t(s), _t(e)] for s, e in coverage] if coverage is not None else None,
        "m": merged_only,
    }


def _decode_common(doc: dict[str, Any]) -> dict[str, Any]:
    wh = None
    if doc["w"] is not None:
        zone, periods = doc["w"]
        wh = WorkingHours(zone, tuple(WorkingPeriod(tuple(d), s, e) for d, s, e in periods))
    return {
        "events": tuple(_decode_event(e) for e in doc["e"]),
        "working_hours": wh,
        "coverage": None if doc["c"] is None else tuple((_dt(s), _dt(e)) for s, e in doc["c"]),
        "merged_only": bool(doc["m"]),
    }


def encode_piece(piece: Piece) -> bytes:
    document = {
        "d": piece.day.isoformat(),
        "f": piece.fetched_at,
        "t": piece.ctag,
        "v": piece.validated_at,
        **_encode_common(piece.events, piece.working_hours, piece.coverage, piece.merged_only),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def decode_piece(raw: bytes) -> Piece:
    """The piece in `raw`; ValueError for anything that is not one (treated as a miss)."""
    try:
        doc = json.loads(raw)
        common = _decode_common(doc)
        ctag = doc.get("t")
        validated = doc.get("v")
        return Piece(
            date.fromisoformat(doc["d"]),
            float(doc["f"]),
            common["events"],
            common["working_hours"],
            common["coverage"],
            common["merged_only"],
            ctag if isinstance(ctag, str) else None,
            float(validated) if isinstance(validated, int | float) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a cache piece: {exc}") from None


# --- whole answers (the entry node's copies of other sites' answers) ----------------------------


def remote_key(
    site: str, address: str, window: Window, interval: int, view: str, requester: str | None
) -> str:
    return (
        f"cas:{VERSION}:remote:{site}:{address.casefold()}:{_t(window.start)}-{_t(window.end)}:"
        f"{interval}:{view}:{(requester or '-').casefold()}"
    )


def remote_prefix(site: str, address: str) -> str:
    return f"cas:{VERSION}:remote:{site}:{address.casefold()}:"


def encode_answer(
    data: MailboxData, vouched_at: float, kept_at: float, validated_at: float | None = None
) -> bytes:
    """A whole answer, the unix time its source vouched for it, when it was kept, and when its
    owner last confirmed it unchanged; its freshness keeps the owner's version."""
    f = data.freshness
    document = {
        "g": data.merged,
        "s": [f.source if f else None, vouched_at, f.site if f else None],
        "k": kept_at,
        "w": validated_at,
        "r": f.version if f else None,
        "v": data.times_only,
        **_encode_common(data.events, data.working_hours, data.coverage, data.merged_only),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def decode_answer(raw: bytes) -> tuple[MailboxData, float, float, float | None]:
    """The answer in `raw` (its freshness as stored, age 0), when it was vouched for, when it
    was kept and last confirmed; ValueError for anything that is not one (a miss)."""
    try:
        doc = json.loads(raw)
        source, vouched_at, site = doc["s"]
        version = doc.get("r")
        version = version if isinstance(version, str) else None
        freshness = Freshness(source, 0.0, site, version=version) if source else None
        merged = doc["g"]
        if merged is not None and not isinstance(merged, str):
            raise ValueError("merged string is not text")
        data = MailboxData(
            merged=merged, freshness=freshness, times_only=doc.get("v") is True,
            **_decode_common(doc),
        )  # fmt: skip
        validated = doc.get("w")
        validated_at = float(validated) if isinstance(validated, int | float) else None
        return data, float(vouched_at), float(doc["k"]), validated_at
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a cached answer: {exc}") from None
