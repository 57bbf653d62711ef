"""The site cache: storage (`store`, whose Redis sits behind a `cas.breaker.CircuitBreaker`),
and what is stored (`pieces`) under which freshness rules (`freshness`). This package
re-exports the storage API."""

from __future__ import annotations

from cas.breaker import BreakerState, CircuitBreaker
from cas.cache.store import (
    CacheStore,
    CacheUnavailable,
    MemoryStore,
    RedisStore,
    RedisTarget,
    StoreObserver,
    open_store,
    parse_redis_url,
)

__all__ = [
    "BreakerState",
    "CacheStore",
    "CacheUnavailable",
    "CircuitBreaker",
    "MemoryStore",
    "RedisStore",
    "RedisTarget",
    "StoreObserver",
    "open_store",
    "parse_redis_url",
]
