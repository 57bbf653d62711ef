"""Windows-style yearly rules derived from the IANA time-zone database (`zoneinfo`).

This module owns the translation of an IANA zone's real transitions into `ZoneRules`: one rule
set per year (what a `SerializableTimeZone` can say), and runs of years that share one rule set
(what a `TimeZoneDefinition`'s transition groups say). It scans `zoneinfo` rather than shipping
tables, so the answer follows the installed tzdata.

Theory of operation
-------------------
For a year Y, probe the zone's UTC offset once a day from a day before local New Year to a day
after the next one, and bisect every change down to the minute. A transition belongs to Y when
its wall-clock moment (read in the offset before it) falls in Y. Then:

* no transition: one offset all year, written as "no DST" (equal biases, exchangelib's dummies);
* otherwise the smaller offset is standard time and the larger daylight time (Windows' view even
  for zones that IANA models with negative DST, e.g. Europe/Dublin or Africa/Casablanca). The
  first switch into daylight time and the last switch back give the two rules; a year with only
  one switch (a zone changing its base offset) is completed with a switch at local New Year.
  Years with more than two offsets keep the pair of the year's last transition (approximate).

A rule records the weekday and its order in the month ("last Sunday of March at 02:00"), so it
is exact for the year it was derived from; consecutive years whose instants the previous rule
predicts exactly share one group.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cas.codecs.ews.tzrules import NO_DST_DAYLIGHT, NO_DST_STANDARD, ZoneRules, rule_on

_DAY = timedelta(days=1)
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Shift:
    """One change of UTC offset: the naive UTC instant, the offset before and after."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def wall(self) -> datetime:
        """The wall-clock moment of the switch, read in the time before it."""
        return self.at + self.before


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; `ValueError` if the database does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def _offset(tz: ZoneInfo, moment: datetime) -> timedelta:
    offset = moment.replace(tzinfo=UTC).astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def shifts_in(name: str, year: int) -> tuple[Shift, ...]:
    """The offset changes of zone `name` whose wall-clock moment falls in `year`."""
    tz = zone(name)
    found: list[Shift] = []
    moment = datetime(year, 1, 1) - 2 * _DAY
    stop = datetime(year + 1, 1, 1) + 2 * _DAY
    current = _offset(tz, moment)
    while moment < stop:
        step = moment + _DAY
        following = _offset(tz, step)
        if following != current:
            lo, hi = moment, step  # offset(lo) == current, offset(hi) != current
            while hi - lo > _MINUTE:
                mid = lo + (hi - lo) // 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    mid = lo + _MINUTE
                if _offset(tz, mid) == current:
                    lo = mid
                else:
                    hi = mid
            found.append(Shift(hi, current, _offset(tz, hi)))
            current = _offset(tz, hi)
        moment = step
    return tuple(s for s in found if s.wall.year == year)


def _minutes(offset: timedelta) -> int:
    return int(offset.total_seconds() // 60)


@lru_cache(maxsize=8192)
def rules_for_year(name: str, year: int) -> ZoneRules:
    """The rules of zone `name` that are exact for `year` (see the module docstring)."""
    shifts = shifts_in(name, year)
    if not shifts:
        offset = _offset(zone(name), datetime(year, 7, 1))
        return ZoneRules(-_minutes(offset), NO_DST_STANDARD, NO_DST_DAYLIGHT)
    pair = {shifts[-1].before, shifts[-1].after}
    std, dst = min(pair), max(pair)
    relevant = [s for s in shifts if {s.before, s.after} == pair]
    starts = [s for s in relevant if s.after == dst]
    ends = [s for s in relevant if s.after == std]
    new_year = datetime(year, 1, 1)
    start_wall = starts[0].wall if starts else new_year
    end_wall = ends[-1].wall if ends else new_year
    return ZoneRules(
        bias=-_minutes(std),
        standard=rule_on(end_wall, 0),
        daylight=rule_on(start_wall, -(_minutes(dst) - _minutes(std))),
    )


@lru_cache(maxsize=1024)
def rule_groups(name: str, first_year: int, last_year: int) -> tuple[tuple[int, ZoneRules], ...]:
    """Runs of years sharing one rule set: (first year of the run, rules), oldest first."""
    groups: list[tuple[int, ZoneRules]] = []
    for year in range(first_year, last_year + 1):
        rules = rules_for_year(name, year)
        if groups and groups[-1][1].equivalent_in(rules, year):
            continue
        groups.append((year, rules))
    return tuple(groups)


def standard_offset(name: str, year: int) -> timedelta:
    """The standard (smaller) UTC offset of zone `name` in `year`."""
    return rules_for_year(name, year).std_offset


__all__ = ["Shift", "rule_groups", "rules_for_year", "shifts_in", "standard_offset", "zone"]
