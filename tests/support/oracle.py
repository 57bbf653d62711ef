"""An independent expansion of generated calendars, for differential tests of the node.

Written apart from the product's code path: recurrences come from `dateutil.rrule`, time zones
from `dateutil.tz` (not zoneinfo, icalendar or recurring-ical-events), and the merged string from
a plain loop here. It follows RFC 5545 directly:

* the recurrence set is DTSTART, the RRULE's instances (COUNT counts from DTSTART; UNTIL is
  compared with each instance's instant) and RDATE, less EXDATE; an override replaces the
  instance its RECURRENCE-ID names; both match by instant (§3.8.4.4, §3.8.5.1);
* a local time in a DST gap is read with the offset before the gap; a repeated one is the first
  (§3.3.5); floating times and dates are read in the mailbox owner's zone;
* a duration given by DTEND is the exact time between DTSTART and DTEND, the same for every
  instance; DURATION in minutes is exact too; all-day events run from local midnight to local
  midnight (§3.8.5.3);
* busy types: X-MICROSOFT-CDO-BUSYSTATUS wins, then STATUS:TENTATIVE, then TRANSP:TRANSPARENT
  (free), else busy; STATUS:CANCELLED removes; digits 0 free, 1 tentative, 2 busy, 3 OOF, the
  highest of a slot wins. An override is a whole component: a cancelled master does not
  cancel an override that is not itself cancelled (busy is never hidden on a guess).

`GenEvent.ics()` writes the event (master and overrides) as one calendar object resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from dateutil import rrule, tz

FLOATING = "floating"
ALL_DAY = "allday"
UTC_ZONE = "UTC"

# (STATUS, TRANSP, X-MICROSOFT-CDO-BUSYSTATUS) -> digit, worked out from the rules above.
BUSY_KINDS: dict[tuple[str, str, str], int] = {
    ("", "", ""): 2,
    ("CONFIRMED", "OPAQUE", ""): 2,
    ("TENTATIVE", "", ""): 1,
    ("", "TRANSPARENT", ""): 0,
    ("", "", "OOF"): 3,
    ("TENTATIVE", "", "OOF"): 3,
    ("", "TRANSPARENT", "BUSY"): 2,
    ("", "", "FREE"): 0,
    ("", "", "TENTATIVE"): 1,
}


@dataclass(frozen=True)
class Rule:
    freq: str  # DAILY or WEEKLY
    interval: int
    count: int | None
    until_days: int | None  # UNTIL = DTSTART + this many days (local), when no COUNT
    second_hour: int | None  # DAILY only: BYHOUR=<start hour>,<second_hour>


@dataclass(frozen=True)
class Override:
    pick: int  # index into the base recurrence set
    shift_minutes: int | None  # None: cancelled
    rid_in_utc: bool
    busy: tuple[str, str, str] = ("", "", "")


@dataclass(frozen=True)
class GenEvent:
    uid: str
    zone: str  # an IANA name, UTC, FLOATING or ALL_DAY
    start: datetime  # local wall time (for ALL_DAY only the date counts)
    minutes: int  # length; whole days for ALL_DAY
    use_duration: bool
    busy: tuple[str, str, str]
    rule: Rule | None = None
    rdate_days: tuple[int, ...] = ()
    exdate_picks: tuple[tuple[int, bool], ...] = ()  # (index, written in UTC)
    overrides: tuple[Override, ...] = field(default_factory=tuple)
    summary: str = ""

    # --- the recurrence set, in local values -----------------------------------------------

    def base_starts(self, owner: str) -> list[datetime]:
        """DTSTART, the rule's instances and RDATEs, in local wall time, by instant, no repeats."""
        starts = [self._local(self.start)]
        if self.rule is not None:
            starts += self._rule_starts(owner)
        starts += [self._local(self.start + timedelta(days=d)) for d in self.rdate_days]
        unique: dict[datetime, datetime] = {}
        for value in starts:
            unique.setdefault(self.instant(value, owner), value)
        return [unique[k] for k in sorted(unique)]

    def _local(self, value: datetime) -> datetime:
        if self.zone == ALL_DAY:
            return datetime(value.year, value.month, value.day)
        return value

    def _rule_starts(self, owner: str) -> list[datetime]:
        rule = self.rule
        assert rule is not None
        freq = rrule.DAILY if rule.freq == "DAILY" else rrule.WEEKLY
        hours = None
        if rule.second_hour is not None:
            hours = sorted({self.start.hour, rule.second_hour})
        generated = list(
            rrule.rrule(
                freq,
                dtstart=self._local(self.start),
                interval=rule.interval,
                count=rule.count if rule.count is not None else 400,
                byhour=hours,
            )
        )
        if rule.count is None:
            assert rule.until_days is not None
            limit = self.instant(self.until_local(), owner)
            generated = [g for g in generated if self.instant(g, owner) <= limit]
        return generated

    def until_local(self) -> datetime:
        assert self.rule is not None and self.rule.until_days is not None
        return self._local(self.start) + timedelta(days=self.rule.until_days)

    # --- instants ------------------------------------------------------------------------------

    def zone_info(self, owner: str) -> tzinfo:
        if self.zone in (FLOATING, ALL_DAY):
            found = tz.gettz(owner)
        elif self.zone == UTC_ZONE:
            return tz.UTC
        else:
            found = tz.gettz(self.zone)
        assert found is not None
        return found

    def instant(self, local: datetime, owner: str) -> datetime:
        zone = self.zone_info(owner)
        aware = local.replace(tzinfo=zone)
        if not tz.datetime_exists(aware):
            aware = tz.resolve_imaginary(aware)  # the offset before the gap
        return aware.astimezone(UTC)

    def length(self, owner: str) -> timedelta:
        """The exact length of every instance (ALL_DAY: not used, days are local)."""
        if self.use_duration:
            return timedelta(minutes=self.minutes)
        first = self._local(self.start)
        return self.instant(first + timedelta(minutes=self.minutes), owner) - self.instant(
            first, owner
        )

    def span(self, local: datetime, owner: str) -> tuple[datetime, datetime]:
        start = self.instant(local, owner)
        if self.zone == ALL_DAY:
            return start, self.instant(local + timedelta(days=self.minutes), owner)
        return start, start + self.length(owner)

    # --- the answer ------------------------------------------------------------------------

    def intervals(self, owner: str) -> list[tuple[datetime, datetime, int, str]]:
        """(start, end, digit, what) of every instance that counts, in UTC."""
        master_cancelled = self.busy[0] == "CANCELLED"
        base = self.base_starts(owner)
        excluded = {base[i % len(base)] for i, _ in self.exdate_picks}
        replaced = {base[i]: o for i, o in self.overrides_by_index(len(base)).items()}
        found = []
        for local in base:
            if local in excluded:
                continue
            override = replaced.get(local)
            if override is None:
                if master_cancelled:
                    continue
                start, end = self.span(local, owner)
                found.append((start, end, digit_of(self.busy), f"{self.uid} @ {local}"))
            elif override.shift_minutes is not None:
                moved = local + self._shift(override)
                start, end = self._override_span(moved, owner)
                found.append((start, end, digit_of(override.busy), f"{self.uid} moved {moved}"))
        return found

    def overrides_by_index(self, count: int) -> dict[int, Override]:
        """The overrides by the base instance they replace; the first for an instance wins."""
        found: dict[int, Override] = {}
        for override in self.overrides:
            found.setdefault(override.pick % count, override)
        return found

    def _shift(self, override: Override) -> timedelta:
        assert override.shift_minutes is not None
        if self.zone == ALL_DAY:
            return timedelta(days=override.shift_minutes // (24 * 60) or 1)
        return timedelta(minutes=override.shift_minutes)

    def _override_span(self, moved: datetime, owner: str) -> tuple[datetime, datetime]:
        """An override writes its own DTSTART and DTEND (same wall length as the master)."""
        if self.zone == ALL_DAY:
            return self.span(moved, owner)
        end_local = moved + timedelta(minutes=self.minutes)
        return self.instant(moved, owner), self.instant(end_local, owner)


def digit_of(busy: tuple[str, str, str]) -> int:
    return BUSY_KINDS[busy]


def merged(
    intervals: list[tuple[datetime, datetime, int, str]], start: datetime, end: datetime, step: int
) -> str:
    """The merged string: one digit per `step` minutes, the highest overlapping digit wins."""
    width = timedelta(minutes=step)
    digits = []
    slot = start
    while slot < end:
        stop = slot + width
        digit = 0
        for first, last, value, _ in intervals:
            if first < stop and last > slot and last > first:
                digit = max(digit, value)
        digits.append(str(digit))
        slot = stop
    return "".join(digits)


# --- writing ---------------------------------------------------------------------------------


def _stamp(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%S")


def _value(event: GenEvent, name: str, local: datetime, owner: str, in_utc: bool = False) -> str:
    """`NAME...:value` for a local start, in the event's own form (or in UTC when asked)."""
    if event.zone == ALL_DAY:
        return f"{name};VALUE=DATE:{local.strftime('%Y%m%d')}"
    if event.zone == FLOATING:
        return f"{name}:{_stamp(local)}"
    if in_utc or event.zone == UTC_ZONE:
        return f"{name}:{_stamp(event.instant(local, owner))}Z"
    return f"{name};TZID={event.zone}:{_stamp(local)}"


def _busy_lines(busy: tuple[str, str, str]) -> list[str]:
    status, transp, cdo = busy
    lines = []
    if status:
        lines.append(f"STATUS:{status}")
    if transp:
        lines.append(f"TRANSP:{transp}")
    if cdo:
        lines.append(f"X-MICROSOFT-CDO-BUSYSTATUS:{cdo}")
    return lines


def _end_lines(event: GenEvent, local: datetime, owner: str) -> list[str]:
    if event.zone == ALL_DAY:
        if event.use_duration:
            return [f"DURATION:P{event.minutes}D"]
        return [_value(event, "DTEND", local + timedelta(days=event.minutes), owner)]
    if event.use_duration:
        return [f"DURATION:PT{event.minutes}M"]
    return [_value(event, "DTEND", local + timedelta(minutes=event.minutes), owner)]


def _rule_line(event: GenEvent, owner: str) -> str:
    rule = event.rule
    assert rule is not None
    parts = [f"FREQ={rule.freq}", f"INTERVAL={rule.interval}"]
    if rule.count is not None:
        parts.append(f"COUNT={rule.count}")
    else:
        until = event.until_local()
        if event.zone == ALL_DAY:
            parts.append(f"UNTIL={until.strftime('%Y%m%d')}")
        elif event.zone == FLOATING:
            parts.append(f"UNTIL={_stamp(until)}")
        else:
            parts.append(f"UNTIL={_stamp(event.instant(until, owner))}Z")
    if rule.second_hour is not None:
        parts.append(
            "BYHOUR=" + ",".join(str(h) for h in sorted({event.start.hour, rule.second_hour}))
        )
    return "RRULE:" + ";".join(parts)


def ics(event: GenEvent, owner: str) -> str:
    """The event as one calendar object resource: the master, then its overrides."""
    first = event._local(event.start)
    master = [
        f"UID:{event.uid}",
        "DTSTAMP:20270101T000000Z",
        f"SUMMARY:{event.summary or event.uid}",
    ]
    master.append(_value(event, "DTSTART", first, owner))
    master += _end_lines(event, first, owner)
    if event.rule is not None:
        master.append(_rule_line(event, owner))
    for days in event.rdate_days:
        master.append(_value(event, "RDATE", first + timedelta(days=days), owner))
    base = event.base_starts(owner)
    for index, in_utc in event.exdate_picks:
        master.append(_value(event, "EXDATE", base[index % len(base)], owner, in_utc))
    master += _busy_lines(event.busy)
    blocks = [master]
    for index, override in event.overrides_by_index(len(base)).items():
        original = base[index]
        lines = [f"UID:{event.uid}", "DTSTAMP:20270101T000000Z", f"SUMMARY:{event.uid} moved"]
        lines.append(_value(event, "RECURRENCE-ID", original, owner, override.rid_in_utc))
        if override.shift_minutes is None:
            lines += [_value(event, "DTSTART", original, owner), "STATUS:CANCELLED"]
            lines += _end_lines(event, original, owner)
        else:
            moved = original + event._shift(override)
            lines.append(_value(event, "DTSTART", moved, owner))
            if event.zone == ALL_DAY:
                lines.append(_value(event, "DTEND", moved + timedelta(days=event.minutes), owner))
            else:
                lines.append(
                    _value(event, "DTEND", moved + timedelta(minutes=event.minutes), owner)
                )
            lines += _busy_lines(override.busy)
        blocks.append(lines)
    body = "".join(
        "BEGIN:VEVENT\r\n" + "".join(line + "\r\n" for line in block) + "END:VEVENT\r\n"
        for block in blocks
    )
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cas differential//EN\r\n{body}END:VCALENDAR\r\n"


__all__ = ["ALL_DAY", "BUSY_KINDS", "FLOATING", "GenEvent", "Override", "Rule", "ics", "merged"]
