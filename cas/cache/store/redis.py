"""`RedisStore`: the site's Redis through redis-py, every call bounded and behind a breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis import exceptions as redis_exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from cas.breaker import CircuitBreaker
from cas.cache.store.base import (
    CacheStore,
    CacheUnavailable,
    StoreObserver,
    bucket_seconds,
    ttl_millis,
)
from cas.cache.store.urls import parse_redis_url

logger = logging.getLogger(__name__)


_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# A token bucket as a hash {tokens, at}, refilled by the time that passed on Redis's own clock
# (so every node of the site counts alike); kept only as long as it takes to fill up.
_TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, spare = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(held[1]), tonumber(held[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
local taken, wait = 0, 0
if tokens >= cost then
  taken = cost + math.max(0, math.min(spare, tokens - cost))
  tokens = tokens - taken
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.17g', math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {string.format('%.17g', taken), string.format('%.17g', wait)}
"""
_POLL_FIRST, _POLL_MAX = 0.005, 0.05
_KeyBatch = set[bytes]  # (inside RedisStore, `set` is the method)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, redis_exceptions.TimeoutError)):
        return "timeout"
    if isinstance(exc, (redis_exceptions.ConnectionError, OSError)):
        return "connection"
    if isinstance(exc, redis_exceptions.ResponseError):
        return "response"
    if isinstance(exc, (redis_exceptions.ClusterError, redis_exceptions.RedisClusterException)):
        return "cluster"
    return "redis"


_FAILURES = (
    redis_exceptions.RedisError,
    redis_exceptions.RedisClusterException,
    OSError,
    TimeoutError,
)


