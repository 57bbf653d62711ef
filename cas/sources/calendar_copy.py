"""A node's copy of one calendar collection, and which of its objects a window can touch.

Why a copy: servers filter `calendar-query` time ranges with bugs of their own. Xandikos 0.4.10
leaves out an object whose only occurrence in the range comes from RDATE, so the node reported
that time as free. The node therefore asks the server only "what changed?" (RFC 6578
sync-collection, or the whole calendar where that is missing) and picks the objects for a window
itself. Each object keeps a conservative `span`, computed once when it arrives: every occurrence
of the object starts and ends inside it, so an object whose span misses the window cannot touch
it. The span is widened by two days on each side (floating and all-day times are placed in the
owner's zone only at expansion, and no zone is more than 14 hours from UTC), and a rule without
UNTIL has no end. An object whose span cannot be worked out is always a candidate, so the
expansion (`cas.sources.ical`) still sees it and reports it if it is malformed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import icalendar

from cas.model.freebusy import Window
from cas.sources.ical import CalendarObject, parse_calendars
from cas.sources.recurrence import time_of

SPAN_MARGIN = timedelta(days=2)
_DEFAULT_LENGTH = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Span:
    """Where an object's occurrences can lie; `end` None means no end (a rule without UNTIL)."""

    start: datetime | None
    end: datetime | None

    def meets(self, window: Window) -> bool:
        if self.start is not None and self.start >= window.end:
            return False
        return self.end is None or self.end > window.start


UNBOUNDED = Span(None, None)


@dataclass(slots=True)
class CalendarCopy:
    """The objects of one calendar collection by href, the sync token they were read under,
    and whether the server answered sync-collection (None: not tried yet)."""

    url: str
    token: str | None = None
    sync_supported: bool | None = None
    objects: dict[str, tuple[CalendarObject, Span]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def reset(self) -> None:
        self.token = None
        self.objects.clear()

    def store(self, changed: Iterable[CalendarObject]) -> None:
        for item in changed:
            quick = quick_span(item.ics)
            if quick is not None:  # parsed only if a window ever needs it
                self.objects[_key(item.href)] = (item, quick)
                continue
            try:
                parsed: tuple[icalendar.Calendar, ...] | None = parse_calendars(item.ics)
            except Exception:
                parsed = None  # left for the expansion to report
            span = object_span(item.ics, parsed)
            self.objects[_key(item.href)] = (replace(item, parsed=parsed), span)

    def remove(self, hrefs: Iterable[str]) -> None:
        for href in hrefs:
            self.objects.pop(_key(href), None)

    def replace_all(self, objects: Iterable[CalendarObject]) -> None:
        self.objects.clear()
        self.store(objects)

    def candidates(self, window: Window) -> list[CalendarObject]:
        """The objects whose span meets `window`, in href order."""
        return [item for _, (item, span) in sorted(self.objects.items()) if span.meets(window)]


def _key(href: str) -> str:
    return unquote(urlsplit(href).path)


_FOLD = re.compile(r"\r?\n[ \t]")
_TIMEZONES = re.compile(r"BEGIN:VTIMEZONE.*?END:VTIMEZONE", re.S | re.I)
_TIME_LINE = re.compile(r"^(?:DTSTART|DTEND|RDATE|RECURRENCE-ID)[;:][^\r\n]*", re.M | re.I)
_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?")
_NEEDS_PARSING = re.compile(r"^(?:RRULE|DURATION|EXRULE)[;:]", re.M | re.I)


def quick_span(ics: str) -> Span | None:
    """A conservative span read from the text alone, for an object without rules or durations:
    every date or time on its DTSTART, DTEND, RDATE and RECURRENCE-ID lines (time zones aside),
    widened by the margin and a day. None when the text needs the full parser to tell."""
    text = _TIMEZONES.sub("", _FOLD.sub("", ics))
    if _NEEDS_PARSING.search(text):
        return None
    moments: list[datetime] = []
    for line in _TIME_LINE.findall(text):
        value = line.split(":", 1)[1] if ":" in line else ""
        if "/P" in value.upper():  # a period given by its duration: the parser knows its end
            return None
        for y, mo, d, h, mi, s in _STAMP.findall(value):
            try:
                moments.append(datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0),
                                        int(s or 0), tzinfo=UTC))  # fmt: skip
            except ValueError:
                return None
    if not moments:
        return None
    return Span(min(moments) - SPAN_MARGIN, max(moments) + _DEFAULT_LENGTH + SPAN_MARGIN)


def object_span(ics: str, parsed: tuple[icalendar.Calendar, ...] | None = None) -> Span:
    """The conservative span of a calendar object resource's VEVENTs (see the module doc)."""
    try:
        return _span(parsed if parsed is not None else parse_calendars(ics))
    except Exception:
        return UNBOUNDED


def _span(calendars: tuple[icalendar.Calendar, ...]) -> Span:
    starts: list[datetime] = []
    ends: list[datetime] = []
    open_ended = False
    for calendar in calendars:
        for event in calendar.walk("VEVENT"):
            first = time_of(event, "DTSTART")
            length = _length(event, first)
            points = [first, *_dates(event, "RDATE"), *_dates(event, "RECURRENCE-ID")]
            starts.extend(_utc(p) for p in points)
            ends.extend(_utc(p) + length for p in points)
            ends.extend(_period_ends(event))
            for rule in _rules(event):
                until = rule.get("UNTIL")
                if not until:
                    open_ended = True
                else:
                    ends.append(_utc(until[0]) + length)
    if not starts:
        return _EMPTY
    start = min(starts) - SPAN_MARGIN
    end = None if open_ended else max(ends) + SPAN_MARGIN
    return Span(start, end)


# A calendar object without VEVENTs (a task list's VTODO) never meets a window.
_EMPTY = Span(datetime.max.replace(tzinfo=UTC) - SPAN_MARGIN, datetime.min.replace(tzinfo=UTC))


def _length(event: icalendar.cal.Component, first: date | datetime) -> timedelta:
    if "DTEND" in event:
        return max(_utc(time_of(event, "DTEND")) - _utc(first), timedelta(0))
    if "DURATION" in event:
        duration: timedelta = time_of(event, "DURATION")
        return max(duration, timedelta(0))
    return _DEFAULT_LENGTH


def _dates(event: icalendar.cal.Component, name: str) -> list[date | datetime]:
    found: Any = event.get(name)
    if found is None:
        return []
    values: list[date | datetime] = []
    for prop in found if isinstance(found, list) else [found]:
        if hasattr(prop, "dts"):
            for item in prop.dts:
                value = item.dt
                values.append(value[0] if isinstance(value, tuple) else value)
        else:
            values.append(prop.dt)
    return values


def _period_ends(event: icalendar.cal.Component) -> list[datetime]:
    """Ends of RDATE;VALUE=PERIOD values, which carry their own end or duration."""
    found: Any = event.get("RDATE")
    ends: list[datetime] = []
    for prop in found if isinstance(found, list) else [found] if found is not None else []:
        for item in prop.dts:
            value = item.dt
            if isinstance(value, tuple):
                begin, finish = value
                stop = begin + finish if isinstance(finish, timedelta) else finish
                ends.append(_utc(stop))
    return ends


def _rules(event: icalendar.cal.Component) -> list[icalendar.vRecur]:
    found: Any = event.get("RRULE")
    if found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


def _utc(value: date | datetime) -> datetime:
    """An aware UTC datetime; floating times and dates taken as UTC (the margin covers it)."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


__all__ = ["UNBOUNDED", "CalendarCopy", "Span", "object_span", "quick_span"]
