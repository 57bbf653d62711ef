"""Caching as one wrapper around any source, with the Calendar Connector's freshness rules.

Theory of operation
-------------------
`CachedSource(inner, store, keys, rules)` is itself a source. What an entry is made of (day
pieces, or exact answers per requester) is the key policy's business (`cas.cache.keys`); the
rules below are the same for every source. For each mailbox of a batch:

1. Its entry is younger than the **refresh interval** → answered from the cache (the policy's
   hit label: `cache`, or `remote-cache` for other sites' answers); the source is not asked.
2. A calendar the source said does not exist is answered from a short negative entry.
3. A stale entry that carries the calendar's change tag is **revalidated** when the source
   can tell versions cheaply: unchanged → renewed without a re-read (`revalidated`); changed
   → everything cached for the mailbox is dropped and it is read again.
4. The rest are read in **one** call to the source, as a **single flight**: one per mailbox and
   read window in this process (a shared future), and, when `rules.shared_flight`, across the
   site's nodes (a lock in the site's store; the others wait for its entries).
5. If a stale entry (younger than the **maximum age**) exists and the source has not answered
   within the **query window**, the stale entry is served, marked `stale-cache`, and the late
   answer is still written when it comes; so is it when the source fails. Without one, the
   caller waits for the source within the request's deadline.

Every answer carries its `Freshness`: where it came from and how old the data is. The store
failing (`CacheUnavailable`) makes every step behave as a miss. Entries are kept by a `Shelf`
(`cas.cache.shelf`: the store, with this node's first level in front); reads fly through
`Flights` (`cas.cache.flights`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from cas.cache.flights import Flights
from cas.cache.keys import Entry, KeyPolicy
from cas.cache.shelf import Found, Shelf
from cas.cache.store import CacheStore, CacheUnavailable
from cas.errors import MailboxError
from cas.model.ask import Ask
from cas.model.availability import MailboxResult
from cas.model.freebusy import Freshness, MailboxData
from cas.observability import Metrics
from cas.sources.base import Answers, PathOwned, Source, Versioned, key_of
from sitemap.model import Mailbox

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    refresh_seconds: float = 900.0
    validate_seconds: float = 0.0  # confirm by version this often (0: only at refresh)
    query_window_seconds: float = 2.0
    max_stale_seconds: float = 86_400.0
    negative_ttl_seconds: float = 60.0
    fetch_timeout_seconds: float = 30.0
    local_seconds: float = 1.0  # in-process copies in front of the site's store; 0 disables
    local_entries: int = 20_000
    shared_flight: bool = True  # single flight across the site's nodes (a lock in the store)

    @property
    def ttl(self) -> float:
        """How long the store keeps an entry: as long as it may still be served stale."""
        return self.max_stale_seconds + self.refresh_seconds


class CachedSource:
    """`inner` with the rules above; itself a source."""

    def __init__(
        self,
        inner: Source,
        store: CacheStore,
        keys: KeyPolicy,
        rules: CachePolicy = CachePolicy(),
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        on_change: Callable[[Mailbox], None] | None = None,
    ) -> None:
        self.inner = inner
        self.on_change = on_change  # told of each change this cache finds by validation
        self.name = inner.name
        self.site = inner.site
        self.keys = keys
        self.rules = rules
        self.clock = clock
        self.metrics = metrics
        self.shelf = Shelf(
            store, keys, ttl_seconds=rules.ttl, local_seconds=rules.local_seconds,
            local_entries=rules.local_entries, clock=clock,
        )  # fmt: skip
        self.flights = Flights(
            inner, self.shelf, keys,
            fetch_timeout=rules.fetch_timeout_seconds, refresh_seconds=rules.refresh_seconds,
            negative_ttl=rules.negative_ttl_seconds, shared=rules.shared_flight,
            clock=clock, count=self._count,
        )  # fmt: skip

    reads_versions = True  # its answers carry the version their data was read at

    def unanswered(self, ask: Ask) -> MailboxError:
        return self.inner.unanswered(ask)

    def mailbox_for(self, path: str, mailboxes: Iterable[Mailbox]) -> Mailbox | None:
        if isinstance(self.inner, PathOwned):
            return self.inner.mailbox_for(path, mailboxes)
        return None

    def _interval(self, entry: Entry) -> float:
        """How long an entry is served without asking: the validation interval when the source
        can confirm it cheaply, else the refresh interval."""
        if self.rules.validate_seconds > 0 and entry.version and isinstance(self.inner, Versioned):
            return min(self.rules.validate_seconds, self.rules.refresh_seconds)
        return self.rules.refresh_seconds

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        now = self.clock()
        found = await self.shelf.entries(mailboxes, ask)
        answers: Answers = {}
        todo: list[Mailbox] = []
        for mailbox in mailboxes:
            entry, _ = found[key_of(mailbox)]
            if entry is not None and now - entry.confirmed_at < self._interval(entry):
                self._count(self.keys.hit_metric)
                answers[key_of(mailbox)] = self._label(entry, self.keys.hit_label, now)
            else:
                todo.append(mailbox)
        if not todo:
            return answers
        self._count("miss", len(todo))
        for key in await self.shelf.missing(todo):
            detail = f"calendar of {key} was not found (remembered)"
            error = MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.site, True)
            answers[key] = error
        todo = [m for m in todo if key_of(m) not in answers]
        confirmed = await self._revalidate([m for m in todo if found[key_of(m)][0]], ask, found)
        answers.update(confirmed)
        todo = [m for m in todo if key_of(m) not in confirmed]
        if todo:
            futures = self.flights.join(todo, ask, found)
            results = await asyncio.gather(
                *(self._wait(m, futures[key_of(m)], found[key_of(m)][0], now, ask) for m in todo)
            )
            answers.update({key_of(m): r for m, r in zip(todo, results)})
        return answers

    def _label(self, entry: Entry, source: str, now: float) -> MailboxData:
        validated = now - entry.validated_at if entry.validated_at is not None else None
        if source == "revalidated":
            validated = 0.0
        freshness = Freshness(source, now - entry.vouched_at, entry.site, validated, entry.version)
        return replace(entry.data, freshness=freshness)

    async def _wait(
        self,
        mailbox: Mailbox,
        future: asyncio.Future[MailboxResult],
        stale: Entry | None,
        now: float,
        ask: Ask,
    ) -> MailboxResult:
        """The read's answer; a usable stale entry after the query window; by the deadline."""
        usable = stale is not None and now - stale.since <= self.rules.max_stale_seconds
        patience = min(self.rules.query_window_seconds, ask.left()) if usable else ask.left()
        try:
            result = await asyncio.wait_for(asyncio.shield(future), patience)
        except TimeoutError:
            if stale is None or not usable:
                return self.inner.unanswered(ask)  # the read goes on and is kept when it comes
            self._count("stale")
            log.info(
                "serving stale data for %s: source slower than the query window", mailbox.address
            )
            return self._label(stale, "stale-cache", now)
        if isinstance(result, MailboxError) and usable and not result.missing:
            assert stale is not None
            self._count("stale")
            # A debug line: the source's breaker logs its outage once, not once per mailbox.
            log.debug(
                "source failed for %s, serving stale data: %s", mailbox.address, result.message
            )
            return self._label(stale, "stale-cache", now)
        return result

    # --- change tags -------------------------------------------------------------------------

    async def _revalidate(self, mailboxes: list[Mailbox], ask: Ask, found: Found) -> Answers:
        """Entries past their interval that the source can confirm cheaply (a calendar's change
        tag, another site's version): confirmed ones are answered, changed ones dropped (and
        reported through `on_change`). One node of the site confirms a mailbox per validation
        interval; the others serve what it confirmed."""
        tagged = [m for m in mailboxes if (e := found[key_of(m)][0]) is not None and e.version]
        if not tagged or not isinstance(self.inner, Versioned):
            return {}
        now = self.clock()
        answers: Answers = {}
        mine: list[Mailbox] = []
        claims = await self._claim_validation(tagged, [found[key_of(m)][0] for m in tagged])
        for mailbox, claimed in zip(tagged, claims):
            if claimed:
                mine.append(mailbox)
            else:  # confirmed (or being confirmed) by another node within the interval
                entry = found[key_of(mailbox)][0]
                assert entry is not None
                self._count(self.keys.hit_metric)
                answers[key_of(mailbox)] = self._label(entry, self.keys.hit_label, now)
        if not mine:
            return answers
        try:
            current = await asyncio.wait_for(
                self.inner.versions(mine, ask), min(self.rules.query_window_seconds, ask.left())
            )
        except TimeoutError:
            return answers
        now = self.clock()
        for mailbox in mine:
            entry = found[key_of(mailbox)][0]
            assert entry is not None
            tag = current.get(key_of(mailbox))
            if tag is None:
                continue
            if tag != entry.version:
                self._count("changed")
                await self._changed(mailbox)
                continue
            await self.shelf.renew(mailbox, ask, now)
            self._count("revalidated")
            answers[key_of(mailbox)] = self._label(
                replace(entry, validated_at=now), "revalidated", now
            )
        return answers

    async def _claim_validation(
        self, mailboxes: Sequence[Mailbox], entries: Sequence[Entry | None]
    ) -> list[bool]:
        """Whether this node confirms each mailbox now (a store key lives one interval)."""

        async def claim(mailbox: Mailbox, entry: Entry | None) -> bool:
            ttl = max(self._interval(entry), 0.05) if entry is not None else 0.05
            try:
                token = await self.shelf.store.acquire(self.keys.validation(mailbox), ttl)
            except CacheUnavailable:
                return True  # no shared store: each node confirms on its own
            return token is not None

        return list(await asyncio.gather(*(claim(m, e) for m, e in zip(mailboxes, entries))))

    async def _changed(self, mailbox: Mailbox) -> None:
        try:
            await self.shelf.forget(mailbox)
        except CacheUnavailable:
            pass
        if self.on_change is not None:
            self.on_change(mailbox)

    async def versions(self, mailboxes: Sequence[Mailbox], ask: Ask) -> dict[str, str | None]:
        """The current version of each mailbox, as other sites check their copies against it:
        the cached entry's when confirmed within the interval, else confirmed now (a change
        found drops the entry and is reported through `on_change`)."""
        found = await self.shelf.entries(mailboxes, ask)
        now = self.clock()
        known: dict[str, str | None] = {}
        unsure: list[Mailbox] = []
        for mailbox in mailboxes:
            entry, _ = found[key_of(mailbox)]
            if (
                entry is not None
                and entry.version
                and now - entry.confirmed_at < self._interval(entry)
            ):
                known[key_of(mailbox)] = entry.version
            else:
                unsure.append(mailbox)
        if unsure and isinstance(self.inner, Versioned):
            current = await self.inner.versions(unsure, ask)
            for mailbox in unsure:
                entry, _ = found[key_of(mailbox)]
                tag = current.get(key_of(mailbox))
                if entry is not None and entry.version and tag is not None:
                    if tag == entry.version:
                        await self.shelf.renew(mailbox, ask, now)
                        self._count("revalidated")
                    else:
                        self._count("changed")
                        await self._changed(mailbox)
                known[key_of(mailbox)] = tag
        return known

    async def forget(self, mailbox: Mailbox) -> int:
        """Drop everything this cache holds for a mailbox, and tell the site's other nodes to
        drop their first-level copies; how many store keys went."""
        return await self.shelf.forget(mailbox)

    def drop_locally(self, mailbox: Mailbox) -> None:
        self.shelf.drop_mailbox_locally(mailbox)

    async def aclose(self) -> None:
        self.flights.cancel()
        self.shelf.cancel()
        await self.inner.aclose()

    def _count(self, what: str, n: int = 1) -> None:
        if self.metrics is not None:
            for _ in range(n):
                self.metrics.cache(what)
