"""Recurrence exceptions matched by instant: EXDATE and RECURRENCE-ID overrides of a series.

RFC 5545 names an occurrence by its start: an EXDATE (§3.8.5.1) removes, and an override's
RECURRENCE-ID (§3.8.4.4) replaces, the occurrence that starts at the same instant, whatever zone
either value is written in. recurring-ical-events (3.8.2) instead matches exceptions by clock
time, the UTC one or the local one of either side, so an exception whose UTC clock time equals
another occurrence's local clock time hits that occurrence too: with occurrences at 14:00 and
15:00 CET, `EXDATE:...T140000Z` (15:00 CET) also removes 14:00 CET, and busy time shows as free.

So `take_exceptions` removes every series' EXDATEs and overrides from a parsed calendar before the
library expands it (the library still does RRULE, RDATE, COUNT and time zones), and
`SeriesExceptions` applies them to the expanded occurrences by comparing absolute instants.
Floating and all-day values are read in the mailbox owner's zone, as everywhere in
`cas.sources.ical`; a DATE-valued EXDATE also removes a date-time occurrence on that local day,
as the library did. Series this cannot take over safely are left to the library: an override
with RANGE=THISANDFUTURE (it moves later occurrences too), and a UID with several masters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import icalendar


@dataclass(frozen=True, slots=True)
class SeriesExceptions:
    """The exceptions of one series (one UID): what they exclude, and the overrides."""

    excluded: frozenset[datetime]
    excluded_days: frozenset[date]
    overrides: tuple[icalendar.cal.Component, ...]
    replaced: frozenset[datetime]

    def removes(self, start: date | datetime, zone: tzinfo) -> bool:
        """Whether the occurrence starting at `start` is excluded or replaced by an override."""
        instant = absolute(start, zone)
        if instant in self.excluded or instant in self.replaced:
            return True
        return _local_day(start) in self.excluded_days

    def kept_overrides(self, zone: tzinfo) -> Iterator[icalendar.cal.Component]:
        """The overrides whose own occurrence is not excluded by an EXDATE."""
        for override in self.overrides:
            if not self._excludes(time_of(override, "RECURRENCE-ID"), zone):
                yield override

    def _excludes(self, start: date | datetime, zone: tzinfo) -> bool:
        return absolute(start, zone) in self.excluded or _local_day(start) in self.excluded_days


def take_exceptions(calendar: icalendar.Calendar, zone: tzinfo) -> dict[str, SeriesExceptions]:
    """Strip EXDATEs and overrides of every series in `calendar`; return them by UID.

    `calendar` is changed in place: masters lose their EXDATE properties, overrides are removed.
    A UID without a master (an invitation to one occurrence) keeps its components as they are.
    """
    series: dict[str, list[icalendar.cal.Component]] = {}
    for component in calendar.subcomponents:
        if component.name == "VEVENT":
            series.setdefault(str(component.get("UID", "")), []).append(component)
    taken: dict[str, SeriesExceptions] = {}
    for uid, components in series.items():
        masters = [c for c in components if "RECURRENCE-ID" not in c]
        overrides = [c for c in components if "RECURRENCE-ID" in c]
        if len(masters) != 1 or any(_has_range(o) for o in overrides):
            continue
        taken[uid] = _take(masters[0], overrides, zone)
        removed = {id(o) for o in overrides}
        calendar.subcomponents[:] = [c for c in calendar.subcomponents if id(c) not in removed]
    return taken


def override_span(override: icalendar.cal.Component) -> tuple[date | datetime, date | datetime]:
    """Start and end of an override: DTEND, else DTSTART + DURATION, else a day or an instant."""
    start = time_of(override, "DTSTART")
    if "DTEND" in override:
        return start, time_of(override, "DTEND")
    if "DURATION" in override:
        return start, start + time_of(override, "DURATION")
    if isinstance(start, datetime):
        return start, start
    return start, start + timedelta(days=1)


def time_of(component: icalendar.cal.Component, name: str) -> Any:
    """The value of a date, date-time or duration property (`.dt`); icalendar types it loosely."""
    prop: Any = component[name]
    return prop.dt


def absolute(value: date | datetime, zone: tzinfo) -> datetime:
    """An aware UTC datetime; floating times and dates are read in `zone` (dates at midnight)."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _take(
    master: icalendar.cal.Component, overrides: list[icalendar.cal.Component], zone: tzinfo
) -> SeriesExceptions:
    excluded: set[datetime] = set()
    days: set[date] = set()
    for value in _exdates(master):
        if isinstance(value, datetime):
            excluded.add(absolute(value, zone))
        else:
            days.add(value)
    master.pop("EXDATE", None)
    replaced = frozenset(absolute(time_of(o, "RECURRENCE-ID"), zone) for o in overrides)
    return SeriesExceptions(frozenset(excluded), frozenset(days), tuple(overrides), replaced)


def _exdates(master: icalendar.cal.Component) -> Iterator[date | datetime]:
    """Every EXDATE value of `master` (the property may repeat and hold lists)."""
    found: Any = master.get("EXDATE")
    if found is None:
        return
    for prop in found if isinstance(found, list) else [found]:
        for value in prop.dts:
            yield value.dt


def _has_range(override: icalendar.cal.Component) -> bool:
    prop: Any = override["RECURRENCE-ID"]
    return "RANGE" in prop.params


def _local_day(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


__all__ = ["SeriesExceptions", "absolute", "override_span", "take_exceptions", "time_of"]
