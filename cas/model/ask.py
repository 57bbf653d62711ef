"""The question every source gets: one frozen `Ask` for the whole request.

An `Ask` says what is wanted (the window, the slot length, the view and the time zone answers
are written in), for whom (the requester, whose rights decide what they may see), by when (a
deadline on the monotonic clock) and how the request got here (the hop count and request id).
The front door builds it once from the parsed request; it travels unchanged to every source,
the forwarder included, so nothing along the way re-derives the window or the deadline.

A forwarded call passes on a smaller budget (`next_hop_budget`): the time left less a margin
for the way back. The next node cuts its sources at its own deadline, waits its grace for them,
writes and sends the answer, and this node reads it, all before this node's deadline; so a
partial answer (a slow source over there) arrives in time instead of being given up on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import tzinfo

from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import Window
from cas.model.projection import Requester

# The margin kept back for the way back of a forwarded call: a share of the time left (a loaded
# node is slower in every step), at least the minimum. bench/resilience.py measures the trip.
HOP_MARGIN_MIN_SECONDS = 0.3
HOP_MARGIN_SHARE = 0.08


def hop_margin(left: float) -> float:
    """What to keep back from `left` seconds for the return trip of a forwarded call."""
    return max(HOP_MARGIN_MIN_SECONDS, HOP_MARGIN_SHARE * left)


@dataclass(frozen=True, slots=True)
class Ask:
    window: Window
    interval_minutes: int
    view: FreeBusyView
    tz: tzinfo
    requester: Requester
    deadline: float  # time.monotonic() by which every answer is due
    timeout_seconds: float  # the budget the deadline was set from (for messages)
    hop: int = 0
    request_id: str = "-"
    server_version: str | None = None

    @classmethod
    def of(
        cls,
        request: AvailabilityRequest,
        requester: Requester,
        *,
        timeout_seconds: float,
        hop: int = 0,
        request_id: str = "-",
    ) -> Ask:
        return cls(
            window=request.window,
            interval_minutes=request.interval_minutes,
            view=request.view,
            tz=request.tz,
            requester=requester,
            deadline=time.monotonic() + timeout_seconds,
            timeout_seconds=timeout_seconds,
            hop=hop,
            request_id=request_id,
            server_version=request.server_version,
        )

    def left(self) -> float:
        """Seconds until the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def next_hop_budget(self) -> float:
        """The budget to give the next node: the time left less the way back (may be <= 0)."""
        left = self.left()
        return left - hop_margin(left)

    def over(self, window: Window) -> Ask:
        """The same question over another window (a cache reading whole days)."""
        return replace(self, window=window)

    def request_for(self, mailboxes: Sequence[MailboxQuery]) -> AvailabilityRequest:
        """This question as a request about `mailboxes` (what a forwarded call carries)."""
        return AvailabilityRequest(
            mailboxes=tuple(mailboxes),
            window=self.window,
            interval_minutes=self.interval_minutes,
            view=self.view,
            tz=self.tz,
            server_version=self.server_version,
        )
