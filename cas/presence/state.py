"""Presence from calendar data: the state a mailbox shows now, and when it changes (pure).

`view_of(address, result, held, now, shape)` turns one mailbox's answer from the availability
service (`MailboxData` or `MailboxError`, over the window `held` it was asked for) into a
`PresenceView`: the state now, since when and until when it holds, the state that follows,
the current item's subject and location where the data carries them (the service already
projected the data to the requester's level), the calendar-state of the next `shape.slots`
slots of `shape.slot_minutes` as one digit string, and the answer's freshness.

The state of an instant comes from the wire-rule table (`cas.model.busy.BUSY_RULES`): each
item covering the instant gives its busy type's `presence` when it has attendees and
`presence_alone` when it has none (or when the requester may not see whether it has any),
and the strongest of them wins (Unknown > Away > In a meeting > Busy > Available). Old
servers' data carries no attendees: its items (one per run of digits) show as items without
attendees, and data that is only a digit string reads the digit of the instant's slot. Unknown is never free, and stale is never current: a time the
data does not cover, an error, and a stale answer all show as Unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cas.errors import MailboxError
from cas.model.busy import BUSY_TYPE_OF_DIGIT, Presence
from cas.model.freebusy import Event, Freshness, MailboxData, Window, merged_free_busy

RANK: dict[Presence, int] = {
    Presence.AVAILABLE: 0,
    Presence.BUSY: 1,
    Presence.IN_A_MEETING: 2,
    Presence.AWAY: 3,
    Presence.UNKNOWN: 4,
}
TINY = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Shape:
    """How many slots of how many minutes the calendar-state covers, and how far back the
    data is read to say since when the current state holds."""

    slots: int = 128
    slot_minutes: int = 15
    lookback_minutes: int = 1440

    @property
    def step(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)

    def slot_start(self, now: datetime) -> datetime:
        """The start of the slot `now` is in (slots are counted from midnight UTC)."""
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + ((now - midnight) // self.step) * self.step

    def window(self, now: datetime) -> Window:
        """The window to ask for: the look-back (whole slots) and the slots ahead."""
        start = self.slot_start(now)
        back = -(-self.lookback_minutes // self.slot_minutes) * self.step
        return Window(start - back, start + self.slots * self.step)


@dataclass(frozen=True, slots=True)
class PresenceView:
    """What one requester is shown of one mailbox at `at` (see the module docstring)."""

    address: str
    at: datetime
    state: Presence
    since: datetime | None  # None: before the data read (or unknown)
    until: datetime | None  # None: not within the slots ahead
    next_state: Presence | None
    subject: str | None
    location: str | None
    slot_start: datetime
    slot_minutes: int
    slots: str
    freshness: Freshness | None = None
    error: MailboxError | None = None
    old_server: bool = False  # the data is an old server's merged free/busy

    @property
    def signature(self) -> tuple[object, ...]:
        """What a subscriber is told about: a change of any of these is pushed."""
        code = self.error.code if self.error is not None else None
        return (self.state, self.until, self.next_state, self.subject, self.location, code)


def _digits_only(data: MailboxData) -> bool:
    """Data that is only a merged digit string (no items to read the state from)."""
    return data.merged is not None and not data.events


def _covered(data: MailboxData, held: Window, t: datetime) -> bool:
    if not held.start <= t < held.end:
        return False
    if data.coverage is None:
        return True
    return any(start <= t < end for start, end in data.coverage)


def _merged_digit(data: MailboxData, held: Window, t: datetime, step: timedelta) -> str:
    index = (t - held.start) // step
    merged = data.merged or ""
    return merged[index] if 0 <= index < len(merged) else "4"


def state_at(
    data: MailboxData, held: Window, t: datetime, step: timedelta
) -> tuple[Presence, Event | None]:
    """The state at instant `t` and the item that decides it (None: no item, or merged data)."""
    if not _covered(data, held, t):
        return Presence.UNKNOWN, None
    if _digits_only(data):
        busy_type = BUSY_TYPE_OF_DIGIT.get(_merged_digit(data, held, t, step))
        return (busy_type.rule.presence_alone if busy_type else Presence.UNKNOWN), None
    state, decider = Presence.AVAILABLE, None
    for event in data.events:
        if event.start <= t < event.end:
            rule = event.busy_type.rule
            meeting = event.details is not None and event.details.is_meeting
            candidate = rule.presence if meeting else rule.presence_alone
            if RANK[candidate] > RANK[state]:
                state, decider = candidate, event
    return state, decider


def boundaries(data: MailboxData, held: Window, step: timedelta) -> list[datetime]:
    """Every instant at which the state may change, within the held window, in order."""
    found = {held.start, held.end}
    if _digits_only(data):
        t = held.start
        while t < held.end:
            found.add(t)
            t += step
    for event in data.events:
        found.update((event.start, event.end))
    for start, end in data.coverage or ():
        found.update((start, end))
    return sorted(t for t in found if held.start <= t <= held.end)


def _shown(decider: Event | None) -> tuple[str | None, str | None]:
    if decider is None or decider.details is None:
        return None, None
    return decider.details.subject, decider.details.location


def _slots(data: MailboxData, held: Window, start: datetime, shape: Shape) -> str:
    ahead = Window(start, start + shape.slots * shape.step)
    if _digits_only(data):
        first = (start - held.start) // shape.step
        merged = (data.merged or "")[max(first, 0) :]
        return (merged + "4" * shape.slots)[: shape.slots] if first >= 0 else "4" * shape.slots
    coverage = data.coverage if data.coverage is not None else ((held.start, held.end),)
    return merged_free_busy(data.events, ahead, shape.slot_minutes, coverage)


def unknown_view(
    address: str, now: datetime, shape: Shape, *, freshness: Freshness | None = None,
    error: MailboxError | None = None,
) -> PresenceView:  # fmt: skip
    """A mailbox nothing current is known of: Unknown, every slot `4`."""
    return PresenceView(
        address, now, Presence.UNKNOWN, None, None, None, None, None,
        shape.slot_start(now), shape.slot_minutes, "4" * shape.slots, freshness, error,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Trust:
    """When data counts as current: it was last vouched for (read or confirmed by its source)
    at most `max_unconfirmed` seconds ago, and after `distrust_before` (the vouching time of
    the last stale answer, or the time of the last error: an answer vouched for no later than
    that says nothing new, however it is labelled)."""

    max_unconfirmed: float | None = None
    distrust_before: datetime | None = None


def vouched_at(result: MailboxData | MailboxError, read_at: datetime) -> datetime | None:
    """When the source last vouched for `result` (read at `read_at`); None: not said."""
    if isinstance(result, MailboxError) or result.freshness is None:
        return None
    return read_at - timedelta(seconds=result.freshness.current_within)


def doubtful(vouched: datetime | None, now: datetime, trust: Trust) -> bool:
    if vouched is None:
        return False
    limit = trust.max_unconfirmed
    if limit is not None and (now - vouched).total_seconds() > limit:
        return True
    return trust.distrust_before is not None and vouched <= trust.distrust_before


def view_of(
    address: str,
    result: MailboxData | MailboxError,
    held: Window,
    now: datetime,
    shape: Shape,
    *,
    read_at: datetime | None = None,
    trust: Trust = Trust(),
) -> PresenceView:
    """The view of `result` (asked over `held` at `read_at`, default `now`) at `now` (see the
    module docstring); Unknown when the data is stale or not current by `trust`."""
    if isinstance(result, MailboxError):
        return unknown_view(address, now, shape, error=result)
    if result.freshness is not None and result.freshness.stale:
        return unknown_view(address, now, shape, freshness=result.freshness)
    if doubtful(vouched_at(result, read_at or now), now, trust):
        return unknown_view(address, now, shape, freshness=result.freshness)

    step = shape.step
    state, decider = state_at(result, held, now, step)
    subject, location = _shown(decider)
    marks = boundaries(result, held, step)
    since: datetime | None = None
    for t in reversed([t for t in marks if held.start < t <= now]):
        if state_at(result, held, t - TINY, step)[0] is not state:
            since = t
            break
    until: datetime | None = None
    next_state: Presence | None = None
    horizon = shape.slot_start(now) + shape.slots * step
    for t in (t for t in marks if now < t <= horizon and t < held.end):
        later = state_at(result, held, t, step)[0]
        if later is not state:
            until, next_state = t, later
            break
    start = shape.slot_start(now)
    return PresenceView(
        address, now, state, since, until, next_state, subject, location,
        start, shape.slot_minutes, _slots(result, held, start, shape), result.freshness,
        old_server=result.merged_only,
    )  # fmt: skip


def next_boundary(
    result: MailboxData | MailboxError, held: Window, now: datetime, shape: Shape
) -> datetime:
    """The first instant after `now` at which the view may change: an item's start or end, a
    coverage edge, a slot edge (the slot digits move on), or the end of the held window."""
    next_slot = shape.slot_start(now) + shape.step
    if isinstance(result, MailboxError):
        return min(next_slot, held.end)
    found = next((t for t in boundaries(result, held, shape.step) if t > now), held.end)
    return min(found, next_slot)


__all__ = [
    "RANK",
    "PresenceView",
    "Shape",
    "Trust",
    "boundaries",
    "next_boundary",
    "state_at",
    "unknown_view",
    "view_of",
    "vouched_at",
]
