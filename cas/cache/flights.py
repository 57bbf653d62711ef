"""Single flight: one read of a mailbox at a time, in this process and across the site's nodes.

`Flights.join(mailboxes, ask, found)` gives one future per mailbox: the future of a read
already in flight for that mailbox and window, or a new one, all new ones read together in one
call to the source. With `shared` (the site's own sources), a read first takes a lock in the
site's store; a mailbox another node is reading is answered from that node's entry once it
lands (the `:done` key), or read here if that entry is not fresh.

A read outlives the request that started it: the source gets the cache's own fetch timeout,
and a late answer is still written. Every future is settled with a value (data or error),
whatever happens, so no waiter hangs and no task exception goes unretrieved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from cas.cache.keys import Entry, KeyPolicy
from cas.cache.shelf import DROP_SKEW_SECONDS, Found, Shelf
from cas.cache.store import CacheUnavailable
from cas.errors import MailboxError
from cas.model.ask import Ask
from cas.model.availability import MailboxResult
from cas.model.freebusy import Freshness, MailboxData
from cas.sources.base import Source, Versioned, key_of
from sitemap.model import Mailbox

log = logging.getLogger(__name__)

Flight = tuple[Mailbox, str, "asyncio.Future[MailboxResult]"]


class Flights:
    def __init__(
        self,
        inner: Source,
        shelf: Shelf,
        keys: KeyPolicy,
        *,
        fetch_timeout: float,
        refresh_seconds: float,
        negative_ttl: float,
        shared: bool,
        clock: Callable[[], float],
        count: Callable[[str], None],
    ) -> None:
        self.inner = inner
        self.shelf = shelf
        self.keys = keys
        self.fetch_timeout = fetch_timeout
        self.refresh_seconds = refresh_seconds
        self.negative_ttl = negative_ttl
        self.shared = shared
        self.clock = clock
        self.count = count
        self._flights: dict[str, asyncio.Future[MailboxResult]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def join(
        self, mailboxes: Sequence[Mailbox], ask: Ask, found: Found
    ) -> dict[str, asyncio.Future[MailboxResult]]:
        """A future per mailbox: joined where a read is in flight, else one new read for all."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[MailboxResult]] = {}
        mine: list[Flight] = []
        for mailbox in mailboxes:
            flight = self.keys.flight(mailbox, ask)
            future = self._flights.get(flight)
            if future is not None and not future.done():
                self.count("single_flight_wait")
            else:
                future = loop.create_future()
                self._flights[flight] = future
                mine.append((mailbox, flight, future))
            futures[key_of(mailbox)] = future
        if mine:
            # A mailbox read before gets its calendar's tag read too (for later revalidation).
            tagged = {key_of(m) for m, _, _ in mine if found[key_of(m)][1]}
            task = loop.create_task(self._fly(mine, ask, tagged))
            self._tasks.add(task)
            task.add_done_callback(self._landed)
        return futures

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a cache read failed unexpectedly", exc_info=task.exception())

    async def _fly(self, flights: list[Flight], ask: Ask, tagged: set[str]) -> None:
        """Read `flights` from the source, write the answers, settle every future (always)."""
        tokens: dict[str, str] = {}
        try:
            reading = await self._claim(flights, ask, tokens)
            if reading:
                await self._read(reading, ask, tagged)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("reading %s failed", self.inner.name)
            detail = f"An internal error occurred ({type(exc).__name__})."
            error = MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.inner.site)
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
        self, flights: list[Flight], ask: Ask, tokens: dict[str, str]
    ) -> list[tuple[Mailbox, asyncio.Future[MailboxResult]]]:
        """The flights this node reads itself; the others are settled from a peer node's read."""
        if not self.shared:
            return [(m, f) for m, _, f in flights]

        async def claim(flight: str) -> str | None:
            try:
                return await self.shelf.store.acquire(flight, self.fetch_timeout)
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
        self.count("single_flight_wait")
        waited = self.clock()
        try:
            await self.shelf.store.wait_for(flight + ":done", self.fetch_timeout)
        except CacheUnavailable:
            pass
        self.shelf.drop_local(mailbox, ask)
        entry, _ = (await self.shelf.entries([mailbox], ask))[key_of(mailbox)]
        if entry is not None and entry.vouched_at >= waited - self.refresh_seconds:
            age = self.clock() - entry.vouched_at
            return replace(entry.data, freshness=Freshness("cache", age, entry.site))
        return None

    async def _release(self, tokens: dict[str, str]) -> None:
        for flight, token in tokens.items():
            try:
                await self.shelf.store.set(flight + ":done", b"1", 10.0)
                await self.shelf.store.release(flight, token)
            except CacheUnavailable:
                pass

    async def _read(
        self,
        reading: list[tuple[Mailbox, asyncio.Future[MailboxResult]]],
        ask: Ask,
        tagged: set[str],
    ) -> None:
        mailboxes = [m for m, _ in reading]
        versions: dict[str, str | None] = {}
        asking = [m for m in mailboxes if key_of(m) in tagged]
        if asking and isinstance(self.inner, Versioned) and not self.inner.reads_versions:
            versions = await self.inner.versions(asking, ask)
        # The read may outlive the request that started it (its late answer is still kept).
        wider = replace(
            ask.over(self.keys.read_window(ask)),
            deadline=time.monotonic() + self.fetch_timeout,
            timeout_seconds=self.fetch_timeout,
        )
        began = self.clock()
        try:
            async with asyncio.timeout(self.fetch_timeout):
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
                read_at = result.freshness.version if result.freshness is not None else None
                tag = versions.get(key_of(mailbox)) or read_at
                items, entry = self.keys.shape(mailbox, ask, result, now, tag)
                if not self.shelf.changed_after(mailbox.address, _read_at(began, entry)):
                    writes += items  # else it may predate a change: answered, not kept
                result = self._fresh(entry, result)
            elif result.missing:
                await self.shelf.remember_missing(mailbox, self.negative_ttl)
            future.set_result(result)
        await self.shelf.write(writes, now)

    def _fresh(self, entry: Entry, read: MailboxData) -> MailboxData:
        """What was just read, with its freshness: as another site reported it, else read now
        (from an old server: `legacy`), with the version it was read at."""
        reported = read.freshness
        if reported is not None and reported.source != "backend":
            return replace(entry.data, freshness=reported)
        source = "legacy" if entry.data.merged_only else "backend"
        version = reported.version if reported is not None else None
        site = reported.site if reported is not None and reported.site else self.inner.site
        return replace(entry.data, freshness=Freshness(source, 0.0, site, version=version))

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _read_at(began: float, entry: Entry) -> float:
    """When the data was read, for comparing with drops: when this read began, or, for an
    answer another site vouched for before that (its own cached copy), that time on the other
    site's clock, taken as early as the clock skew allows."""
    if entry.vouched_at >= began:
        return began
    return entry.vouched_at - DROP_SKEW_SECONDS
