"""A caching mailbox backend with the Calendar Connector's freshness rules.

Theory of operation
-------------------
Data is kept per mailbox per UTC day (`cas.cache.pieces`). For a window:

1. Every day's piece is younger than the **refresh interval** → answer from the cache; the
   backend is not asked (source `cache`).
2. Otherwise the days that are missing or older are read from the backend as one span. If the
   stale pieces carry the calendar's change tag (CalDAV ctag) and the backend says it has not
   changed, one small request revalidates them instead of a re-read (source `revalidated`). A
   changed tag drops every cached day of the mailbox.
3. The read is a **single flight**: one per mailbox and span in this process (a shared task) and
   across the site's nodes (a lock in the site's store); the others wait for its pieces.
4. If stale pieces (younger than the **maximum age**) exist and the backend has not answered
   within the **query window**, they are served, marked `stale-cache`, and the late answer is
   still written when it comes. If the backend fails, stale pieces are served the same way.
   With nothing cached, the caller waits for the backend within the request's deadline.
5. A backend saying the calendar does not exist is remembered for a short time (negative cache).

Every answer carries its `Freshness`: where it came from and how old the data is. The store
failing (`CacheUnavailable`) makes every step behave as a miss: straight to the backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date

from cas.cache.pieces import (
    Piece,
    assemble,
    days_of,
    decode_piece,
    encode_piece,
    flight_key,
    mailbox_prefix,
    negative_key,
    piece_key,
    span_of,
    split,
)
from cas.cache.store import CacheStore, CacheUnavailable
from cas.errors import BackendFailure, CalendarNotFound
from cas.model.freebusy import Freshness, MailboxData, Window
from cas.sources.base import MailboxBackend
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

    @property
    def piece_ttl(self) -> float:
        """How long the store keeps a piece: as long as it may still be served stale."""
        return self.max_stale_seconds + self.refresh_seconds


class CachedBackend:
    """Wraps `inner` (CalDAV, legacy) with the rules above; itself a `MailboxBackend`."""

    def __init__(
        self,
        inner: MailboxBackend,
        store: CacheStore,
        site: str,
        policy: CachePolicy = CachePolicy(),
        *,
        clock: Callable[[], float] = time.time,
        metrics: object | None = None,
        variant: str = "",
    ) -> None:
        self.inner = inner
        self.store = store
        self.site = site
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.variant = variant
        self._flights: dict[str, asyncio.Task[list[Piece]]] = {}
        # A short-lived first level in front of the shared store: a repeated lookup costs no
        # round trip. Entries live `policy.local_seconds` at most, so another node's write or an
        # invalidation elsewhere is seen within that time; this node's own are seen at once.
        self._local: OrderedDict[str, tuple[float, Piece]] = OrderedDict()

    # --- the read path ---------------------------------------------------------------------

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        days = days_of(window)
        now = self.clock()
        pieces = await self._read(mailbox, days)
        fresh = [p is not None and now - p.fetched_at < self.policy.refresh_seconds for p in pieces]
        if all(fresh):
            self._count("hit")
            return self._answer(pieces, window, "cache", now)  # type: ignore[arg-type]
        self._count("miss")
        if await self._known_missing(mailbox):
            raise CalendarNotFound(f"calendar of {mailbox.address} was not found (remembered)")

        stale_usable = all(
            p is not None and now - p.fetched_at <= self.policy.max_stale_seconds for p in pieces
        )
        revalidated = await self._revalidate(mailbox, days, pieces, fresh, now)
        if revalidated is not None:
            return self._answer(revalidated, window, "revalidated", self.clock())

        wanted = [d for d, ok in zip(days, fresh) if not ok]
        span = span_of(wanted)
        flight = self._flight(mailbox, span, want_ctag=any(p is not None for p in pieces))
        try:
            if stale_usable:
                new = await asyncio.wait_for(
                    asyncio.shield(flight), self.policy.query_window_seconds
                )
            else:
                new = await asyncio.shield(flight)
        except TimeoutError:
            self._count("stale")
            log.info(
                "serving stale data for %s: backend slower than the query window", mailbox.address
            )
            return self._answer(pieces, window, "stale-cache", now)  # type: ignore[arg-type]
        except CalendarNotFound:
            raise
        except BackendFailure as exc:
            if stale_usable:
                self._count("stale")
                log.warning("backend failed for %s, serving stale data: %s", mailbox.address, exc)
                return self._answer(pieces, window, "stale-cache", now)  # type: ignore[arg-type]
            raise
        by_day = {p.day: p for p in new}
        merged = [by_day.get(d) or p for d, p in zip(days, pieces)]
        return self._answer(merged, window, "backend", self.clock())  # type: ignore[arg-type]

    def _answer(
        self, pieces: Sequence[Piece], window: Window, source: str, now: float
    ) -> MailboxData:
        oldest = min(p.fetched_at for p in pieces)
        data = assemble(pieces, window)
        age = 0.0 if source in ("backend", "revalidated") else now - oldest
        kind = "legacy" if (data.merged_only and source == "backend") else source
        return replace(data, freshness=Freshness(kind, age, self.site))

    async def _read(self, mailbox: Mailbox, days: Sequence[date]) -> list[Piece | None]:
        keys = [piece_key(self.site, mailbox.address, d, self.variant) for d in days]
        pieces: list[Piece | None] = [self._local_get(k) for k in keys]
        missing = [i for i, p in enumerate(pieces) if p is None]
        if not missing:
            return pieces
        try:
            raw = await self.store.get_many([keys[i] for i in missing])
        except CacheUnavailable:
            return pieces
        for i, blob in zip(missing, raw):
            if blob is None:
                continue
            try:
                pieces[i] = decode_piece(blob)
            except ValueError:
                continue
            self._local_put(keys[i], pieces[i])  # type: ignore[arg-type]
        return pieces

    def _local_get(self, key: str) -> Piece | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._local[key]
            return None
        return entry[1]

    def _local_put(self, key: str, piece: Piece) -> None:
        if self.policy.local_seconds <= 0:
            return
        self._local[key] = (time.monotonic() + self.policy.local_seconds, piece)
        self._local.move_to_end(key)
        while len(self._local) > self.policy.local_entries:
            self._local.popitem(last=False)

    def forget_local(self, address: str) -> None:
        """Drop this node's first-level copies of one mailbox (after an invalidation)."""
        prefix = mailbox_prefix(self.site, address)
        for key in [k for k in self._local if k.startswith(prefix)]:
            del self._local[key]

    async def _write(self, mailbox: Mailbox, pieces: Sequence[Piece]) -> None:
        items = [
            (piece_key(self.site, mailbox.address, p.day, self.variant), encode_piece(p))
            for p in pieces
        ]
        for (key, _), piece in zip(items, pieces):
            self._local_put(key, piece)
        try:
            await self.store.set_many(items, self.policy.piece_ttl)
        except CacheUnavailable:
            pass

    # --- change detection ------------------------------------------------------------------

    async def _revalidate(
        self,
        mailbox: Mailbox,
        days: Sequence[date],
        pieces: Sequence[Piece | None],
        fresh: Sequence[bool],
        now: float,
    ) -> list[Piece] | None:
        """Stale pieces confirmed unchanged by the calendar's tag, or None (read again)."""
        ctag_of = getattr(self.inner, "ctag", None)
        stale = [p for p, ok in zip(pieces, fresh) if not ok]
        if ctag_of is None or any(p is None or p.ctag is None for p in stale):
            return None
        tags = {p.ctag for p in stale}  # type: ignore[union-attr]
        try:
            current = await asyncio.wait_for(ctag_of(mailbox), self.policy.query_window_seconds)
        except (BackendFailure, TimeoutError):
            return None
        if current is None or tags != {current}:
            if current is not None:
                self._count("changed")
                await self.invalidate(mailbox)
            return None
        renewed = [replace(p, fetched_at=now) if not ok else p for p, ok in zip(pieces, fresh)]  # type: ignore[arg-type]
        await self._write(mailbox, [p for p, ok in zip(renewed, fresh) if not ok])
        self._count("revalidated")
        return renewed

    # --- single flight ---------------------------------------------------------------------

    def _flight(
        self, mailbox: Mailbox, span: Window, *, want_ctag: bool
    ) -> asyncio.Task[list[Piece]]:
        key = flight_key(self.site, mailbox.address, span, self.variant)
        task = self._flights.get(key)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._fly(key, mailbox, span, want_ctag))
            self._flights[key] = task
            task.add_done_callback(
                lambda t, k=key: self._flights.pop(k, None) if self._flights.get(k) is t else None
            )
        else:
            self._count("single_flight_wait")
        return task

    async def _fly(self, key: str, mailbox: Mailbox, span: Window, want_ctag: bool) -> list[Piece]:
        done_key = key + ":done"
        try:
            token = await self.store.acquire(key, self.policy.fetch_timeout_seconds)
        except CacheUnavailable:
            token = ""  # no shared store: this node reads alone
        if token is None:
            # Another node of the site is reading this span: wait for its pieces.
            self._count("single_flight_wait")
            waited = self.clock()
            try:
                await self.store.wait_for(done_key, self.policy.fetch_timeout_seconds)
            except CacheUnavailable:
                pass
            pieces = await self._read(mailbox, days_of(span))
            if all(
                p is not None and p.fetched_at >= waited - self.policy.refresh_seconds
                for p in pieces
            ):
                return [p for p in pieces if p is not None]
        try:
            if token:
                try:
                    await self.store.delete([done_key])
                except CacheUnavailable:
                    pass
            ctag = None
            ctag_of = getattr(self.inner, "ctag", None)
            if want_ctag and ctag_of is not None:
                try:
                    ctag = await ctag_of(mailbox)
                except BackendFailure:
                    ctag = None
            try:
                async with asyncio.timeout(self.policy.fetch_timeout_seconds):
                    data = await self.inner.fetch(mailbox, span)
            except TimeoutError:
                raise BackendFailure(
                    f"backend did not answer for {mailbox.address} within "
                    f"{self.policy.fetch_timeout_seconds:g}s"
                ) from None
            except CalendarNotFound:
                await self._remember_missing(mailbox)
                raise
            pieces = split(data, days_of(span), self.clock())
            if ctag is not None:
                pieces = [replace(p, ctag=ctag) for p in pieces]
            await self._write(mailbox, pieces)
            if token:
                try:
                    await self.store.set(done_key, b"1", 10.0)
                except CacheUnavailable:
                    pass
            return pieces
        finally:
            if token:
                try:
                    await self.store.release(key, token)
                except CacheUnavailable:
                    pass

    # --- negative cache and invalidation -----------------------------------------------------

    async def _known_missing(self, mailbox: Mailbox) -> bool:
        try:
            return await self.store.get(negative_key(self.site, mailbox.address)) is not None
        except CacheUnavailable:
            return False

    async def _remember_missing(self, mailbox: Mailbox) -> None:
        try:
            await self.store.set(
                negative_key(self.site, mailbox.address), b"1", self.policy.negative_ttl_seconds
            )
        except CacheUnavailable:
            pass

    async def invalidate(self, mailbox: Mailbox | str) -> int:
        """Drop everything cached for a mailbox (all days, its negative entry)."""
        address = mailbox if isinstance(mailbox, str) else mailbox.address
        self.forget_local(address)
        try:
            return await self.store.delete_matching(mailbox_prefix(self.site, address))
        except CacheUnavailable:
            return 0

    async def aclose(self) -> None:
        for task in list(self._flights.values()):
            task.cancel()
        await self.inner.aclose()

    def _count(self, what: str) -> None:
        if self.metrics is not None:
            self.metrics.cache(what)  # type: ignore[attr-defined]
