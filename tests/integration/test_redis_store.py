"""RedisStore against real redis-server processes: data, locks, waiting, timeouts, the breaker,
a Redis killed and restarted, and every URL form (TCP, unix socket, TLS, Sentinel, Cluster)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from cas.cache import CacheUnavailable, CircuitBreaker, RedisStore, parse_redis_url
from caslab.redis import RedisProcess, TlsFiles

if TYPE_CHECKING:
    from tests.support.redis import RedisFactory

pytest_plugins = ["tests.support.redis"]  # redis_server, redis_url, redis_factory, redis_cluster

TIMEOUT = 0.2
# What a deadline may be overrun by: scheduling noise on a loaded machine. A call that does not
# honour its deadline waits seconds (wait_for's own 5 s) or forever (a blackhole), far past it.
SLACK = 1.0
WAIT = 10.0  # bound on waiting for something the test expects to happen


@dataclass
class Observer:
    events: list[tuple[str, str]] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.events.append(("error", kind))

    def breaker(self, state: str) -> None:
        self.events.append(("breaker", state))


@dataclass
class Blackhole:
    """Accepts TCP connections and never answers."""

    port: int
    connections: list[asyncio.StreamWriter]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, timeout_seconds=1.0)
    yield store
    await store.aclose()


@pytest.fixture
async def node_b(redis_url: str) -> AsyncIterator[RedisStore]:
    """A second node of the same site: its own client and pool, the same Redis database."""
    store = RedisStore.from_url(redis_url, timeout_seconds=1.0)
    yield store
    await store.aclose()


@pytest.fixture
async def blackhole() -> AsyncIterator[Blackhole]:
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            await reader.read()  # swallow everything until the client hangs up
        except (asyncio.CancelledError, ConnectionError):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield Blackhole(server.sockets[0].getsockname()[1], connections)
    server.close()
    for writer in connections:
        writer.close()


async def elapsed(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# --- data ----------------------------------------------------------------------------------------


async def test_set_get_and_miss(store: RedisStore) -> None:
    await store.set("k", b"\x00binary\xff", 5)
    assert await store.get("k") == b"\x00binary\xff"
    assert await store.get("missing") is None


async def test_ttl_expires(store: RedisStore) -> None:
    await store.set("short", b"1", 0.3)
    await store.set("long", b"2", 60)
    assert 0 < await store.client.pttl("short") <= 300  # Redis holds it, for 300 ms at most
    deadline = time.monotonic() + WAIT
    while (value := await store.get("short")) is not None and time.monotonic() < deadline:
        assert value == b"1"
        await asyncio.sleep(0.05)
    assert value is None  # gone once its time was up
    assert await store.get("long") == b"2"  # while a key with time left stays


async def test_set_many_get_many(store: RedisStore) -> None:
    items = [(f"piece:{i}", f"value {i}".encode()) for i in range(50)]
    await store.set_many(items, 5)
    keys = [k for k, _ in items] + ["absent"]
    assert await store.get_many(keys) == [v for _, v in items] + [None]
    assert 4000 < await store.client.pttl("piece:7") <= 5000
    assert await store.get_many([]) == []
    await store.set_many([], 5)


async def test_delete_counts(store: RedisStore) -> None:
    await store.set_many([("a", b"1"), ("b", b"2")], 5)
    assert await store.delete(["a", "b", "c"]) == 2
    assert await store.delete([]) == 0


async def test_delete_matching_in_batches_and_literally(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, scan_count=100)
    try:
        await store.set_many([(f"cas:v1:fb:eu:ann:{i}", b"x") for i in range(1234)], 30)
        await store.set_many([("cas:v1:fb:eu:anne:1", b"x"), ("cas:v1:fb:eu:bob:1", b"x")], 30)
        await store.set_many([("odd[*?]:1", b"x"), ("oddX:1", b"x")], 30)
        assert await store.delete_matching("cas:v1:fb:eu:ann:") == 1234
        assert await store.get_many(["cas:v1:fb:eu:anne:1", "cas:v1:fb:eu:bob:1"]) == [b"x", b"x"]
        assert await store.delete_matching("odd[*?]") == 1
        assert await store.get("oddX:1") == b"x"
        assert await store.delete_matching("nothing-here:") == 0
    finally:
        await store.aclose()


# --- locks and waiting across two nodes --------------------------------------------------------


async def test_lock_contention_between_two_nodes(store: RedisStore, node_b: RedisStore) -> None:
    token = await store.acquire("lock:ann", 5)
    assert token
    assert await node_b.acquire("lock:ann", 5) is None
    await node_b.release("lock:ann", "a guess")  # not the holder: no effect
    assert await node_b.acquire("lock:ann", 5) is None
    await store.release("lock:ann", token)
    assert await node_b.acquire("lock:ann", 5) is not None


async def test_an_expired_lock_cannot_be_released_by_its_old_holder(
    store: RedisStore, node_b: RedisStore
) -> None:
    old = await store.acquire("lock:x", 0.15)
    await asyncio.sleep(0.25)
    new = await node_b.acquire("lock:x", 5)
    assert old and new
    await store.release("lock:x", old)
    assert await store.client.get("lock:x") == new.encode()


async def test_only_one_of_many_concurrent_acquires_wins(
    store: RedisStore, node_b: RedisStore
) -> None:
    results = await asyncio.gather(
        *(s.acquire("lock:race", 5) for _ in range(20) for s in (store, node_b))
    )
    assert len([r for r in results if r]) == 1


async def test_wait_for_sees_a_write_from_another_node(
    store: RedisStore, node_b: RedisStore
) -> None:
    async def gets() -> int:  # GET commands the Redis server has run so far
        stats = await store.client.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))

    before = await gets()
    waiting = asyncio.create_task(node_b.wait_for("done", WAIT))
    deadline = time.monotonic() + WAIT
    while await gets() == before:  # node B has looked, and found nothing yet
        assert time.monotonic() < deadline and not waiting.done()
        await asyncio.sleep(0.01)
    await store.set("done", b"ready", 5)
    assert await waiting == b"ready"


async def test_wait_for_times_out(store: RedisStore) -> None:
    took, exc = await elapsed(store.wait_for("never", TIMEOUT))
    assert exc is None
    assert TIMEOUT * 0.95 < took < TIMEOUT + SLACK  # not before the timeout, and not long after


async def test_single_flight_across_two_nodes(store: RedisStore, node_b: RedisStore) -> None:
    backend_calls = 0

    async def lookup(node: RedisStore) -> bytes | None:
        nonlocal backend_calls
        token = await node.acquire("flight:ann:2026-01-05", 5)
        if token is None:
            return await node.wait_for("piece:ann:2026-01-05", 2)
        try:
            backend_calls += 1
            await asyncio.sleep(0.1)  # the backend
            await node.set("piece:ann:2026-01-05", b"busy 9-10", 60)
            return b"busy 9-10"
        finally:
            await node.release("flight:ann:2026-01-05", token)

    answers = await asyncio.gather(*(lookup(n) for _ in range(10) for n in (store, node_b)))
    assert backend_calls == 1
    assert answers == [b"busy 9-10"] * 20


# --- timeouts and the breaker ------------------------------------------------------------------


async def test_every_call_is_bounded_by_the_timeout(blackhole: Blackhole) -> None:
    store = RedisStore.from_url(
        blackhole.url, timeout_seconds=TIMEOUT, breaker=CircuitBreaker(failure_threshold=100)
    )
    calls: list[Awaitable[object]] = [
        store.get("k"),
        store.get_many(["a", "b"]),
        store.set("k", b"v", 1),
        store.set_many([("a", b"1")], 1),
        store.delete(["k"]),
        store.delete_matching("p:"),
        store.acquire("lock", 1),
        store.release("lock", "t"),
        store.wait_for("k", 5),
    ]
    results = await asyncio.gather(*(elapsed(c) for c in calls))
    for took, exc in results:
        assert isinstance(exc, CacheUnavailable), exc
        assert took < TIMEOUT + SLACK
        assert "timeout" in str(exc)
    took, _ = await elapsed(store.ping())
    assert not await store.ping() and took < TIMEOUT + SLACK
    await store.aclose()


async def test_the_deadline_holds_even_without_socket_timeouts(blackhole: Blackhole) -> None:
    client = Redis(host="127.0.0.1", port=blackhole.port, socket_timeout=None)
    store = RedisStore(client, timeout_seconds=TIMEOUT)
    took, exc = await elapsed(store.get("k"))
    assert isinstance(exc, CacheUnavailable) and took < TIMEOUT + SLACK
    await store.aclose()


async def test_breaker_opens_then_fails_fast_without_touching_redis(blackhole: Blackhole) -> None:
    observer = Observer()
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=60)
    store = RedisStore.from_url(
        blackhole.url, timeout_seconds=TIMEOUT, breaker=breaker, observer=observer
    )
    for _ in range(3):
        with pytest.raises(CacheUnavailable):
            await store.get("k")
    assert breaker.state == "open"
    connections = len(blackhole.connections)
    for _ in range(20):
        with pytest.raises(CacheUnavailable, match="^circuit open$"):
            await store.get("k")  # at once: a call that reached Redis would end in "timeout"
    assert len(blackhole.connections) == connections
    assert observer.events == [("breaker", "closed")] + [("error", "timeout")] * 3 + [
        ("breaker", "open")
    ]
    await store.aclose()


async def test_redis_killed_and_restarted_the_store_recovers_by_itself(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    observer = Observer()
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=0.3)
    store = RedisStore.from_url(
        server.url, timeout_seconds=TIMEOUT, breaker=breaker, observer=observer
    )
    await asyncio.gather(*(store.set(f"k{i}", b"v", 30) for i in range(5)))  # several pooled conns
    assert await store.get("k0") == b"v"

    server.kill()
    for _ in range(5):
        took, exc = await elapsed(store.get("k0"))
        assert isinstance(exc, CacheUnavailable) and took < TIMEOUT + SLACK
    assert breaker.state == "open"
    assert ("error", "connection") in observer.events

    server.restart()
    await asyncio.sleep(0.35)
    assert breaker.state == "half-open"
    assert await store.get("k0") is None  # no persistence: the cache starts empty
    assert breaker.state == "closed"
    await store.set("k0", b"again", 30)
    assert await asyncio.gather(*(store.get("k0") for _ in range(5))) == [b"again"] * 5
    assert observer.events[-3:] == [
        ("breaker", "open"),
        ("breaker", "half-open"),
        ("breaker", "closed"),
    ]
    await store.aclose()


async def test_session_server_can_be_killed_and_restarted_on_its_port(
    redis_server: RedisProcess,
) -> None:
    port, url = redis_server.port, redis_server.url
    redis_server.kill()
    assert not redis_server.running
    redis_server.restart()
    assert (redis_server.port, redis_server.url) == (port, url)
    store = RedisStore.from_url(url)
    assert await store.ping()
    await store.aclose()


async def test_a_closed_store_is_unavailable(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    await store.aclose()
    await store.aclose()
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    assert not await store.ping()


# --- URL forms, live ---------------------------------------------------------------------------


async def test_unix_socket(redis_factory: RedisFactory) -> None:
    server = redis_factory(unix_socket=True)
    store = RedisStore.from_url(server.unix_url.replace("db=0", "db=2"))
    assert store.describe() == f"unix://{server.socket_path}?db=2"
    await store.set("k", b"over unix", 5)
    assert server.client(2).get("k") == b"over unix"
    await store.aclose()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, str]:
    folder = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: str(folder / name) for name in ("cert.pem", "key.pem", "ca.pem")}
    cert.cert_chain_pems[0].write_to_path(paths["cert.pem"])
    cert.private_key_pem.write_to_path(paths["key.pem"])
    ca.cert_pem.write_to_path(paths["ca.pem"])
    return TlsFiles(paths["cert.pem"], paths["key.pem"], paths["ca.pem"]), paths["ca.pem"]


async def test_rediss_verifies_the_server(
    redis_factory: RedisFactory, tls_files: tuple[TlsFiles, str]
) -> None:
    files, ca_file = tls_files
    server = redis_factory(tls=files)
    store = RedisStore.from_url(server.tls_url, ca_file=ca_file, timeout_seconds=1.0)
    assert store.describe() == server.tls_url
    await store.set("k", b"over tls", 5)
    assert await store.get("k") == b"over tls"
    await store.aclose()

    untrusting = RedisStore.from_url(server.tls_url, timeout_seconds=1.0)  # system CAs only
    with pytest.raises(CacheUnavailable, match="connection"):
        await untrusting.get("k")
    await untrusting.aclose()


async def test_password_from_the_caller_not_the_url(redis_factory: RedisFactory) -> None:
    server = redis_factory(password="s3cret")
    store = RedisStore.from_url(server.url, password="s3cret")
    assert "s3cret" not in store.describe()
    await store.set("k", b"v", 5)
    await store.aclose()
    wrong = RedisStore.from_url(server.url, password="nope")
    with pytest.raises(CacheUnavailable):
        await wrong.get("k")
    await wrong.aclose()


async def test_sentinel_finds_the_master(redis_factory: RedisFactory) -> None:
    master = redis_factory()
    sentinel = redis_factory(sentinel_for=("cache-eu", "127.0.0.1", master.port))
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/cache-eu/3"
    store = RedisStore.from_url(url, timeout_seconds=1.0)
    await store.set("k", b"via sentinel", 5)
    assert master.client(3).get("k") == b"via sentinel"
    token = await store.acquire("lock", 5)
    assert token and await store.acquire("lock", 5) is None
    await store.release("lock", token)
    await store.aclose()


async def test_cluster_spreads_keys_and_scans_every_primary(
    redis_cluster: list[RedisProcess],
) -> None:
    members = redis_cluster
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{m.port}" for m in members[:2])
    store = RedisStore.from_url(url, timeout_seconds=1.0)
    items = [(f"cas:fb:eu:ann:{i}", str(i).encode()) for i in range(300)]
    await store.set_many(items, 30)
    assert await store.get_many([k for k, _ in items]) == [v for _, v in items]
    sizes = [m.client().dbsize() for m in members]
    assert all(size > 0 for size in sizes) and sum(sizes) == 300
    await store.set("other", b"x", 30)
    assert await store.delete_matching("cas:fb:eu:ann:") == 300
    assert await store.delete(["other", "absent"]) == 1
    token = await store.acquire("lock", 5)
    assert token and await store.acquire("lock", 5) is None
    await store.release("lock", token)
    assert await store.acquire("lock", 5)
    assert await store.ping()
    await store.aclose()


# --- URL forms, parsed: the client each one builds ---------------------------------------------


def test_redis_url_builds_a_plain_client_with_bounded_sockets() -> None:
    store = RedisStore.from_url("redis://:from-url@127.0.0.1:6390/4", timeout_seconds=0.3)
    kwargs = store.client.connection_pool.connection_kwargs
    assert isinstance(store.client, Redis)
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 4)
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.3
    assert kwargs["password"] == "from-url"
    assert store.describe() == "redis://127.0.0.1:6390/4"
    override = RedisStore.from_url("redis://:from-url@127.0.0.1:6390/4", password="given")
    assert override.client.connection_pool.connection_kwargs["password"] == "given"


def test_rediss_url_builds_a_tls_client(tmp_path: Path) -> None:
    store = RedisStore.from_url("rediss://cache.example.test:6380", ca_file="/etc/ca.pem")
    pool = store.client.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert store.describe() == "rediss://cache.example.test:6380/0"


def test_unix_url_builds_a_socket_client() -> None:
    store = RedisStore.from_url("unix:///run/redis/redis.sock?db=5")
    pool = store.client.connection_pool
    assert pool.connection_class is UnixDomainSocketConnection
    assert pool.connection_kwargs["path"] == "/run/redis/redis.sock"
    assert pool.connection_kwargs["db"] == 5


def test_sentinel_url_builds_a_master_client() -> None:
    store = RedisStore.from_url(
        "redis+sentinel://127.0.0.11:26379,127.0.0.12/cache-eu/2",
        password="data-pw",
        sentinel_password="sentinel-pw",
        timeout_seconds=0.4,
    )
    pool = store.client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "cache-eu"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "data-pw"
    sentinels = pool.sentinel_manager.sentinels
    addresses = [s.connection_pool.connection_kwargs for s in sentinels]
    assert [(a["host"], a["port"]) for a in addresses] == [
        ("127.0.0.11", 26379),
        ("127.0.0.12", 26379),
    ]
    assert all(a["password"] == "sentinel-pw" and a["socket_timeout"] == 0.4 for a in addresses)
    assert store.describe() == "redis+sentinel://127.0.0.11:26379,127.0.0.12:26379/cache-eu/2"


def test_cluster_url_builds_a_cluster_client() -> None:
    store = RedisStore.from_url(
        "rediss+cluster://127.0.0.11:7000,127.0.0.12:7001", ca_file="ca.pem", timeout_seconds=0.4
    )
    client = store.client
    assert isinstance(client, RedisCluster)
    assert [(n.host, n.port) for n in client.startup_nodes] == [
        ("127.0.0.11", 7000),
        ("127.0.0.12", 7001),
    ]
    kwargs = client.connection_kwargs
    assert kwargs["connection_class"] is SSLConnection and kwargs["ssl_ca_certs"] == "ca.pem"
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.4
    assert store.describe() == "rediss+cluster://127.0.0.11:7000,127.0.0.12:7001"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:6379/0/extra",
        "redis://a:1,b:2/0",
        "redis://127.0.0.1?timeout=3",
        "unix://relative.sock",
        "redis+sentinel://127.0.0.1:26379",
        "redis+cluster://127.0.0.1:7000/3",
    ],
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        parse_redis_url(url)


def test_the_parsed_form_hides_the_password() -> None:
    target = parse_redis_url("redis://user:p%40ss@[::1]:6379/1")
    assert (target.username, target.password, target.hosts) == ("user", "p@ss", (("::1", 6379),))
    assert "p@ss" not in repr(target)
    assert target.describe() == "redis://[::1]:6379/1"


async def test_a_message_reaches_every_subscriber_of_the_site(
    store: RedisStore, node_b: RedisStore
) -> None:
    import asyncio

    got: list[str] = []
    ready = asyncio.Event()

    async def follow() -> None:
        stream = node_b.subscribe("cas:test:channel")
        first = asyncio.ensure_future(anext(stream))
        ready.set()
        got.append(await first)
        while got[-1] != "bob@contoso.test":
            got.append(await anext(stream))
        await stream.aclose()

    task = asyncio.create_task(follow())
    await ready.wait()
    for _ in range(100):  # publish until the subscription is in place, then once more
        await store.publish("cas:test:channel", "ann@contoso.test")
        await asyncio.sleep(0.02)
        if got:
            break
    await store.publish("cas:test:channel", "bob@contoso.test")
    await asyncio.wait_for(task, 5)
    assert got[0] == "ann@contoso.test" and got[-1] == "bob@contoso.test"
    assert set(got) == {"ann@contoso.test", "bob@contoso.test"}
