"""An availability question and its checks, independent of the wire format that carried it.

Codecs turn EWS, JSON or legacy requests into `AvailabilityRequest`; `check_limits` applies the
contract's limits (docs/contract.md) and raises the matching request fault.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta, tzinfo

from cas.errors import (
    InvalidMergedInterval,
    MailboxDataArrayEmpty,
    MailboxDataArrayTooBig,
    MailboxError,
    TimeIntervalTooBig,
)
from cas.model.freebusy import (
    MAX_INTERVAL_MINUTES,
    MIN_INTERVAL_MINUTES,
    MailboxData,
    Window,
)


class FreeBusyView(enum.Enum):
    """EWS `FreeBusyViewType`; the value is the wire spelling."""

    NONE = "None"
    MERGED_ONLY = "MergedOnly"
    FREE_BUSY = "FreeBusy"
    FREE_BUSY_MERGED = "FreeBusyMerged"
    DETAILED = "Detailed"
    DETAILED_MERGED = "DetailedMerged"

    @property
    def has_merged(self) -> bool:
        return VIEW_CONTENTS[self][0]

    @property
    def has_events(self) -> bool:
        return VIEW_CONTENTS[self][1]

    @property
    def has_details(self) -> bool:
        return VIEW_CONTENTS[self][2]


# view -> (merged string, calendar events + working hours, event details)
VIEW_CONTENTS: dict[FreeBusyView, tuple[bool, bool, bool]] = {
    FreeBusyView.NONE: (False, False, False),
    FreeBusyView.MERGED_ONLY: (True, False, False),
    FreeBusyView.FREE_BUSY: (False, True, False),
    FreeBusyView.FREE_BUSY_MERGED: (True, True, False),
    FreeBusyView.DETAILED: (False, True, True),
    FreeBusyView.DETAILED_MERGED: (True, True, True),
}


# A requester who may see only times gets the view without details (as Exchange downgrades).
TIMES_ONLY_VIEW: dict[FreeBusyView, FreeBusyView] = {
    FreeBusyView.DETAILED: FreeBusyView.FREE_BUSY,
    FreeBusyView.DETAILED_MERGED: FreeBusyView.FREE_BUSY_MERGED,
}


def view_for(requested: FreeBusyView, data: MailboxData) -> FreeBusyView:
    """The view actually returned for a mailbox (docs/protocols.md §1).

    A source that only has merged data (legacy public folders) answers every view with
    MergedOnly. Data the requester may see only the times of (`times_only`) is answered
    without details: Detailed as FreeBusy, DetailedMerged as FreeBusyMerged.
    """
    if data.merged_only:
        return FreeBusyView.MERGED_ONLY
    if data.times_only:
        return TIMES_ONLY_VIEW.get(requested, requested)
    return requested


@dataclass(frozen=True, slots=True)
class MailboxQuery:
    """One attendee of the request, as the client named it."""

    address: str
    attendee_type: str = "Required"
    exclude_conflicts: bool = False
    routing_type: str = "SMTP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class AvailabilityRequest:
    """Free/busy for `mailboxes` over `window`, answered in the requester's time zone `tz`.

    `free_busy` is False when the client asked only for meeting suggestions (then `window` is
    the suggestions window and nobody's calendar needs reading); `suggestions` says whether it
    asked for them at all. Suggestions are not produced yet: they are answered with an error.
    """

    mailboxes: tuple[MailboxQuery, ...]
    window: Window
    interval_minutes: int
    view: FreeBusyView
    tz: tzinfo
    server_version: str | None = None
    free_busy: bool = True
    suggestions: bool = False


MailboxResult = MailboxData | MailboxError


@dataclass(frozen=True, slots=True)
class Limits:
    """The contract's request limits; all configurable."""

    max_mailboxes: int = 100
    max_window_days: int = 62


def check_limits(request: AvailabilityRequest, limits: Limits) -> None:
    """Raise the request fault for the first limit the request breaks."""
    count = len(request.mailboxes)
    if count == 0:
        raise MailboxDataArrayEmpty("MailboxDataArray has no mailboxes.")
    if count > limits.max_mailboxes:
        raise MailboxDataArrayTooBig(
            "There are too many target users in the MailboxDataArray; "
            f"allowed size = {limits.max_mailboxes}; actual size = {count}."
        )
    # Whole days, as Exchange counts them: 62 days and 23 hours pass, 63 days fail.
    days = request.window.duration // timedelta(days=1)
    if days > limits.max_window_days:
        which = (
            "FreeBusyViewOptions.TimeWindow"
            if request.free_busy
            else "SuggestionsViewOptions.DetailedSuggestionsWindow"
        )
        raise TimeIntervalTooBig(
            f"{which} is too long. "
            f"The allowed limit = {limits.max_window_days} days; the actual limit = {days} days."
        )
    if not request.free_busy:
        return  # no merged free/busy string is made, so its interval does not matter
    interval = request.interval_minutes
    if not MIN_INTERVAL_MINUTES <= interval <= MAX_INTERVAL_MINUTES:
        raise InvalidMergedInterval(
            f"MergedFreeBusyIntervalInMinutes must be between {MIN_INTERVAL_MINUTES} and "
            f"{MAX_INTERVAL_MINUTES}; got {interval}."
        )
    if timedelta(minutes=interval) > request.window.duration:
        raise InvalidMergedInterval(
            f"MergedFreeBusyIntervalInMinutes ({interval}) is longer than the time window "
            f"({int(request.window.duration.total_seconds() // 60)} minutes)."
        )
