"""`MemoryStore`: the embedded store (no Redis): one process, the same rules as Redis."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from cas.cache.store.base import CacheStore, CacheUnavailable, bucket_seconds, ttl_millis

logger = logging.getLogger(__name__)


# --- in-process --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float


class MemoryStore(CacheStore):
    """The embedded store: one process, the same rules as Redis.

    Entries expire by `clock` (seconds, injectable for tests). At most `max_entries` live
    entries: the least recently used go first. Locks are ordinary entries holding their token
    (as in Redis), so a full store may evict a lock. `wait_for` sleeps on one `asyncio.Event`
    per key, set by any write of that key: no polling.
    """

    def __init__(
        self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: Counter[str] = Counter()
        self._closed = False
        self._channels: dict[str, list[asyncio.Queue[str]]] = {}

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check_open()
        return [self._lookup(key) for key in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float) -> None:
        self._check_open()
        for key, value in items:
            self._store(key, bytes(value), ttl_seconds)

    async def delete(self, keys: Sequence[str]) -> int:
        self._check_open()
        return sum(1 for key in keys if self._drop(key))

    async def delete_matching(self, prefix: str) -> int:
        self._check_open()
        doomed = [key for key in self._entries if key.startswith(prefix)]
        return sum(1 for key in doomed if self._drop(key))

    async def acquire(self, key: str, ttl_seconds: float) -> str | None:
        self._check_open()
        if self._lookup(key) is not None:
            return None
        token = secrets.token_hex(16)
        self._store(key, token.encode(), ttl_seconds)
        return token

    async def release(self, key: str, token: str) -> None:
        self._check_open()
        if self._lookup(key) == token.encode():
            del self._entries[key]

    async def wait_for(self, key: str, timeout: float) -> bytes | None:
        self._check_open()
        value = self._lookup(key)
        if value is not None or timeout <= 0:
            return value
        event = self._events.setdefault(key, asyncio.Event())
        self._waiting[key] += 1
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._waiting[key] -= 1
            if self._waiting[key] <= 0:
                del self._waiting[key]
                if self._events.get(key) is event:
                    del self._events[key]
        self._check_open()
        return self._lookup(key)

    async def publish(self, channel: str, message: str) -> None:
        self._check_open()
        for queue in self._channels.get(channel, []):
            queue.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        self._check_open()
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._channels.setdefault(channel, []).append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._channels[channel].remove(queue)

    async def take(
        self, key: str, rate: float, burst: float, cost: float = 1.0, *, spare: float = 0.0
    ) -> tuple[float, float]:
        """The token bucket of `key`, kept as "tokens time" in an ordinary entry (one process:
        nothing else runs between the read and the write)."""
        self._check_open()
        keep = bucket_seconds(rate, burst)
        now = self._clock()
        tokens, at = float(burst), now
        raw = self._lookup(key)
        if raw is not None:
            try:
                held, stamp = (float(part) for part in raw.split())
                tokens, at = held, min(stamp, now)
            except ValueError:
                pass  # not a bucket: start a full one
        tokens = min(float(burst), tokens + (now - at) * rate)
        taken, wait = 0.0, 0.0
        if tokens >= cost:
            taken = cost + max(0.0, min(spare, tokens - cost))
            tokens -= taken
        else:
            wait = (cost - tokens) / rate
        self._store(key, f"{tokens!r} {now!r}".encode(), keep)
        return taken, wait

    async def ping(self) -> bool:
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True
        self._entries.clear()
        for event in self._events.values():
            event.set()  # waiters wake, see the store closed and raise CacheUnavailable
        self._events.clear()

    def describe(self) -> str:
        return "in-process"

    # --- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise CacheUnavailable("in-process store closed")

    def _lookup(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def _store(self, key: str, value: bytes, ttl_seconds: float) -> None:
        expires_at = self._clock() + ttl_millis(ttl_seconds) / 1000
        self._entries[key] = _Entry(value, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def _drop(self, key: str) -> bool:
        """Remove `key`; True if it held a live entry."""
        entry = self._entries.pop(key, None)
        return entry is not None and entry.expires_at > self._clock()
