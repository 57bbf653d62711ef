"""The entry node's short-lived copies of other sites' answers (default 60 s, 0 disables).

Keyed by site, mailbox, window, interval, view and requester (what a requester may see of a
private item differs), stored in this site's store. The age a copy reports is the age of the
data when the other site answered plus the time the copy has been kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cas.cache.pieces import decode_data, encode_data, remote_key
from cas.cache.store import CacheStore, CacheUnavailable
from cas.model.availability import AvailabilityRequest, MailboxResult
from cas.model.freebusy import MailboxData
from cas.model.projection import Requester
from sitemap.model import Mailbox


class RemoteCache:
    def __init__(
        self,
        store: CacheStore,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
        metrics: object | None = None,
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.metrics = metrics

    def _key(self, mailbox: Mailbox, request: AvailabilityRequest, requester: Requester) -> str:
        return remote_key(
            mailbox.site, mailbox.address, request.window, request.interval_minutes,
            request.view.value, requester.username,
        )  # fmt: skip

    async def get(
        self, mailboxes: Sequence[Mailbox], request: AvailabilityRequest, requester: Requester
    ) -> list[MailboxData | None]:
        if self.ttl_seconds <= 0 or not mailboxes:
            return [None] * len(mailboxes)
        try:
            raw = await self.store.get_many([self._key(m, request, requester) for m in mailboxes])
        except CacheUnavailable:
            return [None] * len(mailboxes)
        now = self.clock()
        found: list[MailboxData | None] = []
        for blob in raw:
            try:
                found.append(decode_data(blob, now) if blob is not None else None)
            except ValueError:
                found.append(None)
        if self.metrics is not None:
            for _ in (f for f in found if f is not None):
                self.metrics.cache("remote_hit")  # type: ignore[attr-defined]
        return found

    async def put(
        self,
        mailboxes: Sequence[Mailbox],
        results: Sequence[MailboxResult],
        request: AvailabilityRequest,
        requester: Requester,
    ) -> None:
        if self.ttl_seconds <= 0:
            return
        now = self.clock()
        items = [
            (self._key(m, request, requester), encode_data(r, now))
            for m, r in zip(mailboxes, results)
            if isinstance(r, MailboxData)  # errors are not kept: the next request asks again
        ]
        if items:
            try:
                await self.store.set_many(items, self.ttl_seconds)
            except CacheUnavailable:
                pass
