"""The node's presence hub: the mailboxes its streams watch, and the pushes to them.

Theory of operation
-------------------
Streams are grouped by **requester** (`Requester.key`: the name and every group). A group
holds one *watch* per mailbox its streams name, counted by reference: a hundred streams of
one requester on one mailbox are one watch. Each watch keeps the mailbox's last answer (read
through `AvailabilityService`, so the owning site's permission levels, the caches and the
forwarding to other sites hold for presence exactly as for lookups) and the view it gave.
The state is computed from the answer as that requester may see it: subject and location
appear only where the owning site let them through, and a requester that may see only times
never learns whether an item has attendees (such an item shows as Busy).

A watch is looked at again when

* **a boundary passes**: one timer per watch, at the next instant its view may change (an
  item starts or ends, a coverage edge, the next slot), on the node's one event loop; the
  view is recomputed from the kept answer, no read;
* **the mailbox changed**: every change the site learns of is published on its Redis channel
  and every node follows it (`cas.changes.follow_forgotten`, which calls `changed`). Changes
  are coalesced for `COALESCE_SECONDS`, then each group reads the changed mailboxes it
  watches in one ask. Other sites' changes reach this site through the signed change
  announcements, which publish on the same channel;
* **the re-ask cadence** comes round (`reask_seconds`): each group reads all it watches, in
  batches of `batch` mailboxes, so a stopped backend is noticed (its answer turns stale or an
  error, and the state Unknown).

A view whose signature (state, until, next state, subject, location, error) changed is
pushed to the group's streams that name the mailbox, with an id `<epoch>-<seq>`: the node's
epoch (random per process) and a sequence number. The last `replay` pushes are kept, so a
stream that comes back with `Last-Event-ID` of this node and epoch gets what it missed; an id
of another node, an old one or a malformed one gets a fresh stream (the current view of each
address first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from cas.codecs.presence_json import view_json
from cas.errors import MailboxError, StreamsExhausted
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery, MailboxResult
from cas.model.freebusy import Window
from cas.model.projection import Requester
from cas.presence.state import (
    PresenceView,
    Shape,
    Trust,
    next_boundary,
    view_of,
    vouched_at,
)
from cas.presence.streams import Group, Pushed, Subscription, Watch
from cas.service import AvailabilityService
from sitemap.model import Mailbox

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.02


def utcnow() -> datetime:
    return datetime.now(UTC)


class PresenceHub:
    """See the module docstring. `service` gives the current configuration's service."""

    def __init__(
        self,
        service: Callable[[], AvailabilityService],
        shape: Shape,
        *,
        max_streams: int,
        reask_seconds: float,
        max_unconfirmed_seconds: float | None = None,
        replay: int = 10_000,
        batch: int = 100,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.service = service
        self.shape = shape
        self.max_streams = max_streams
        self.reask_seconds = reask_seconds
        self.max_unconfirmed = max_unconfirmed_seconds
        self.batch = max(1, batch)
        self.clock = clock
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.streams = 0
        self.draining = False
        self.reads = 0  # service asks made for watches (upstream calls per change: docs)
        self._groups: dict[str, Group] = {}
        self._buffer: deque[tuple[int, str, str, Pushed]] = deque(maxlen=max(1, replay))
        self._evicted = 0  # the highest sequence number no longer kept
        self._tickets = 0
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- reading -------------------------------------------------------------------------

    async def read(
        self, requester: Requester, mailboxes: Sequence[Mailbox]
    ) -> tuple[Window, list[MailboxResult]]:
        """One ask for `mailboxes` as `requester` over the presence window of now."""
        window = self.shape.window(self.clock())
        request = AvailabilityRequest(
            tuple(MailboxQuery(m.address) for m in mailboxes), window,
            self.shape.slot_minutes, FreeBusyView.DETAILED_MERGED, UTC,
        )  # fmt: skip
        service = self.service()
        ask = service.ask(request, requester, request_id="presence")
        return window, await service.availability(request, ask)

    async def views(self, requester: Requester, mailboxes: Sequence[Mailbox]) -> list[PresenceView]:
        """The current views of `mailboxes` for `requester` (the one-off answers)."""
        found: list[PresenceView] = []
        for start in range(0, len(mailboxes), self.batch):
            part = mailboxes[start : start + self.batch]
            held, results = await self.read(requester, part)
            now = self.clock()
            trust = Trust(self.max_unconfirmed)
            found += [
                view_of(m.address, r, held, now, self.shape, trust=trust)
                for m, r in zip(part, results, strict=True)
            ]
        return found

    async def _refresh(self, group: Group, watches: Sequence[Watch], *, push: bool) -> None:
        for start in range(0, len(watches), self.batch):
            part = list(watches[start : start + self.batch])
            self._tickets += 1
            ticket = self._tickets
            self.reads += 1
            try:
                held, results = await self.read(group.requester, [w.mailbox for w in part])
            except Exception:
                log.exception("presence read failed for %d mailbox(es)", len(part))
                continue
            read_at = self.clock()
            for watch, result in zip(part, results, strict=True):
                if ticket > watch.ticket:
                    watch.ticket, watch.held, watch.result = ticket, held, result
                    watch.read_at = read_at
                    self._doubt(watch, result, read_at)
                    self._look(group, watch, push=push)
                watch.ready.set()

    @staticmethod
    def _doubt(watch: Watch, result: MailboxResult, read_at: datetime) -> None:
        """After a stale answer or an error, answers vouched for no later say nothing new."""
        if isinstance(result, MailboxError):
            if result.code != "ErrorNoFreeBusyAccess":
                watch.distrust_before = read_at
        elif result.freshness is not None and result.freshness.stale:
            watch.distrust_before = vouched_at(result, read_at)

    def _look(self, group: Group, watch: Watch, *, push: bool = True) -> None:
        """Recompute a watch's view now, push it if it changed, set its timer."""
        if watch.result is None or watch.held is None:
            return
        now = self.clock()
        trust = Trust(self.max_unconfirmed, watch.distrust_before)
        view = view_of(
            watch.mailbox.address, watch.result, watch.held, now, self.shape,
            read_at=watch.read_at, trust=trust,
        )  # fmt: skip
        before, watch.view = watch.view, view
        if push and before is not None and before.signature != view.signature:
            self._publish(group, watch, view)
        if watch.timer is not None:
            watch.timer.cancel()
        at = next_boundary(watch.result, watch.held, now, self.shape)
        vouched = vouched_at(watch.result, watch.read_at or now)
        if vouched is not None and self.max_unconfirmed is not None:
            doubted = vouched + timedelta(seconds=self.max_unconfirmed)
            if doubted > now:
                at = min(at, doubted)
        delay = max((at - now).total_seconds(), 0.0) + 0.001
        loop = asyncio.get_running_loop()
        watch.timer = loop.call_later(delay, self._look, group, watch)

    def _publish(self, group: Group, watch: Watch, view: PresenceView) -> None:
        self.seq += 1
        key = watch.mailbox.address.casefold()
        pushed = Pushed(f"{self.epoch}-{self.seq}", "presence", json.dumps(view_json(view)))
        if len(self._buffer) == self._buffer.maxlen:
            self._evicted = self._buffer[0][0]
        self._buffer.append((self.seq, group.requester.key, key, pushed))
        for sub in group.subs:
            if key in sub.keys:
                sub.offer(pushed)

    # -- streams -------------------------------------------------------------------------

    async def subscribe(
        self, requester: Requester, mailboxes: Sequence[Mailbox], last_event_id: str | None
    ) -> Subscription:
        """A new stream on `mailboxes`, its first events queued (see the module docstring);
        `StreamsExhausted` past the bound or while draining."""
        if self.draining:
            raise StreamsExhausted("This node is shutting down; connect to another one.", 1)
        if self.streams >= self.max_streams:
            raise StreamsExhausted(
                f"This node holds its most presence streams ({self.max_streams}).", 5
            )
        group = self._groups.setdefault(requester.key, Group(requester))
        unique = {m.address.casefold(): m for m in mailboxes}
        keys = tuple(unique)
        sub = Subscription(keys, requester.key)
        fresh: list[Watch] = []
        for key, mailbox in unique.items():
            watch = group.watches.get(key)
            if watch is None:
                watch = group.watches[key] = Watch(mailbox, self.seq)
                fresh.append(watch)
            watch.refs += 1
        group.subs.add(sub)
        self.streams += 1
        try:
            if fresh:
                await self._refresh(group, fresh, push=False)
            watches = [group.watches[k] for k in keys]
            for watch in watches:
                await watch.ready.wait()
        except BaseException:
            self.unsubscribe(sub)
            raise
        for pushed in self._first(group, sub, watches, last_event_id):
            sub.offer(pushed)
        return sub

    def _resume_from(self, last_event_id: str | None) -> int | None:
        epoch, _, seq = (last_event_id or "").strip().rpartition("-")
        if epoch != self.epoch or not seq.isdigit():
            return None
        number = int(seq)
        return number if self._evicted <= number <= self.seq else None

    def _first(
        self, group: Group, sub: Subscription, watches: list[Watch], last_event_id: str | None
    ) -> list[Pushed]:
        resume = self._resume_from(last_event_id)
        first: list[Pushed] = []
        replayed: set[str] = set()
        if resume is not None:
            kept = {w.mailbox.address.casefold() for w in watches if w.created_seq <= resume}
            for seq, who, key, pushed in self._buffer:
                if seq > resume and who == group.requester.key and key in kept:
                    first.append(pushed)
            replayed = kept
        now_id = f"{self.epoch}-{self.seq}"
        for watch in watches:
            if watch.mailbox.address.casefold() not in replayed and watch.view is not None:
                data = json.dumps(view_json(watch.view))
                first.append(Pushed(now_id, "presence", data))
        return first

    def unsubscribe(self, sub: Subscription) -> None:
        """The stream ended: let go of what only it watched."""
        group = self._groups.get(sub.group)
        if group is None or sub not in group.subs:
            return
        group.subs.discard(sub)
        self.streams -= 1
        for key in sub.keys:
            watch = group.watches.get(key)
            if watch is None:
                continue
            watch.refs -= 1
            if watch.refs <= 0:
                if watch.timer is not None:
                    watch.timer.cancel()
                del group.watches[key]
        if not group.subs:
            del self._groups[sub.group]

    # -- changes, cadence, draining --------------------------------------------------------

    def changed(self, address: str) -> None:
        """A mailbox changed (its cached data was dropped): read it again soon."""
        key = address.casefold()
        if any(key in group.watches for group in self._groups.values()):
            self._pending.add(key)
            self._wake.set()

    async def _follow_changes(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(COALESCE_SECONDS)
            keys, self._pending = self._pending, set()
            await asyncio.gather(
                *(
                    self._refresh(
                        group, [w for k, w in group.watches.items() if k in keys], push=True
                    )
                    for group in list(self._groups.values())
                    if keys & group.watches.keys()
                )
            )

    async def _reask(self) -> None:
        while True:
            await asyncio.sleep(self.reask_seconds)
            await asyncio.gather(
                *(
                    self._refresh(group, list(group.watches.values()), push=True)
                    for group in list(self._groups.values())
                )
            )

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow_changes()), loop.create_task(self._reask())]

    def drain(self, retry_seconds: float = 1.0) -> None:
        """Close every stream with a retry hint and refuse new ones (the node is leaving).
        Safe to call from a signal handler: the work is done on the hub's event loop."""
        self.draining = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_all, retry_seconds)
        else:
            self._close_all(retry_seconds)

    def _close_all(self, retry_seconds: float) -> None:
        millis = max(1, round(retry_seconds * 1000))
        data = json.dumps({"reason": "draining", "retryMilliseconds": millis})
        hint = Pushed(f"{self.epoch}-{self.seq}", "draining", data, millis)
        for group in list(self._groups.values()):
            for sub in list(group.subs):
                sub.offer(hint)
                sub.close()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for group in self._groups.values():
            for watch in group.watches.values():
                if watch.timer is not None:
                    watch.timer.cancel()
