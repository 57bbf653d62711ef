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
failing (`CacheUnavailable`) makes every step behave as a miss. A node keeps decoded entries
for `rules.local_seconds` in front of the store, so a repeated lookup costs no round trip;
another node's write or an invalidation elsewhere is seen within that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cas.cache.keys import Entry, KeyPolicy
from cas.cache.store import CacheStore, CacheUnavailable
from cas.errors import MailboxError
from cas.model.ask import Ask
from cas.model.availability import MailboxResult
from cas.model.freebusy import Freshness, MailboxData
from cas.observability import Metrics
from cas.sources.base import Answers, Source, Versioned, key_of
from sitemap.model import Mailbox

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    refresh_seconds: float = 900.0
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
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.site = inner.site
        self.store = store
        self.keys = keys
        self.rules = rules
        self.clock = clock
        self.metrics = metrics
        self._flights: dict[str, asyncio.Future[MailboxResult]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._memo: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def unanswered(self, ask: Ask) -> MailboxError:
        return self.inner.unanswered(ask)

    # --- the read path ---------------------------------------------------------------------

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        now = self.clock()
        found = await self._entries(mailboxes, ask)
        answers: Answers = {}
        todo: list[Mailbox] = []
        for mailbox in mailboxes:
            entry, _ = found[key_of(mailbox)]
            if entry is not None and now - entry.since < self.rules.refresh_seconds:
                self._count(self.keys.hit_metric)
                answers[key_of(mailbox)] = self._label(entry, self.keys.hit_label, now)
            else:
                todo.append(mailbox)
        if not todo:
            return answers
        self._count("miss", len(todo))
        answers.update(await self._known_missing(todo))
        todo = [m for m in todo if key_of(m) not in answers]
        renewed = await self._revalidate([m for m in todo if found[key_of(m)][0]], ask, found)
        answers.update(renewed)
        todo = [m for m in todo if key_of(m) not in renewed]
        if todo:
            answers.update(await self._read(todo, ask, found, now))
        return answers

    def _label(self, entry: Entry, source: str, now: float) -> MailboxData:
        age = 0.0 if source == "revalidated" else now - entry.vouched_at
        return replace(entry.data, freshness=Freshness(source, age, entry.site))

    async def _entries(
        self, mailboxes: Sequence[Mailbox], ask: Ask
    ) -> dict[str, tuple[Entry | None, bool]]:
        """Each mailbox's entry (None if incomplete), and whether anything of it is cached."""
        keys = {key_of(m): self.keys.keys(m, ask) for m in mailboxes}
        values: dict[str, Any] = {}
        wanted: list[str] = []
        for mailbox_keys in keys.values():
            for key in mailbox_keys:
                value = self._memo_get(key)
                if value is None:
                    wanted.append(key)
                else:
                    values[key] = value
        if wanted:
            try:
                raw = await self.store.get_many(wanted)
            except CacheUnavailable:
                raw = [None] * len(wanted)
            for key, blob in zip(wanted, raw):
                if blob is None:
                    continue
                try:
                    values[key] = self.keys.decode(blob)
                except ValueError:
                    continue
                self._memo_put(key, values[key])
        found: dict[str, tuple[Entry | None, bool]] = {}
        for mailbox in mailboxes:
            got = [values.get(k) for k in keys[key_of(mailbox)]]
            entry = self.keys.entry(mailbox, ask, got)
            found[key_of(mailbox)] = (entry, any(v is not None for v in got))
        return found

    async def _read(
        self,
        mailboxes: Sequence[Mailbox],
        ask: Ask,
        found: dict[str, tuple[Entry | None, bool]],
        now: float,
    ) -> Answers:
        futures = self._flight(mailboxes, ask, found)
        results = await asyncio.gather(
            *(self._wait(m, futures[key_of(m)], found[key_of(m)][0], now, ask) for m in mailboxes)
        )
        return {key_of(m): r for m, r in zip(mailboxes, results)}

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
            log.warning(
                "source failed for %s, serving stale data: %s", mailbox.address, result.message
            )
            return self._label(stale, "stale-cache", now)
        return result

    # --- single flight ---------------------------------------------------------------------

    def _flight(
        self,
        mailboxes: Sequence[Mailbox],
        ask: Ask,
        found: dict[str, tuple[Entry | None, bool]],
    ) -> dict[str, asyncio.Future[MailboxResult]]:
        """A future per mailbox: joined where a read is in flight, else one new read for all."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[MailboxResult]] = {}
        mine: list[tuple[Mailbox, str, asyncio.Future[MailboxResult]]] = []
        for mailbox in mailboxes:
            flight = self.keys.flight(mailbox, ask)
            future = self._flights.get(flight)
            if future is not None and not future.done():
                self._count("single_flight_wait")
            else:
                future = loop.create_future()
                self._flights[flight] = future
                mine.append((mailbox, flight, future))
            futures[key_of(mailbox)] = future
        if mine:
            versioned = {key_of(m) for m, _, _ in mine if found[key_of(m)][1]}
            task = loop.create_task(self._fly(mine, ask, versioned))
            self._tasks.add(task)
            task.add_done_callback(self._landed)
        return futures

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a cache read failed unexpectedly", exc_info=task.exception())

    async def _fly(
        self,
        flights: list[tuple[Mailbox, str, asyncio.Future[MailboxResult]]],
        ask: Ask,
        want_version: set[str],
    ) -> None:
        """Read `flights` from the source, write the answers, settle every future (always)."""
        tokens: dict[str, str] = {}
        try:
            reading = await self._claim(flights, ask, tokens)
            if reading:
                await self._read_source(reading, ask, want_version)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("reading %s failed", self.name)
            error = MailboxError.of(
                "ErrorFreeBusyGenerationFailed", f"An internal error occurred ({type(exc).__name__}).",
                self.site,
            )  # fmt: skip
            for _, _, future in flights:
                if not future.done():
                    future.set_result(error)
        finally:
            for _, flight, future in flights:
                if not future.done():
                    future.set_result(self.inner.unanswered(ask))
                if self._flights.get(flight) is future:
                    del self._flights[flight]
            await self._release(tokens)

    async def _claim(
        self,
        flights: list[tuple[Mailbox, str, asyncio.Future[MailboxResult]]],
        ask: Ask,
        tokens: dict[str, str],
    ) -> list[tuple[Mailbox, asyncio.Future[MailboxResult]]]:
        """The flights this node reads itself; the others are settled from a peer node's read."""
        if not self.rules.shared_flight:
            return [(m, f) for m, _, f in flights]

        async def claim(flight: str) -> str | None:
            try:
                return await self.store.acquire(flight, self.rules.fetch_timeout_seconds)
            except CacheUnavailable:
                return ""  # no shared store: this node reads alone

        claims = await asyncio.gather(*(claim(flight) for _, flight, _ in flights))
        reading = []
        for (mailbox, flight, future), token in zip(flights, claims):
            if token is None:
                waited = await self._wait_for_peer(mailbox, flight, ask)
                if waited is not None:
                    future.set_result(waited)
                    continue
            elif token:
                tokens[flight] = token
            reading.append((mailbox, future))
        return reading

    async def _wait_for_peer(self, mailbox: Mailbox, flight: str, ask: Ask) -> MailboxResult | None:
        """Another node of the site is reading this mailbox: its fresh entry, or None."""
        self._count("single_flight_wait")
        waited = self.clock()
        try:
            await self.store.wait_for(flight + ":done", self.rules.fetch_timeout_seconds)
        except CacheUnavailable:
            pass
        self._memo_drop(self.keys.keys(mailbox, ask))
        entry, _ = (await self._entries([mailbox], ask))[key_of(mailbox)]
        if entry is not None and entry.vouched_at >= waited - self.rules.refresh_seconds:
            return self._label(entry, "cache", self.clock())
        return None

    async def _release(self, tokens: dict[str, str]) -> None:
        for flight, token in tokens.items():
            try:
                await self.store.set(flight + ":done", b"1", 10.0)
                await self.store.release(flight, token)
            except CacheUnavailable:
                pass

    async def _read_source(
        self,
        reading: list[tuple[Mailbox, asyncio.Future[MailboxResult]]],
        ask: Ask,
        want_version: set[str],
    ) -> None:
        mailboxes = [m for m, _ in reading]
        versions: dict[str, str | None] = {}
        asking = [m for m in mailboxes if key_of(m) in want_version]
        if asking and isinstance(self.inner, Versioned):
            versions = await self.inner.versions(asking, ask)
        # The read may outlive the request that started it (its late answer is still kept).
        budget = self.rules.fetch_timeout_seconds
        wider = replace(
            ask.over(self.keys.read_window(ask)),
            deadline=time.monotonic() + budget,
            timeout_seconds=budget,
        )
        try:
            async with asyncio.timeout(self.rules.fetch_timeout_seconds):
                results = await self.inner.fetch(mailboxes, wider)
        except TimeoutError:
            results = {}
        now = self.clock()
        writes: list[tuple[str, Any]] = []
        for mailbox, future in reading:
            result = results.get(key_of(mailbox))
            if result is None:
                result = self.inner.unanswered(ask)
            elif isinstance(result, MailboxData):
                items, entry = self.keys.shape(
                    mailbox, ask, result, now, versions.get(key_of(mailbox))
                )
                writes += items
                result = self._fresh(entry, result)
            elif result.missing:
                await self._remember_missing(mailbox)
            future.set_result(result)
        await self._write(writes, now)

    def _fresh(self, entry: Entry, read: MailboxData) -> MailboxData:
        """What was just read, with its freshness: as the source reported it, else read now."""
        if read.freshness is not None:
            return replace(entry.data, freshness=read.freshness)
        source = "legacy" if entry.data.merged_only else "backend"
        return replace(entry.data, freshness=Freshness(source, 0.0, self.site))

    async def _write(self, items: list[tuple[str, Any]], now: float) -> None:
        if not items:
            return
        for key, value in items:
            self._memo_put(key, value)
        try:
            await self.store.set_many(
                [(k, self.keys.encode(v, now)) for k, v in items], self.rules.ttl
            )
        except CacheUnavailable:
            pass

    # --- change tags -------------------------------------------------------------------------

    async def _revalidate(
        self, mailboxes: list[Mailbox], ask: Ask, found: dict[str, tuple[Entry | None, bool]]
    ) -> Answers:
        """Stale entries confirmed unchanged by the calendar's tag; changed ones are dropped."""
        tagged = [m for m in mailboxes if (e := found[key_of(m)][0]) is not None and e.version]
        if not tagged or not isinstance(self.inner, Versioned):
            return {}
        try:
            current = await asyncio.wait_for(
                self.inner.versions(tagged, ask), self.rules.query_window_seconds
            )
        except TimeoutError:
            return {}
        now = self.clock()
        renewed: Answers = {}
        for mailbox in tagged:
            entry = found[key_of(mailbox)][0]
            assert entry is not None
            tag = current.get(key_of(mailbox))
            if tag is None:
                continue
            if tag != entry.version:
                self._count("changed")
                await self.forget(mailbox)
                continue
            await self._renew(mailbox, ask, now)
            self._count("revalidated")
            renewed[key_of(mailbox)] = self._label(entry, "revalidated", now)
        return renewed

    async def _renew(self, mailbox: Mailbox, ask: Ask, now: float) -> None:
        keys = self.keys.keys(mailbox, ask)
        values = [self._memo_get(k) for k in keys]
        if any(v is None for v in values):
            return
        await self._write([(k, self.keys.renew(v, now)) for k, v in zip(keys, values)], now)

    # --- negative entries and invalidation -------------------------------------------------

    async def _known_missing(self, mailboxes: Sequence[Mailbox]) -> Answers:
        keys = {key_of(m): self.keys.negative(m) for m in mailboxes}
        wanted = [k for k in keys.values() if k is not None]
        if not wanted:
            return {}
        try:
            raw = dict(zip(wanted, await self.store.get_many(wanted)))
        except CacheUnavailable:
            return {}
        answers: Answers = {}
        for mailbox in mailboxes:
            negative = keys[key_of(mailbox)]
            if negative is not None and raw.get(negative) is not None:
                detail = f"calendar of {mailbox.address} was not found (remembered)"
                answers[key_of(mailbox)] = MailboxError.of(
                    "ErrorFreeBusyGenerationFailed", detail, self.site, missing=True
                )
        return answers

    async def _remember_missing(self, mailbox: Mailbox) -> None:
        negative = self.keys.negative(mailbox)
        if negative is None:
            return
        try:
            await self.store.set(negative, b"1", self.rules.negative_ttl_seconds)
        except CacheUnavailable:
            pass

    async def forget(self, mailbox: Mailbox) -> int:
        """Drop everything this cache holds for a mailbox; how many store keys went."""
        dropped = 0
        for prefix in self.keys.prefixes(mailbox):
            for key in [k for k in self._memo if k.startswith(prefix)]:
                del self._memo[key]
            dropped += await self.store.delete_matching(prefix)
        return dropped

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.inner.aclose()

    # --- the first level in front of the store ---------------------------------------------

    def _memo_get(self, key: str) -> Any:
        entry = self._memo.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._memo[key]
            return None
        return entry[1]

    def _memo_put(self, key: str, value: Any) -> None:
        if self.rules.local_seconds <= 0:
            return
        self._memo[key] = (time.monotonic() + self.rules.local_seconds, value)
        self._memo.move_to_end(key)
        while len(self._memo) > self.rules.local_entries:
            self._memo.popitem(last=False)

    def _memo_drop(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._memo.pop(key, None)

    def _count(self, what: str, n: int = 1) -> None:
        if self.metrics is not None:
            for _ in range(n):
                self.metrics.cache(what)
