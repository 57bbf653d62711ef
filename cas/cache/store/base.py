"""The store interface the cache sees: bytes under opaque keys with TTLs, a lock, a wait, and
the token buckets throttling counts requests in (`take`).

Every method raises `CacheUnavailable`, and nothing else, when the store cannot be used;
callers treat that as a miss and go straight to the source.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from cas.errors import CasError

logger = logging.getLogger(__name__)


class CacheUnavailable(CasError):
    """The store cannot be used right now; treat the call as a miss."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreObserver(Protocol):
    """What a store reports for metrics (duck-typed: any object with these methods will do)."""

    def error(self, kind: str) -> None:
        """A call failed: "timeout", "connection", "response", "cluster" or "redis"."""

    def breaker(self, state: str) -> None:
        """The circuit breaker is now "closed", "open" or "half-open"."""


def bucket_seconds(rate: float, burst: float) -> float:
    """How long a token bucket must be kept: the time it takes to fill up from empty (after
    that, a forgotten bucket and a full one are the same)."""
    if not (rate > 0 and burst > 0):
        raise ValueError(f"a token bucket needs a positive rate and size, not {rate!r}, {burst!r}")
    return burst / rate + 1.0


def ttl_millis(ttl_seconds: float) -> int:
    """A TTL in whole milliseconds, rounded up, at least 1 (so a TTL never means "forever")."""
    if not ttl_seconds > 0:  # also catches NaN
        return 1
    return max(1, math.ceil(min(ttl_seconds, 10.0**9) * 1000))


class CacheStore(abc.ABC):
    """Bytes under opaque string keys, with TTLs, locks and waiting.

    Every method raises `CacheUnavailable` (and nothing else) when the store cannot be used.
    TTLs are seconds, rounded up to whole milliseconds (at least 1 ms).
    """

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys`, in order; None where a key is missing or expired."""

    async def get(self, key: str) -> bytes | None:
        """The value of one key, or None."""
        return (await self.get_many([key]))[0]

    @abc.abstractmethod
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float) -> None:
        """Store every (key, value) with the same TTL (not atomically as a whole)."""

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store one value."""
        await self.set_many([(key, value)], ttl_seconds)

    @abc.abstractmethod
    async def delete(self, keys: Sequence[str]) -> int:
        """Remove keys; return how many existed."""

    @abc.abstractmethod
    async def delete_matching(self, prefix: str) -> int:
        """Remove every key starting with `prefix` (all of them for ""); return how many."""

    @abc.abstractmethod
    async def acquire(self, key: str, ttl_seconds: float) -> str | None:
        """Take the lock `key` for `ttl_seconds`: its token, or None if someone else holds it."""

    @abc.abstractmethod
    async def release(self, key: str, token: str) -> None:
        """Release the lock `key` if `token` still holds it (a no-op otherwise)."""

    @abc.abstractmethod
    async def wait_for(self, key: str, timeout: float) -> bytes | None:
        """Wait until `key` exists and return its value, or None after `timeout` seconds."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send `message` to every current subscriber of `channel` (nodes of the site)."""

    @abc.abstractmethod
    def subscribe(self, channel: str) -> AsyncIterator[str]:
        """The messages of `channel` from now on; raises `CacheUnavailable` when broken."""

    @abc.abstractmethod
    async def take(
        self, key: str, rate: float, burst: float, cost: float = 1.0, *, spare: float = 0.0
    ) -> tuple[float, float]:
        """Take `cost` tokens from the token bucket `key` (refilled at `rate` per second, holding
        at most `burst`, full when new), and up to `spare` more when they are there, atomically
        for every caller of the store. Returns (tokens taken, 0.0), or, when fewer than `cost`
        are there, (0.0, the seconds until they will be) and nothing is taken."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Is the store usable now? Never raises."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; later calls raise `CacheUnavailable`. Never raises."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data lives, without secrets: "redis://127.0.0.1:6379/0", "in-process"."""
