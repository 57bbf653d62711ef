"""Windows-style yearly time-zone rules and a `tzinfo` that follows them.

This module owns the meaning of an EWS `SerializableTimeZone` (docs/protocols.md §6):
a base `Bias` (UTC = local + Bias, in minutes) plus a `StandardTime` and a `DaylightTime` rule,
each saying on which weekday of which month, at what wall-clock time, the period starts and
which extra bias it adds. `RuleTimeZone` turns such rules into an exact `datetime.tzinfo`.

Theory of operation
-------------------
Every year has two transition *instants* in UTC: daylight starts at the DaylightTime wall time
read in standard time, and standard time returns at the StandardTime wall time read in daylight
time (the Windows convention: a switch time is given in the time in effect before it). The
offset at a UTC instant is decided by the most recent transition among those of the previous,
the current and the next year, so a DST period that spans the new year (southern hemisphere)
needs no special case and `fromutc` is exact.

A naive wall time is resolved as PEP 495 and `zoneinfo` do: each candidate offset o is kept if
the instant `wall - o` really has offset o. One candidate: that one. Two (the repeated hour when
clocks go back): `fold=0` takes the earlier instant (the larger offset), `fold=1` the later. None
(the skipped hour when clocks go forward): `fold=0` takes the offset in effect *before* the
transition (the smaller one), `fold=1` the offset after it, so 02:30 on a spring-forward night
reads as 03:30 daylight time with fold=0, like `zoneinfo`.
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from cas.model.freebusy import WEEKDAYS

LAST = 5  # DayOrder meaning "the last such weekday of the month"


@dataclass(frozen=True, slots=True)
class TransitionRule:
    """When a period (standard or daylight) starts each year, as EWS writes it."""

    bias: int  # minutes added to the zone's base bias while this period lasts
    time: timedelta  # wall-clock time of the switch, in the time in effect before it
    day_order: int  # 1..4 = n-th such weekday of the month, 5 = the last one
    month: int  # 1..12
    weekday: int  # index into WEEKDAYS: 0 = Sunday .. 6 = Saturday
    year: int | None = None  # kept as sent; the rule is applied to every year

    def __post_init__(self) -> None:
        if not 1 <= self.day_order <= LAST:
            raise ValueError(f"DayOrder must be 1..5 (5 = last), got {self.day_order}")
        if not 1 <= self.month <= 12:
            raise ValueError(f"Month must be 1..12, got {self.month}")
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday index must be 0..6, got {self.weekday}")
        if not timedelta(0) <= self.time <= timedelta(hours=24):
            raise ValueError(f"Time must be within a day, got {self.time}")
        if not -24 * 60 < self.bias < 24 * 60:
            raise ValueError(f"Bias must be less than a day, got {self.bias} minutes")

    @property
    def weekday_name(self) -> str:
        return WEEKDAYS[self.weekday]

    def day_in(self, year: int) -> date:
        """The date this rule selects in `year`."""
        python_weekday = (self.weekday - 1) % 7  # Python: Monday = 0
        if self.day_order == LAST:
            last = calendar.monthrange(year, self.month)[1]
            back = (date(year, self.month, last).weekday() - python_weekday) % 7
            return date(year, self.month, last - back)
        ahead = (python_weekday - date(year, self.month, 1).weekday()) % 7
        return date(year, self.month, 1 + ahead + 7 * (self.day_order - 1))

    def wall_time_in(self, year: int) -> datetime:
        """The naive wall-clock moment of the switch in `year`."""
        return datetime.combine(self.day_in(year), datetime.min.time()) + self.time


def rule_on(moment: datetime, bias: int = 0) -> TransitionRule:
    """The rule whose switch in `moment.year` is at the wall time `moment` (weekday-based)."""
    last_day = calendar.monthrange(moment.year, moment.month)[1]
    order = LAST if moment.day + 7 > last_day else (moment.day - 1) // 7 + 1
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return TransitionRule(
        bias=bias,
        time=moment - midnight,
        day_order=order,
        month=moment.month,
        weekday=(moment.weekday() + 1) % 7,
    )


# What exchangelib sends for a zone without DST (both biases 0, so "no DST"; docs/protocols.md §6).
NO_DST_STANDARD = TransitionRule(0, timedelta(0), 1, 1, WEEKDAYS.index("Monday"))
NO_DST_DAYLIGHT = TransitionRule(0, timedelta(0), LAST, 12, WEEKDAYS.index("Sunday"))


@dataclass(frozen=True, slots=True)
class ZoneRules:
    """A SerializableTimeZone: UTC = local + bias (+ the current period's own bias)."""

    bias: int
    standard: TransitionRule | None = None
    daylight: TransitionRule | None = None

    def __post_init__(self) -> None:
        if not -24 * 60 < self.bias < 24 * 60:
            raise ValueError(f"Bias must be less than a day, got {self.bias} minutes")

    @property
    def std_offset(self) -> timedelta:
        return -timedelta(minutes=self.bias + (self.standard.bias if self.standard else 0))

    @property
    def dst_offset(self) -> timedelta:
        if self.daylight is None:
            return self.std_offset
        return -timedelta(minutes=self.bias + self.daylight.bias)

    @property
    def has_dst(self) -> bool:
        return (
            self.standard is not None
            and self.daylight is not None
            and self.std_offset != self.dst_offset
        )

    def transitions_utc(self, year: int) -> tuple[datetime, datetime] | None:
        """(daylight starts, standard starts) in `year` as naive UTC, or None without DST."""
        if not self.has_dst:
            return None
        assert self.standard is not None and self.daylight is not None
        start = self.daylight.wall_time_in(year) - self.std_offset
        end = self.standard.wall_time_in(year) - self.dst_offset
        return start, end

    def equivalent_in(self, other: ZoneRules, year: int) -> bool:
        """Whether both rule sets give the same offsets at every instant of `year`."""
        return (
            self.std_offset == other.std_offset
            and self.has_dst == other.has_dst
            and self.dst_offset == other.dst_offset
            and self.transitions_utc(year) == other.transitions_utc(year)
        )


def _format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class RuleTimeZone(tzinfo):
    """A `tzinfo` following one set of yearly `ZoneRules` (see the module docstring)."""

    def __init__(self, rules: ZoneRules, name: str | None = None) -> None:
        self.rules = rules
        self.name = name
        self._std = rules.std_offset
        self._dst = rules.dst_offset
        self._has_dst = rules.has_dst
        self._offsets = sorted({self._std, self._dst})
        self._years: dict[int, tuple[list[datetime], list[bool]]] = {}

    def __getinitargs__(self) -> tuple[ZoneRules, str | None]:
        return (self.rules, self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleTimeZone) and other.rules == self.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        return f"RuleTimeZone({self.rules!r}, name={self.name!r})"

    # -- the rules as instants ------------------------------------------------------------------

    def _events(self, year: int) -> tuple[list[datetime], list[bool]]:
        """Sorted transition instants of year-1..year+1 and whether each starts daylight time."""
        cached = self._years.get(year)
        if cached is not None:
            return cached
        events: list[tuple[datetime, bool]] = []
        for y in (year - 1, year, year + 1):
            pair = self.rules.transitions_utc(y) if 1 < y < 9999 else None
            if pair is not None:
                events += [(pair[0], True), (pair[1], False)]
        events.sort()
        # A sentinel far in the past, in the state the last of these years ends in.
        instants = [datetime.min] + [e[0] for e in events]
        daylight = [events[-1][1]] + [e[1] for e in events]
        self._years[year] = (instants, daylight)
        return instants, daylight

    def offset_at_utc(self, moment: datetime) -> timedelta:
        """The UTC offset at the naive UTC instant `moment`."""
        if not self._has_dst:
            return self._std
        instants, daylight = self._events(moment.year)
        return self._dst if daylight[bisect_right(instants, moment) - 1] else self._std

    def candidates(self, wall: datetime) -> list[timedelta]:
        """The offsets a naive wall time can have: none (a gap), one, or two (a repeated hour)."""
        if not self._has_dst:
            return [self._std]
        return [o for o in self._offsets if self.offset_at_utc(wall - o) == o]

    # -- tzinfo ---------------------------------------------------------------------------------

    def utcoffset(self, dt: datetime | None) -> timedelta:
        if dt is None or not self._has_dst:
            return self._std
        wall = dt.replace(tzinfo=None, fold=0)
        found = self.candidates(wall)
        if len(found) == 1:
            return found[0]
        if len(found) == 2:  # repeated hour: fold=0 is the earlier instant (larger offset)
            return found[0] if dt.fold else found[1]
        # skipped hour: fold=0 reads the wall time with the offset before the transition
        before = self.offset_at_utc(wall - self._offsets[1])
        after = self._std if before == self._dst else self._dst
        return after if dt.fold else before

    def dst(self, dt: datetime | None) -> timedelta:
        return self.utcoffset(dt) - self._std

    def tzname(self, dt: datetime | None) -> str:
        if self.name:
            return self.name
        return _format_offset(self.utcoffset(dt))

    def fromutc(self, dt: datetime) -> datetime:
        if dt.tzinfo is not self:
            raise ValueError("fromutc: dt.tzinfo is not self")
        moment = dt.replace(tzinfo=None)
        offset = self.offset_at_utc(moment)
        wall = moment + offset
        fold = 0
        if self._has_dst and offset == self._offsets[0]:
            # the later of two readings of a repeated wall time gets fold=1
            fold = 1 if len(self.candidates(wall)) == 2 else 0
        return wall.replace(tzinfo=self, fold=fold)


__all__ = [
    "LAST",
    "NO_DST_DAYLIGHT",
    "NO_DST_STANDARD",
    "RuleTimeZone",
    "TransitionRule",
    "ZoneRules",
    "rule_on",
]
