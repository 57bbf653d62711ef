"""Where the cache keeps its bytes: one small interface, an in-process store and a Redis store.

`CacheStore` is all the cache layer (`cas.cache.freshness`) sees: bytes under opaque string keys
with TTLs, a lock for single flight, and a way to wait for a key another node will write. Every
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

import abc
import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from redis import exceptions as redis_exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from cas.cache.breaker import CircuitBreaker

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


class CacheUnavailable(Exception):
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
    async def ping(self) -> bool:
        """Is the store usable now? Never raises."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; later calls raise `CacheUnavailable`. Never raises."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data lives, without secrets: "redis://127.0.0.1:6379/0", "in-process"."""


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


# --- Redis -------------------------------------------------------------------------------------

_SCHEMES: dict[str, tuple[str, bool]] = {
    "redis": ("tcp", False),
    "rediss": ("tcp", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_POLL_FIRST, _POLL_MAX = 0.005, 0.05
_KeyBatch = set[bytes]  # (inside RedisStore, `set` is the method)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: what to connect to (`kind` is tcp, unix, sentinel or cluster)."""

    kind: str
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    path: str = ""
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """The URL again, without credentials, with defaults filled in."""
        scheme = ("rediss" if self.tls else "redis") + (
            f"+{self.kind}" if self.kind in ("sentinel", "cluster") else ""
        )
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        if self.kind == "unix":
            return f"unix://{self.path}?db={self.db}"
        if self.kind == "sentinel":
            return f"{scheme}://{hosts}/{self.service}/{self.db}"
        if self.kind == "cluster":
            return f"{scheme}://{hosts}"
        return f"{scheme}://{hosts}/{self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one of the URL forms in docs/cache-redis.md; ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"Redis URL {url!r}: scheme must be one of {', '.join(_SCHEMES)}")
    kind, tls = _SCHEMES[scheme.lower()]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    unknown = set(options) - {"db"}
    if unknown:
        raise ValueError(f"Redis URL {url!r}: unsupported option(s) {sorted(unknown)}")
    db_text = options.get("db", "")
    hosts: tuple[tuple[str, int], ...] = ()
    service = ""
    if kind == "unix":
        if hostlist or not path:
            raise ValueError(f"Redis URL {url!r}: write unix:///absolute/path.sock[?db=N]")
        path = "/" + unquote(path)
    else:
        default_port = 26379 if kind == "sentinel" else 6379
        hosts = tuple(_host_port(url, h, default_port) for h in hostlist.split(","))
        if kind == "tcp" and len(hosts) > 1:
            raise ValueError(f"Redis URL {url!r}: several hosts need +sentinel or +cluster")
        segments = [s for s in path.split("/") if s] if slash else []
        if kind == "sentinel":
            if not 1 <= len(segments) <= 2:
                raise ValueError(f"Redis URL {url!r}: write redis+sentinel://h:p,.../service[/db]")
            service = unquote(segments[0])
            db_text = segments[1] if len(segments) == 2 else db_text
        elif len(segments) > 1:
            raise ValueError(f"Redis URL {url!r}: the path can only be a database number")
        elif segments:
            db_text = segments[0]
        path = ""
    try:
        db = int(db_text or 0)
        if db < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"Redis URL {url!r}: database {db_text!r} is not a number") from None
    if kind == "cluster" and db != 0:
        raise ValueError(f"Redis URL {url!r}: Redis Cluster only has database 0")
    return RedisTarget(
        kind,
        tls,
        hosts,
        path,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
    )


def _host_port(url: str, text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"Redis URL {url!r}: port {port_text!r} is not a number") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"Redis URL {url!r}: bad host:port {text!r}")
    return host, port


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
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(target.hosts), sentinel_kwargs=sentinel_kwargs, **common
            )
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
            self.breaker.record_failure()
            detail = (
                f"no answer within {self.timeout_seconds:g}s"
                if isinstance(exc, TimeoutError)
                else str(exc) or type(exc).__name__
            )
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
