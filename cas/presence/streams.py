"""What the presence hub keeps: a push as it goes on the wire, a stream's subscription with its
bounded queue, and the watches of one requester's group (see `cas.presence.hub`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from cas.model.availability import MailboxResult
from cas.model.freebusy import Window
from cas.model.projection import Requester
from cas.presence.state import PresenceView
from sitemap.model import Mailbox

QUEUE_LIMIT = 1000  # pushes waiting for one stream; past it the stream is closed (it resumes)


@dataclass(frozen=True, slots=True)
class Pushed:
    """One server-sent event, ready to write."""

    id: str
    event: str
    data: str
    retry_ms: int | None = None  # tell the client how soon to reconnect

    @property
    def frame(self) -> str:
        retry = f"retry: {self.retry_ms}\n" if self.retry_ms is not None else ""
        return f"{retry}id: {self.id}\nevent: {self.event}\ndata: {self.data}\n\n"


@dataclass(eq=False)
class Subscription:
    """One stream: the addresses it follows (casefolded) and what waits to be written."""

    keys: tuple[str, ...]
    group: str
    queue: asyncio.Queue[Pushed | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    closed: bool = False

    def offer(self, pushed: Pushed | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(pushed)
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        """End the stream: it stops after what was queued (or at once, when full)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(None)


@dataclass(eq=False)
class Watch:
    mailbox: Mailbox
    created_seq: int
    refs: int = 0
    held: Window | None = None
    result: MailboxResult | None = None
    view: PresenceView | None = None
    ticket: int = -1  # the read the kept answer came from; older reads are ignored
    read_at: datetime | None = None
    distrust_before: datetime | None = None  # see `cas.presence.state.Trust`
    timer: asyncio.TimerHandle | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Group:
    requester: Requester
    watches: dict[str, Watch] = field(default_factory=dict)
    subs: set[Subscription] = field(default_factory=set)
