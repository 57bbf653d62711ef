"""What a node does when a mailbox changed: drop the site's cached data, tell the other sites.

Theory of operation
-------------------
A site learns that a mailbox changed in one of three ways: the backend's storage hook pushes
it (`POST /api/v1/changes`), the cache finds a new version while confirming an entry
(`CachedSource.on_change`), or an operator invalidates it (`POST /api/v1/cache/invalidate`).
Either way this site's cached data of the mailbox is dropped, and every other site is told,
over the signed node-to-node channel (`POST /api/v1/internal/changes`), to drop its copies of
the mailbox's answers, so no site keeps serving what the owner no longer has.

Announcements are **coalesced** (changes within `delay` seconds go in one call per site),
**deduplicated** (a mailbox is pending once), **bounded** (at most `max_pending` mailboxes
wait for a site; past that, further ones are dropped with a warning), and kept **per site**:
a site that is slow or unreachable delays only its own announcements, and changes announced
while a call is under way go in the next call. A site that misses an
announcement (down or cut off) converges anyway: its copies expire after
`remote_cache_seconds` and are confirmed against the owner's version at every validation
interval. An invalidation tells every site at once and reports, per site, what was dropped or
why the site could not be told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cas.cache.pieces import forgotten_channel
from cas.cache.store import CacheStore, CacheUnavailable
from cas.sources.signed import SiteCaller, SiteUnreachable
from sitemap.model import Mailbox

log = logging.getLogger(__name__)

CHANGES_PATH = "/api/v1/internal/changes"
ANNOUNCE_DELAY_SECONDS = 0.05
ANNOUNCE_TIMEOUT_SECONDS = 2.0
MAX_PENDING = 10_000

Forget = Callable[[Mailbox], Awaitable[int]]


async def follow_forgotten(store: CacheStore, site: str, drop: Callable[[str], None]) -> None:
    """Drop this node's first-level copies of every mailbox another node of the site drops
    (the site store's channel); runs until cancelled, subscribing again after a failure."""
    channel = forgotten_channel(site)
    while True:
        try:
            async for address in store.subscribe(channel):
                drop(address)
        except CacheUnavailable as exc:
            log.debug("following %s: %s; subscribing again", channel, exc)
            await asyncio.sleep(1.0)


class ChangeFeed:
    """This node's side of change propagation for its site (see the module docstring)."""

    def __init__(
        self,
        site: str,
        other_sites: Sequence[str],
        forget: Forget,
        caller: SiteCaller | None,
        *,
        delay: float = ANNOUNCE_DELAY_SECONDS,
        timeout: float = ANNOUNCE_TIMEOUT_SECONDS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.site = site
        self.other_sites = list(other_sites) if caller is not None else []
        self.forget = forget
        self.caller = caller
        self.delay = delay
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[str, dict[str, Mailbox]] = {site: {} for site in self.other_sites}
        self._flush: dict[str, asyncio.Task[None]] = {}
        self.sent = 0  # announcements sent (one per site per batch)

    async def pushed(self, mailboxes: Sequence[Mailbox]) -> int:
        """A backend said these mailboxes changed: drop their cached data, tell the others."""
        dropped = 0
        for mailbox in mailboxes:
            try:
                dropped += await self.forget(mailbox)
            except CacheUnavailable as exc:
                log.warning("change of %s: the cache is unavailable: %s", mailbox.address, exc)
            self.announce(mailbox)
        return dropped

    def announce(self, mailbox: Mailbox) -> None:
        """Tell the other sites, soon, that `mailbox` changed (coalesced and deduplicated)."""
        if not self.other_sites:
            return
        key = mailbox.address.casefold()
        for site, pending in self._pending.items():
            if key not in pending and len(pending) >= self.max_pending:
                log.warning(
                    "too many changes waiting to be announced to site %r; %s dropped",
                    site, mailbox.address,
                )  # fmt: skip
                continue
            pending[key] = mailbox
            running = self._flush.get(site)
            if running is None or running.done():
                task = asyncio.get_running_loop().create_task(self._send_later(site))
                self._flush[site] = task

    async def _send_later(self, site: str) -> None:
        """Send `site` what is pending for it, until nothing is: a change announced while a
        call is under way goes in the next one, and a slow site delays only its own."""
        pending = self._pending[site]
        while pending:
            await asyncio.sleep(self.delay)
            batch = list(pending.values())
            pending.clear()
            result = await self._tell(site, batch)
            if result.get("status") != "told":
                log.warning("changes not announced to site %r: %s", site, result.get("message"))

    async def tell_all(self, mailboxes: Sequence[Mailbox]) -> dict[str, dict[str, Any]]:
        """Tell every other site now; per site, what it dropped or why it could not be told."""
        if not mailboxes or self.caller is None:
            return {}
        results = await asyncio.gather(*(self._tell(s, mailboxes) for s in self.other_sites))
        return dict(zip(self.other_sites, results))

    async def _tell(self, site: str, mailboxes: Sequence[Mailbox]) -> dict[str, Any]:
        if self.caller is None:
            return {"status": "unreachable", "message": "no cluster secret"}
        document = {"addresses": [m.address for m in mailboxes]}
        try:
            answer = await self.caller.post(site, CHANGES_PATH, document, timeout=self.timeout)
        except SiteUnreachable as exc:
            return {"status": "unreachable", "message": str(exc)}
        self.sent += 1
        dropped = answer.get("dropped")
        return {"status": "told", "keys": dropped if isinstance(dropped, int) else None}

    async def invalidate(self, mailbox: Mailbox) -> dict[str, Any]:
        """Drop `mailbox` here and at every other site, now; a report per site."""
        sites: dict[str, dict[str, Any]] = {}
        try:
            sites[self.site] = {"status": "dropped", "keys": await self.forget(mailbox)}
        except CacheUnavailable as exc:
            sites[self.site] = {"status": "cache-unavailable", "message": exc.message}
        sites.update(await self.tell_all([mailbox]))
        return sites

    async def aclose(self) -> None:
        for task in self._flush.values():
            task.cancel()