class RedisStore(CacheStore):
    """A `CacheStore` on a redis-py asyncio client (plain, Sentinel master, or Cluster).

    Every call passes one edge (`_edge`): the store must be open and the `breaker` must allow
    the call, the call runs under `asyncio.timeout(timeout_seconds)`, and any redis-py, socket or
    timeout error becomes `CacheUnavailable` there, is counted by the breaker and reported to
    `observer.error(kind)`. From `from_url`, redis-py retries only once, at once, and only a
    connection error (a pooled connection gone stale when Redis restarted), all within the same
    deadline; everything else is the breaker's business.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str = "redis",
        timeout_seconds: float = 0.25,
        breaker: CircuitBreaker | None = None,
        observer: StoreObserver | None = None,
        cluster: bool = False,
        scan_count: int = 500,
        extra_clients: Sequence[Any] = (),
    ) -> None:
        self._client = client
        self._name = name
        self.timeout_seconds = timeout_seconds
        self.breaker = breaker or CircuitBreaker()
        self._observer = observer
        self._cluster = cluster
        self.scan_count = scan_count
        self._extra_clients = tuple(extra_clients)
        self._closed = False
        self._take: Any = None  # the registered token-bucket script
        if observer is not None:
            self.breaker.add_listener(lambda state: self._report("breaker", state))
            self._report("breaker", self.breaker.state)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        password: str | None = None,
        timeout_seconds: float = 0.25,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: StoreObserver | None = None,
        ca_file: str | None = None,
        sentinel_password: str | None = None,
        scan_count: int = 500,
    ) -> RedisStore:
        """Build a store for `url` (see `parse_redis_url`); no connection is made yet.

        `password` (else the URL's) authenticates to Redis; `ca_file` verifies a TLS server;
        `sentinel_password` authenticates to Sentinels; `clock` drives the default breaker.
        """
        target = parse_redis_url(url)
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout_seconds,
            "socket_timeout": timeout_seconds,
            "retry": Retry(NoBackoff(), 1, (redis_exceptions.ConnectionError,)),
            "username": target.username,
            "password": password if password is not None else target.password,
        }
        if target.tls:
            common |= {"ssl": True, "ssl_ca_certs": ca_file}
        extra: list[Any] = []
        if target.kind == "tcp":
            ((host, port),) = target.hosts
            client: Any = Redis(host=host, port=port, db=target.db, **common)
        elif target.kind == "unix":
            client = Redis(unix_socket_path=target.path, db=target.db, **common)
        elif target.kind == "sentinel":
            sentinel_kwargs = {k: v for k, v in common.items() if k not in ("username", "password")}
            sentinel_kwargs["password"] = sentinel_password
            sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs, **common)
            client = sentinel.master_for(target.service, db=target.db)
            extra = list(sentinel.sentinels)
        else:
            nodes = [ClusterNode(host, port) for host, port in target.hosts]
            client = RedisCluster(startup_nodes=nodes, **common)
        return cls(
            client,
            name=target.describe(),
            timeout_seconds=timeout_seconds,
            breaker=breaker or CircuitBreaker(clock=clock),
            observer=observer,
            cluster=target.kind == "cluster",
            scan_count=scan_count,
            extra_clients=extra,
        )

    @property
    def client(self) -> Any:
        """The redis-py client (for diagnostics; calls through it bypass the edge)."""
        return self._client

    def describe(self) -> str:
        return self._name

    # --- the interface ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async with self._edge("GET"):
            value = await self._client.get(key)
        return None if value is None else bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = list(keys)
        if not keys:
            return []
        async with self._edge("MGET"):
            if self._cluster:
                values = await self._client.mget_nonatomic(keys)
            else:
                values = await self._client.mget(keys)
        return [None if v is None else bytes(v) for v in values]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        async with self._edge("SET"):
            await self._client.set(key, value, px=ttl_millis(ttl_seconds))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float) -> None:
        items = list(items)
        if not items:
            return
        millis = ttl_millis(ttl_seconds)
        async with self._edge("SET (pipeline)"), self._client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(key, value, px=millis)
            await pipe.execute()

    async def delete(self, keys: Sequence[str]) -> int:
        keys = list(keys)
        if not keys:
            return 0
        async with self._edge("UNLINK"):
            return int(await self._client.unlink(*keys))

    async def delete_matching(self, prefix: str) -> int:
        """SCAN (every primary, on a cluster) for `prefix*` and UNLINK in batches of at most
        `scan_count` keys. Each SCAN step and each UNLINK is one bounded call."""
        pattern = _glob_escape(prefix) + "*"
        deleted = 0
        batch: _KeyBatch = _KeyBatch()
        keys = self._client.scan_iter(match=pattern, count=self.scan_count)
        try:
            while True:
                async with self._edge("SCAN"):
                    key = await anext(keys, None)
                if key is None:
                    break
                batch.add(key)
                if len(batch) >= self.scan_count:
                    deleted += await self._unlink(batch)
            if batch:
                deleted += await self._unlink(batch)
        finally:
            with contextlib.suppress(Exception):
                await keys.aclose()
        return deleted

    async def acquire(self, key: str, ttl_seconds: float) -> str | None:
        token = secrets.token_hex(16)
        async with self._edge("SET NX"):
            taken = await self._client.set(key, token, nx=True, px=ttl_millis(ttl_seconds))
        return token if taken else None

    async def release(self, key: str, token: str) -> None:
        async with self._edge("EVAL release"):
            await self._client.eval(_RELEASE_SCRIPT, 1, key, token)

    async def take(
        self, key: str, rate: float, burst: float, cost: float = 1.0, *, spare: float = 0.0
    ) -> tuple[float, float]:
        """One script run (EVALSHA, loaded once): atomic for every node of the site."""
        keep = ttl_millis(bucket_seconds(rate, burst))
        async with self._edge("EVALSHA take"):
            if self._take is None:
                self._take = self._client.register_script(_TAKE_SCRIPT)
            taken, wait = await self._take(keys=[key], args=[rate, burst, cost, spare, keep])
        return max(0.0, float(taken)), max(0.0, float(wait))

    async def wait_for(self, key: str, timeout: float) -> bytes | None:
        """Poll GET, backing off from 5 ms to 50 ms, until the key exists or `timeout` ends.
        A GET still running at the deadline is cancelled (not counted against Redis)."""
        delay = _POLL_FIRST
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                while True:
                    value = await self.get(key)
                    if value is not None:
                        return value
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
        except TimeoutError:
            return None

    async def ping(self) -> bool:
        """PING through the edge (so with the circuit open: False, without touching Redis)."""
        try:
            async with self._edge("PING"):
                return bool(await self._client.ping())
        except CacheUnavailable:
            return False

    async def publish(self, channel: str, message: str) -> None:
        async with self._edge("PUBLISH"):
            await self._client.publish(channel, message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        """The channel's messages; a broken connection raises `CacheUnavailable` (the caller
        subscribes again). Reading waits without the call timeout: a quiet channel is fine."""
        if self._closed:
            raise CacheUnavailable(f"{self._name}: store closed")
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            async with self._edge("SUBSCRIBE"):
                await pubsub.subscribe(channel)
            while True:
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except _FAILURES as exc:
                    raise CacheUnavailable(f"{self._name}: subscription lost: {exc}") from exc
                if message is not None and message.get("type") == "message":
                    data = message.get("data")
                    yield data.decode() if isinstance(data, bytes) else str(data)
        finally:
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in (self._client, *self._extra_clients):
            with contextlib.suppress(*_FAILURES):
                async with asyncio.timeout(self.timeout_seconds):
                    await client.aclose()

    # --- the edge --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _edge(self, operation: str) -> AsyncIterator[None]:
        if self._closed:
            raise CacheUnavailable(f"{self._name}: store closed")
        if not self.breaker.allow():
            raise CacheUnavailable("circuit open")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                yield
        except _FAILURES as exc:
            kind = _error_kind(exc)
            self._report("error", kind)
            detail = (
                f"no answer within {self.timeout_seconds:g}s"
                if isinstance(exc, TimeoutError)
                else str(exc) or type(exc).__name__
            )
            self.breaker.record_failure(f"{operation} failed ({kind}): {detail}")
            raise CacheUnavailable(f"{self._name}: {operation} failed ({kind}): {detail}") from exc
        except BaseException:
            self.breaker.release_trial()
            raise
        else:
            self.breaker.record_success()

    async def _unlink(self, batch: _KeyBatch) -> int:
        keys = list(batch)
        batch.clear()
        async with self._edge("UNLINK"):
            return int(await self._client.unlink(*keys))

    def _report(self, hook: str, value: str) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, hook)(value)
        except Exception:  # metrics must never break a cache call
            logger.exception("cache store observer %s(%r) failed", hook, value)


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so SCAN MATCH sees `text` literally."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)
