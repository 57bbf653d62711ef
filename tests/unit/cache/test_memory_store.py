"""MemoryStore: the in-process store keeps the same rules as Redis (TTL, locks, waiting)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas.cache.store import CacheStore, CacheUnavailable, MemoryStore, open_store, ttl_millis


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(max_entries=100, clock=clock)


async def test_get_returns_what_was_set_until_the_ttl_ends(
    store: MemoryStore, clock: FakeClock
) -> None:
    await store.set("k", b"v", 10)
    assert await store.get("k") == b"v"
    clock.now += 9.999
    assert await store.get("k") == b"v"
    clock.now += 0.001
    assert await store.get("k") is None
    assert len(store) == 0  # expired entries are dropped when seen


async def test_set_many_and_get_many_keep_order_and_report_misses(store: MemoryStore) -> None:
    await store.set_many([("a", b"1"), ("b", b"2")], 5)
    assert await store.get_many(["b", "x", "a"]) == [b"2", None, b"1"]
    assert await store.get_many([]) == []


async def test_set_replaces_value_and_ttl(store: MemoryStore, clock: FakeClock) -> None:
    await store.set("k", b"old", 1)
    await store.set("k", b"new", 100)
    clock.now += 50
    assert await store.get("k") == b"new"


async def test_delete_counts_live_keys_only(store: MemoryStore, clock: FakeClock) -> None:
    await store.set("live", b"1", 10)
    await store.set("dead", b"1", 1)
    clock.now += 2
    assert await store.delete(["live", "dead", "never"]) == 1
    assert await store.get("live") is None


async def test_delete_matching_removes_a_prefix_only(store: MemoryStore) -> None:
    await store.set_many([("cas:a:1", b""), ("cas:a:2", b""), ("cas:ab", b""), ("cas:b", b"")], 5)
    assert await store.delete_matching("cas:a:") == 2
    assert await store.get_many(["cas:a:1", "cas:ab", "cas:b"]) == [None, b"", b""]
    assert await store.delete_matching("") == 2


async def test_lock_is_exclusive_until_its_ttl(store: MemoryStore, clock: FakeClock) -> None:
    token = await store.acquire("lock", 3)
    assert token
    assert await store.acquire("lock", 3) is None
    clock.now += 3
    other = await store.acquire("lock", 3)
    assert other and other != token


async def test_release_needs_the_holders_token(store: MemoryStore) -> None:
    token = await store.acquire("lock", 30)
    assert token
    await store.release("lock", "not-the-token")
    assert await store.acquire("lock", 30) is None
    await store.release("lock", token)
    assert await store.acquire("lock", 30) is not None


async def test_release_after_expiry_does_not_free_the_next_holder(
    store: MemoryStore, clock: FakeClock
) -> None:
    first = await store.acquire("lock", 1)
    clock.now += 1
    second = await store.acquire("lock", 1)
    assert first and second
    await store.release("lock", first)
    assert await store.acquire("lock", 1) is None


async def test_wait_for_wakes_when_the_key_is_set(store: MemoryStore) -> None:
    waiters = [asyncio.create_task(store.wait_for("done", 5)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    await store.set("done", b"yes", 10)
    for _ in range(10):  # woken by the write itself: a few event-loop turns, no clock time
        await asyncio.sleep(0)
    assert all(w.done() for w in waiters)
    assert await asyncio.gather(*waiters) == [b"yes"] * 3
    assert not store._events and not store._waiting  # nothing left behind


async def test_wait_for_returns_at_once_when_the_key_exists(store: MemoryStore) -> None:
    await store.set("done", b"1", 10)
    assert await store.wait_for("done", 0) == b"1"
    assert await store.wait_for("missing", 0) is None


async def test_wait_for_gives_up_after_timeout(store: MemoryStore) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.wait_for("never", 0.05) is None
    assert 0.04 < loop.time() - started < 0.5
    assert not store._events and not store._waiting


async def test_size_is_bounded_and_recently_used_entries_stay(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=3, clock=clock)
    await store.set_many([("a", b"a"), ("b", b"b"), ("c", b"c")], 60)
    assert await store.get("a") == b"a"  # a is now the most recently used
    await store.set("d", b"d", 60)
    assert len(store) == 3
    assert await store.get_many(["a", "b", "c", "d"]) == [b"a", None, b"c", b"d"]


@given(st.lists(st.sampled_from("abcdefgh"), max_size=40))
def test_bound_holds_and_the_last_written_keys_survive(keys: list[str]) -> None:
    store = MemoryStore(max_entries=4, clock=lambda: 0.0)
    for key in keys:
        store._store(key, key.encode(), 60)
    assert len(store) <= 4
    recent = list(dict.fromkeys(reversed(keys)))[:4]
    assert all(store._lookup(k) == k.encode() for k in recent)


async def test_a_closed_store_is_unavailable(store: MemoryStore) -> None:
    waiter = asyncio.create_task(store.wait_for("k", 5))
    await asyncio.sleep(0)
    await store.aclose()
    with pytest.raises(CacheUnavailable):
        await waiter
    assert not await store.ping()
    for call in (
        store.get("k"),
        store.get_many(["k"]),
        store.set("k", b"", 1),
        store.delete(["k"]),
        store.delete_matching("k"),
        store.acquire("k", 1),
        store.release("k", "t"),
        store.wait_for("k", 1),
    ):
        with pytest.raises(CacheUnavailable):
            await call


async def test_describe_and_ping(store: MemoryStore) -> None:
    assert store.describe() == "in-process"
    assert await store.ping()
    assert isinstance(store, CacheStore)


@pytest.mark.parametrize(
    ("seconds", "millis"),
    [(1, 1000), (0.3, 300), (0.0001, 1), (0, 1), (-5, 1), (float("nan"), 1), (1.0004, 1001)],
)
def test_ttls_round_up_to_milliseconds_and_never_mean_forever(seconds: float, millis: int) -> None:
    assert ttl_millis(seconds) == millis


def test_no_url_means_in_process_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cas.cache.store"):
        store = open_store(None)
    assert isinstance(store, MemoryStore)
    assert "in-process" in caplog.text


async def test_published_messages_reach_current_subscribers_only() -> None:
    import asyncio

    store = MemoryStore()
    await store.publish("c", "before anyone listens")
    stream = store.subscribe("c")
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    await store.publish("c", "ann")
    await store.publish("other", "not for us")
    await store.publish("c", "bob")
    assert await waiting == "ann" and await anext(stream) == "bob"
    await stream.aclose()


# --- token buckets ------------------------------------------------------------------------------


async def test_a_new_bucket_is_full_and_empties_by_what_is_taken(
    store: MemoryStore, clock: FakeClock
) -> None:
    # rate 2/s, size 5: five single tokens at once, the sixth must wait half a second
    assert [await store.take("b", 2.0, 5) for _ in range(5)] == [(1.0, 0.0)] * 5
    assert await store.take("b", 2.0, 5) == (0.0, pytest.approx(0.5))
    clock.now += 0.25  # half a token back: still 0.25 s short of one
    assert await store.take("b", 2.0, 5) == (0.0, pytest.approx(0.25))
    clock.now += 0.25
    assert await store.take("b", 2.0, 5) == (1.0, 0.0)


async def test_a_refused_take_takes_nothing_and_a_bucket_never_overfills(
    store: MemoryStore, clock: FakeClock
) -> None:
    assert await store.take("b", 1.0, 10, cost=8) == (8.0, 0.0)  # 2 left
    assert await store.take("b", 1.0, 10, cost=5) == (0.0, pytest.approx(3.0))  # 3 short: 3 s
    assert await store.take("b", 1.0, 10, cost=2) == (2.0, 0.0)  # the 2 were still there
    clock.now += 3600
    assert await store.take("b", 1.0, 10, cost=10) == (10.0, 0.0)  # full again, not 3600
    assert await store.take("b", 1.0, 10, cost=1) == (0.0, pytest.approx(1.0))


async def test_spare_tokens_are_taken_only_when_they_are_there(store: MemoryStore) -> None:
    assert await store.take("b", 1.0, 10, cost=3, spare=4) == (7.0, 0.0)  # 3 left
    assert await store.take("b", 1.0, 10, cost=2, spare=4) == (3.0, 0.0)  # only 1 spare there
    assert await store.take("b", 1.0, 10, cost=1, spare=4) == (0.0, pytest.approx(1.0))


async def test_buckets_are_separate_and_forgotten_once_full_again(
    store: MemoryStore, clock: FakeClock
) -> None:
    await store.take("a", 1.0, 2, cost=2)
    assert await store.take("c", 1.0, 2, cost=2) == (2.0, 0.0)
    assert len(store) == 2
    clock.now += 3.01  # 2 s to refill, plus the margin: both gone, as good as full
    assert await store.get("a") is None
    assert await store.take("a", 1.0, 2, cost=2) == (2.0, 0.0)


async def test_take_refuses_a_bucket_without_rate_or_size(store: MemoryStore) -> None:
    with pytest.raises(ValueError):
        await store.take("b", 0.0, 5)
    with pytest.raises(ValueError):
        await store.take("b", 1.0, 0)


async def test_take_on_a_closed_store_is_unavailable(store: MemoryStore) -> None:
    await store.aclose()
    with pytest.raises(CacheUnavailable):
        await store.take("b", 1.0, 5)
