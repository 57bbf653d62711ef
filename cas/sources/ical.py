"""Stored iCalendar objects -> free/busy `Event`s: recurrence expansion, time zones, busy types.

This module owns the meaning of calendar data for the proxy. It is pure (no I/O): the CalDAV
backend hands it the `calendar-data` of a REPORT answer (`parse_multistatus`) and gets back absolute
UTC events for one window (`events_from_calendar`).

Theory of operation
-------------------
* Each text is one calendar object resource (one UID: a master and its overridden instances).
  Recurrences are expanded here, with `recurring-ical-events` (RRULE, RDATE, time zones); EXDATE
  and RECURRENCE-ID overrides are matched to occurrences by instant in `cas.sources.recurrence`,
  because the library also matches them by clock time and so hits the wrong occurrence.
* Times: TZID and UTC values keep their absolute time. Floating times and all-day dates belong to
  the mailbox owner's zone (`default_tz`): an all-day event runs midnight to midnight there (no
  DTEND means one day; DURATION is honoured).
* Custom VTIMEZONE blocks (Outlook's "Customized Time Zone", Windows names) are renamed per
  definition before parsing, because `icalendar` caches custom zones process-wide by TZID: without
  this, the first mailbox's "Customized Time Zone" would silently shift every other mailbox's.
* Malformed objects: an object that cannot be parsed or expanded is skipped and logged, and the
  others still count. If objects were given and *none* could be used, `CalendarDataError` (a
  `BackendFailure`) is raised: a calendar we cannot read is unknown, never free.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import icalendar
import recurring_ical_events

from cas.errors import BackendFailure
from cas.model.busy import BUSY_TYPE_OF_CDO, BusyType
from cas.model.freebusy import Event, EventDetails, Window, events_in_window
from cas.sources.recurrence import absolute, override_span, take_exceptions, time_of

logger = logging.getLogger(__name__)

# Expanding one object past this many occurrences in one window marks it malformed (a
# FREQ=SECONDLY rule must not stall a node).
MAX_OCCURRENCES_PER_OBJECT = 10_000
# Floating and all-day times are placed in the owner's zone only after expansion; ask the
# expander for a day more on each side so no such occurrence is lost at the window's edges.
_EXPANSION_MARGIN = timedelta(days=1)

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"


class CalendarDataError(BackendFailure):
    """Calendar data from a backend could not be used (bad XML, no readable object)."""


@dataclass(frozen=True, slots=True)
class CalendarObject:
    """One calendar object resource of a REPORT answer; `parsed`, when a node's copy already
    parsed it, saves parsing it again (it is copied before use: expansion changes it)."""

    href: str
    etag: str | None
    ics: str
    parsed: tuple[icalendar.Calendar, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SkippedObject:
    """A calendar object that was left out, and why."""

    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class Expansion:
    """Events of a set of calendar objects over one window, and the objects that were skipped."""

    events: tuple[Event, ...]
    skipped: tuple[SkippedObject, ...]
    objects: int


# --- busy type: the one table --------------------------------------------------------------

# Outlook's own status (X-MICROSOFT-CDO-BUSYSTATUS) wins over the RFC 5545 properties; its
# spellings are a column of the busy-type table.
CDO_BUSY_STATUS: dict[str, BusyType] = BUSY_TYPE_OF_CDO


def busy_type_of(
    status: str | None, transp: str | None, cdo_busy_status: str | None
) -> BusyType | None:
    """The busy type of an event from its STATUS, TRANSP and X-MICROSOFT-CDO-BUSYSTATUS.

    Precedence: STATUS:CANCELLED drops the event (None); a known CDO status wins; then
    STATUS:TENTATIVE is Tentative; then TRANSP:TRANSPARENT is Free; anything else is Busy.
    """
    status = (status or "").strip().upper()
    if status == "CANCELLED":
        return None
    cdo = CDO_BUSY_STATUS.get((cdo_busy_status or "").strip().upper())
    if cdo is not None:
        return cdo
    if status == "TENTATIVE":
        return BusyType.TENTATIVE
    if (transp or "").strip().upper() == "TRANSPARENT":
        return BusyType.FREE
    return BusyType.BUSY


# --- events from calendar objects ----------------------------------------------------------


def events_from_calendar(
    ics_texts: Iterable[str | bytes | CalendarObject], window: Window, default_tz: str
) -> list[Event]:
    """Events of the calendar objects that overlap `window`, in UTC, ordered by start.

    Raises `CalendarDataError` when objects were given but none could be used.
    """
    expansion = expand_calendar(ics_texts, window, default_tz)
    for skipped in expansion.skipped:
        logger.warning("skipping calendar object %s: %s", skipped.label, skipped.reason)
    if expansion.objects and len(expansion.skipped) == expansion.objects:
        first = expansion.skipped[0]
        raise CalendarDataError(
            f"none of {expansion.objects} calendar object(s) could be read; "
            f"first problem: {first.label}: {first.reason}"
        )
    return list(expansion.events)


def expand_calendar(
    ics_texts: Iterable[str | bytes | CalendarObject], window: Window, default_tz: str
) -> Expansion:
    """Like `events_from_calendar`, but reports skipped objects instead of deciding about them."""
    zone = _zone(default_tz)
    events: list[Event] = []
    skipped: list[SkippedObject] = []
    count = 0
    for index, item in enumerate(ics_texts):
        count += 1
        label, text = _label_and_text(index, item)
        parsed = item.parsed if isinstance(item, CalendarObject) else None
        try:
            events.extend(_remembered_events(text, parsed, window, zone))
        except Exception as exc:
            skipped.append(SkippedObject(label, f"{type(exc).__name__}: {exc}"))
    return Expansion(events_in_window(events, window), tuple(skipped), count)


# The events of one object over one window are the same every time the object is unchanged:
# a re-read after a change in one event (a sync that brought one object) expands only that one.
# Keyed by the text itself (its hash is kept by the string), the zone and the window.
_EXPANDED: OrderedDict[tuple[str, str, datetime, datetime], tuple[Event, ...]] = OrderedDict()
EXPANDED_ENTRIES = 20_000


def _remembered_events(
    text: str, parsed: tuple[icalendar.Calendar, ...] | None, window: Window, zone: tzinfo
) -> tuple[Event, ...]:
    key = (text, str(zone), window.start, window.end)
    found = _EXPANDED.get(key)
    if found is not None:
        _EXPANDED.move_to_end(key)
        return found
    calendars = copy.deepcopy(parsed) if parsed is not None else parse_calendars(text)
    events = tuple(_object_events(text, window, zone, calendars))
    _EXPANDED[key] = events
    while len(_EXPANDED) > EXPANDED_ENTRIES:
        _EXPANDED.popitem(last=False)
    return events


def parse_calendars(text: str) -> tuple[icalendar.Calendar, ...]:
    """The VCALENDARs of one calendar object (custom time zones isolated first)."""
    calendars = icalendar.Calendar.from_ical(_isolate_custom_timezones(text), multiple=True)
    return tuple(c for c in calendars if c.name == "VCALENDAR")


def _escape_repl(text: str) -> str:
    """`text` as a literal in a `re.sub` replacement string."""
    return text.replace("\\", "\\\\")


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CalendarDataError(
            f"unknown time zone {name!r} for floating and all-day times"
        ) from exc


def _label_and_text(index: int, item: str | bytes | CalendarObject) -> tuple[str, str]:
    if isinstance(item, CalendarObject):
        return item.href, item.ics
    if isinstance(item, bytes):
        return f"#{index}", item.decode("utf-8", errors="replace")
    return f"#{index}", item


def _object_events(
    text: str, window: Window, zone: tzinfo, calendars: tuple[icalendar.Calendar, ...]
) -> Iterator[Event]:
    if not calendars:
        raise ValueError("no VCALENDAR component")
    lo = window.start.astimezone(zone) - _EXPANSION_MARGIN
    hi = window.end.astimezone(zone) + _EXPANSION_MARGIN
    produced = 0
    for calendar in calendars:
        taken = take_exceptions(calendar, zone)  # matched by instant below, not by the library
        query = recurring_ical_events.of(calendar, keep_recurrence_attributes=True)
        for series in query.series:
            for occurrence in series.between(lo, hi):
                produced += 1
                if produced > MAX_OCCURRENCES_PER_OBJECT:
                    raise ValueError(
                        f"more than {MAX_OCCURRENCES_PER_OBJECT} occurrences in the window"
                    )
                component = occurrence.as_component(True)
                exceptions = taken.get(str(component.get("UID", "")))
                if exceptions is not None and exceptions.removes(occurrence.start, zone):
                    continue
                is_exception = bool(occurrence.recurrence_ids)
                event = _event(
                    component, occurrence.start, occurrence.end, is_exception, zone, text
                )
                if event is not None:
                    yield event
        for exceptions in taken.values():
            for override in exceptions.kept_overrides(zone):
                start, end = override_span(override)
                event = _event(override, start, end, True, zone, text)
                if event is not None:
                    yield event


def _event(
    component: icalendar.cal.Component,
    start_value: date | datetime,
    end_value: date | datetime,
    is_exception: bool,
    zone: tzinfo,
    text: str,
) -> Event | None:
    """The event of one occurrence: `component` (the master, or an override) at these times."""
    busy = busy_type_of(
        _text(component, "STATUS"),
        _text(component, "TRANSP"),
        _text(component, "X-MICROSOFT-CDO-BUSYSTATUS"),
    )
    if busy is None:
        return None
    start = _absolute(start_value, zone)
    end = _absolute(end_value, zone)
    is_recurring = is_exception or "RRULE" in component or "RDATE" in component
    if is_exception:
        recurrence = _recurrence_text(time_of(component, "RECURRENCE-ID"), zone)
    elif is_recurring:
        recurrence = _recurrence_text(start_value, zone)
    else:
        recurrence = ""
    uid = _text(component, "UID") or "no-uid:" + hashlib.sha256(text.encode()).hexdigest()
    details = EventDetails(
        id=hashlib.sha256(f"{uid}\n{recurrence}".encode()).hexdigest()[:16],
        subject=_text(component, "SUMMARY"),
        location=_text(component, "LOCATION"),
        is_meeting="ATTENDEE" in component,
        is_recurring=is_recurring,
        is_exception=is_exception,
        is_reminder_set=any(sub.name == "VALARM" for sub in component.subcomponents),
        is_private=(_text(component, "CLASS") or "").upper() in {"PRIVATE", "CONFIDENTIAL"},
    )
    return Event(start, end, busy, details)


def _text(component: icalendar.cal.Component, name: str) -> str | None:
    value = component.get(name)
    if value is None:
        return None
    if isinstance(value, list):  # a repeated property: the first one counts
        value = value[0]
    return str(value)


_absolute = absolute


def _recurrence_text(value: date | datetime, zone: tzinfo) -> str:
    if not isinstance(value, datetime):
        return value.isoformat()
    return _absolute(value, zone).strftime("%Y%m%dT%H%M%SZ")


# --- custom VTIMEZONE isolation --------------------------------------------------------------

_UNFOLD = re.compile(r"\r?\n[ \t]")
_VTIMEZONE = re.compile(r"^BEGIN:VTIMEZONE\r?\n.*?^END:VTIMEZONE\r?$", re.M | re.S | re.I)
_TZID_LINE = re.compile(r"^TZID(?:;[^:\r\n]*)?:(.*?)\r?$", re.M | re.I)


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _isolate_custom_timezones(text: str) -> str:
    """Rename every non-IANA VTIMEZONE (and its uses) to a name unique to its definition."""
    if "VTIMEZONE" not in text.upper():
        return text
    text = _UNFOLD.sub("", text)
    renames: dict[str, str] = {}
    for block in _VTIMEZONE.finditer(text):
        found = _TZID_LINE.search(block.group(0))
        if found is None:
            continue
        name = found.group(1).strip()
        if not name or name.strip("/") in _iana_names():
            continue
        digest = hashlib.sha256(block.group(0).encode()).hexdigest()[:12]
        renames[name] = f"{name}~{digest}"
    for name, unique in renames.items():
        escaped = re.escape(name)
        # the replacement names the group of each pattern, so no lambda needs a closure
        text = re.sub(
            rf"^(TZID(?:;[^:\r\n]*)?:){escaped}(\r?)$",
            rf"\g<1>{_escape_repl(unique)}\g<2>",
            text,
            flags=re.M | re.I,
        )
        text = re.sub(
            rf'(;TZID=)("?){escaped}\2(?=[;:,])',
            rf"\g<1>\g<2>{_escape_repl(unique)}\g<2>",
            text,
            flags=re.I,
        )
    return text


isolate_custom_timezones = _isolate_custom_timezones

__all__ = [
    "CDO_BUSY_STATUS",
    "MAX_OCCURRENCES_PER_OBJECT",
    "CalendarDataError",
    "CalendarObject",
    "Expansion",
    "SkippedObject",
    "busy_type_of",
    "events_from_calendar",
    "expand_calendar",
    "isolate_custom_timezones",
]
