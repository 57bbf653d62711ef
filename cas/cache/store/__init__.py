"""Where the cache keeps its bytes: one small interface, an in-process store and a Redis store.

`CacheStore` is all the cache layer (`cas.cache.cached`) sees: bytes under opaque string keys
with TTLs, a lock for single flight, and a way to wait for a key another node will write; and
the token buckets requests are throttled with (`take`, `cas.throttle`). Every
method raises `CacheUnavailable`, and nothing else, when the store cannot be used; callers treat
that as a miss and go straight to the backend. `MemoryStore` is the embedded default (no Redis:
one process, same rules); `RedisStore` talks to a site's Redis; `open_store(url)` picks one.

Errors::

    Exception
    └── CacheUnavailable     store closed, circuit open, Redis error or timeout (`__cause__`
                             holds the library's exception; the message names the store)
    ValueError               a malformed Redis URL (`parse_redis_url`): a configuration error
"""

from __future__ import annotations

import logging

from cas.cache.store.base import CacheStore, CacheUnavailable, StoreObserver, ttl_millis
from cas.cache.store.memory import MemoryStore
from cas.cache.store.redis import RedisStore
from cas.cache.store.urls import RedisTarget, parse_redis_url

__all__ = [
    "CacheStore",
    "CacheUnavailable",
    "MemoryStore",
    "RedisStore",
    "RedisTarget",
    "StoreObserver",
    "open_store",
    "parse_redis_url",
    "ttl_millis",
]

logger = logging.getLogger(__name__)


# --- choosing a store --------------------------------------------------------------------------


def open_store(url: str | None, **redis_options: object) -> CacheStore:
    """A `RedisStore` for `url` (options as `RedisStore.from_url`), or, with no URL, a
    `MemoryStore` and a warning: without Redis, cache and single flight are per process."""
    if not url:
        logger.warning(
            "no Redis configured: using an in-process cache (cached data and single flight "
            "are per node, not shared by the site)"
        )
        return MemoryStore()
    return RedisStore.from_url(url, **redis_options)  # type: ignore[arg-type]
