"""Throttling: a token bucket per requester, shared by the nodes of a site.

Every lookup a client asks of a node takes one token per mailbox named (at most `burst`) from
the requester's bucket, which holds `burst` tokens and refills at `rate` per second. The
buckets live in the site's store (`CacheStore.take`: one Lua script in the site's Redis, so a
requester cannot get more by spreading requests over the site's nodes; in process without
Redis). When the bucket has too few tokens the request is refused with `Throttled`, saying
how long to wait: EWS answers the fault ErrorServerBusy with `BackOffMilliseconds` (which
exchangelib and the forwarder honour), the JSON API and `/public` 429 with `Retry-After`.

Who a bucket belongs to: an authenticated requester by name (any case); an anonymous caller by
its address. Forwarded requests (hop >= 1) are not throttled again at the owning site: the
entry node counted them where the client asked. When the site's Redis cannot be reached the
node counts in a bucket of its own (`fallback`), so throttling goes on, per node.

A round trip to Redis per request would cost a warm lookup a third of its speed, so a node
takes a busy requester's tokens a little ahead: with the tokens a request needs it takes up to
a tenth of a second's worth more (`LEASE_SECONDS` × rate in whole tokens, at most the burst)
when the bucket has them, and spends those first. A requester is held to its rate and burst
across the site; what a node holds ahead is taken from the same bucket, so it only moves
tokens between the site's nodes (at most a tenth of a second of the rate per node). With a rate
under 10 per second nothing is taken ahead: every request meets Redis.

The limits are settings (`throttle_rate`, `throttle_burst`; a rate of 0 turns throttling off)
and metrics (`cas_limit`, and `cas_throttled` counts the refusals by front door).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict

from cas.cache.store import CacheStore, CacheUnavailable, MemoryStore
from cas.errors import Throttled
from cas.metrics import Metrics
from cas.model.projection import Requester

log = logging.getLogger(__name__)

KEY_PREFIX = "cas:throttle:"
LEASE_SECONDS = 0.1  # how much of a requester's rate a node takes ahead (see above)
MAX_LEASES = 10_000  # requesters a node holds tokens ahead for; the least recent go first


class Throttle:
    """The site's buckets (see the module docstring); `admit` refuses with `Throttled`."""

    def __init__(
        self,
        store: CacheStore,
        site: str,
        *,
        rate: float,
        burst: int,
        metrics: Metrics | None = None,
        fallback: CacheStore | None = None,
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"throttling needs a rate >= 0 and a burst >= 1, not {rate}, {burst}")
        self.store = store
        self.site = site
        self.rate = rate
        self.burst = burst
        self.metrics = metrics
        self.fallback = fallback if fallback is not None else MemoryStore()
        self.lease = float(math.floor(min(burst, rate * LEASE_SECONDS)))  # whole tokens
        self._held: OrderedDict[str, float] = OrderedDict()  # tokens taken ahead, by bucket

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def key(self, requester: Requester, address: str | None) -> str:
        """The bucket of a requester: by name, or by address for a caller without a login."""
        who = (
            f"user:{requester.username.casefold()}"
            if requester.username is not None
            else f"address:{address or '-'}"
        )
        digest = hashlib.sha256(who.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{KEY_PREFIX}{self.site}:{digest}"

    async def admit(
        self, requester: Requester, mailboxes: int, *, address: str | None, door: str
    ) -> None:
        """Take one token per mailbox (at least one, at most `burst`) or raise `Throttled`."""
        if not self.enabled:
            return
        key = self.key(requester, address)
        cost = float(min(max(mailboxes, 1), self.burst))
        held = self._held.pop(key, 0.0)  # taken out while we wait: no one else spends it
        if held >= cost:
            self._keep(key, held - cost)
            return
        taken, wait = await self._take(key, cost - held)
        if taken > 0:
            self._keep(key, held + taken - cost)
            return
        self._keep(key, held)
        if self.metrics is not None:
            self.metrics.throttle(door)
        who = requester.username if requester.username is not None else "an anonymous caller"
        log.info("throttled %r: %d mailbox(es), %.0f ms to wait", who, mailboxes, wait * 1000)
        raise Throttled(
            f"Too many lookups: at most {self.rate:g} mailboxes per second per requester "
            f"(bursts of {self.burst}). Try again in {wait:.1f} s.",
            wait,
        )

    async def _take(self, key: str, need: float) -> tuple[float, float]:
        """`need` tokens and a lease ahead from the site's bucket (or this node's)."""
        try:
            return await self.store.take(key, self.rate, self.burst, need, spare=self.lease)
        except CacheUnavailable as exc:
            log.debug("throttle counted in this node: %s", exc.message)
            return await self.fallback.take(key, self.rate, self.burst, need, spare=self.lease)

    def _keep(self, key: str, tokens: float) -> None:
        if tokens <= 0:
            return
        self._held[key] = self._held.get(key, 0.0) + tokens
        self._held.move_to_end(key)
        while len(self._held) > MAX_LEASES:
            self._held.popitem(last=False)

    async def aclose(self) -> None:
        await self.fallback.aclose()


__all__ = ["KEY_PREFIX", "Throttle"]
