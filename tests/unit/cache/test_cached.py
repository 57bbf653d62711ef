"""The Calendar Connector's rules, with a controllable clock and a scripted backend.

The cache wraps a source of one day-piece site cache (`DayPieces`) around a scripted reader;
`Cached` asks it about one mailbox at a time and turns a per-mailbox error back into the
exception the reader raised, so each test reads as the rule it checks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cas.cache.cached import CachedSource, CachePolicy
from cas.cache.keys import DayPieces
from cas.cache.store import CacheStore, CacheUnavailable, MemoryStore
from cas.errors import BackendFailure, CalendarNotFound, MailboxError
from cas.model.ask import Ask
from cas.model.availability import FreeBusyView
from cas.model.freebusy import BusyType, Event, MailboxData, Window
from cas.model.projection import Requester
from cas.sources.base import ReaderSource
from sitemap.model import Mailbox

UTC = UTC
T0 = datetime(2024, 3, 4, tzinfo=UTC)
ANN = Mailbox("ann@contoso.test", "eu")
DAY = Window(T0 + timedelta(hours=8), T0 + timedelta(hours=18))
POLICY = CachePolicy(
    refresh_seconds=900,
    query_window_seconds=0.1,
    max_stale_seconds=3600,
    negative_ttl_seconds=60,
    fetch_timeout_seconds=5,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A backend whose answers, delays and failures the test sets; it counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.ctag_calls = 0
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # when set, a fetch waits until the gate opens
        self.fail: Exception | None = None
        self.tag: str | None = None
        self.busy_hour = 9

    async def fetch(self, mailbox, window):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        start = T0 + timedelta(hours=self.busy_hour)
        events = tuple(
            e
            for e in [Event(start, start + timedelta(hours=1), BusyType.BUSY)]
            if window.overlaps(e.start, e.end)
        )
        return MailboxData(events=events)

    async def aclose(self) -> None:
        return None


class Tagged(Scripted):
    async def ctag(self, mailbox):
        self.ctag_calls += 1
        return self.tag


class Cached:
    """The cache around `inner`, asked about one mailbox at a time."""

    def __init__(self, inner, store, clock, policy) -> None:
        self.inner = inner
        source = ReaderSource(inner, name="caldav", site="eu", concurrency=8)
        self.source = CachedSource(source, store, DayPieces("eu"), policy, clock=clock)

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        ask = Ask(
            window, 60, FreeBusyView.FREE_BUSY, UTC, Requester("t"), time.monotonic() + 30, 30
        )
        result = (await self.source.fetch([mailbox], ask))[mailbox.address.casefold()]
        if isinstance(result, MailboxError):
            raise (CalendarNotFound if result.missing else BackendFailure)(result.message)
        return result

    async def invalidate(self, mailbox: Mailbox) -> int:
        return await self.source.forget(mailbox)

    async def aclose(self) -> None:
        await self.source.aclose()


def cached(inner=None, store=None, clock=None, policy=POLICY):
    clock = clock or Clock()
    store = store if store is not None else MemoryStore(clock=clock)
    return Cached(inner or Scripted(), store, clock, policy), clock


def busy_hours(data: MailboxData) -> list[int]:
    return [e.start.hour for e in data.events]


async def test_within_the_refresh_interval_the_backend_is_not_asked() -> None:
    backend, clock = cached()
    first = await backend.fetch(ANN, DAY)
    clock.now += 899
    second = await backend.fetch(ANN, Window(DAY.start, DAY.start + timedelta(hours=3)))
    assert backend.inner.calls == 1
    assert (first.freshness.source, second.freshness.source) == ("backend", "cache")
    assert second.freshness.age_seconds == pytest.approx(899)
    assert busy_hours(second) == [9]


async def test_past_the_refresh_interval_the_backend_is_asked_again() -> None:
    backend, clock = cached()
    await backend.fetch(ANN, DAY)
    backend.inner.busy_hour = 11
    clock.now += 901
    again = await backend.fetch(ANN, DAY)
    assert backend.inner.calls == 2 and again.freshness.source == "backend"
    assert busy_hours(again) == [11]


class WriteSignal(MemoryStore):
    """A MemoryStore that sets `written` whenever something was stored."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.written = asyncio.Event()

    async def set_many(self, items, ttl_seconds) -> None:  # type: ignore[no-untyped-def]
        await super().set_many(items, ttl_seconds)
        self.written.set()


async def test_a_slow_backend_gets_stale_data_served_and_its_late_answer_is_kept() -> None:
    clock = Clock()
    store = WriteSignal(clock=clock)
    backend, _ = cached(store=store, clock=clock)
    await backend.fetch(ANN, DAY)
    clock.now += 1000
    backend.inner.gate, backend.inner.busy_hour = asyncio.Event(), 14
    store.written.clear()
    stale = await backend.fetch(ANN, DAY)  # the backend is asked, and cannot answer yet
    assert backend.inner.calls == 2 and not store.written.is_set()
    assert stale.freshness.source == "stale-cache" and stale.freshness.age_seconds == pytest.approx(
        1000
    )
    assert busy_hours(stale) == [9]
    backend.inner.gate.set()  # the late answer comes, and is stored
    await asyncio.wait_for(store.written.wait(), 10)
    fresh = await backend.fetch(ANN, DAY)
    assert fresh.freshness.source == "cache" and busy_hours(fresh) == [14]
    assert backend.inner.calls == 2


async def test_a_failing_backend_gets_stale_data_served_but_never_invented() -> None:
    backend, clock = cached()
    backend.inner.fail = BackendFailure("down")
    with pytest.raises(BackendFailure):
        await backend.fetch(ANN, DAY)  # nothing cached: the failure stands
    backend.inner.fail = None
    await backend.fetch(ANN, DAY)
    clock.now += 1000
    backend.inner.fail = BackendFailure("down")
    assert (await backend.fetch(ANN, DAY)).freshness.source == "stale-cache"
    clock.now += 3600  # past the maximum age: no longer served
    with pytest.raises(BackendFailure):
        await backend.fetch(ANN, DAY)


async def test_concurrent_misses_make_one_backend_call_in_one_node() -> None:
    backend, _ = cached()
    backend.inner.delay = 0.05
    answers = await asyncio.gather(*(backend.fetch(ANN, DAY) for _ in range(25)))
    assert backend.inner.calls == 1
    assert all(busy_hours(a) == [9] for a in answers)


async def test_concurrent_misses_make_one_backend_call_across_nodes_of_a_site() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    inner = Scripted()
    inner.delay = 0.05
    nodes = [Cached(inner, store, clock, POLICY) for _ in range(3)]
    answers = await asyncio.gather(*(nodes[i % 3].fetch(ANN, DAY) for i in range(30)))
    assert inner.calls == 1
    assert all(busy_hours(a) == [9] for a in answers)


async def test_a_missing_calendar_is_remembered_for_a_short_time() -> None:
    backend, clock = cached()
    backend.inner.fail = CalendarNotFound("404")
    for _ in range(3):
        with pytest.raises(CalendarNotFound):
            await backend.fetch(ANN, DAY)
    assert backend.inner.calls == 1
    clock.now += 61
    with pytest.raises(CalendarNotFound):
        await backend.fetch(ANN, DAY)
    assert backend.inner.calls == 2


async def test_an_unchanged_calendar_costs_one_tag_request_not_a_reread() -> None:
    inner = Tagged()
    inner.tag = "v1"
    backend, clock = cached(inner)
    await backend.fetch(ANN, DAY)  # cold: no tag needed yet
    clock.now += 1000
    await backend.fetch(ANN, DAY)  # stale, untagged: read again, with the tag
    assert (inner.calls, inner.ctag_calls) == (2, 1)
    clock.now += 1000
    again = await backend.fetch(ANN, DAY)
    assert (inner.calls, inner.ctag_calls) == (2, 2)
    assert again.freshness.source == "revalidated" and again.freshness.validated_seconds == 0
    assert again.freshness.age_seconds == pytest.approx(1000)  # the data was read then
    clock.now += 1000
    inner.tag, inner.busy_hour = "v2", 16  # an event was written
    changed = await backend.fetch(ANN, DAY)
    assert inner.calls == 3 and busy_hours(changed) == [16]


async def test_invalidation_drops_every_cached_day() -> None:
    backend, _ = cached()
    await backend.fetch(ANN, Window(T0, T0 + timedelta(days=3)))
    backend.inner.busy_hour = 10
    assert await backend.invalidate(ANN) >= 3
    assert busy_hours(await backend.fetch(ANN, DAY)) == [10]
    assert backend.inner.calls == 2


class Broken(CacheStore):
    """A store that is never there: every call fails as a down Redis would."""

    async def get_many(self, keys):
        raise CacheUnavailable("down")

    async def set_many(self, items, ttl_seconds):
        raise CacheUnavailable("down")

    async def delete(self, keys):
        raise CacheUnavailable("down")

    async def delete_matching(self, prefix):
        raise CacheUnavailable("down")

    async def acquire(self, key, ttl_seconds):
        raise CacheUnavailable("down")

    async def release(self, key, token):
        raise CacheUnavailable("down")

    async def wait_for(self, key, timeout):
        raise CacheUnavailable("down")

    async def publish(self, channel, message):
        raise CacheUnavailable("down")

    async def subscribe(self, channel):
        raise CacheUnavailable("down")
        yield ""  # an async generator that fails at once

    async def take(self, key, rate, burst, cost=1.0, *, spare=0.0):
        raise CacheUnavailable("down")

    async def ping(self):
        return False

    async def aclose(self):
        return None

    def describe(self):
        return "broken"


async def test_without_a_store_every_lookup_goes_to_the_backend() -> None:
    no_local = replace(POLICY, local_seconds=0)
    backend, _ = cached(store=Broken(), policy=no_local)
    for _ in range(3):
        data = await backend.fetch(ANN, DAY)
        assert data.freshness.source == "backend" and busy_hours(data) == [9]
    assert backend.inner.calls == 3


async def test_the_node_s_own_short_lived_copy_still_serves_while_the_store_is_down() -> None:
    backend, _ = cached(store=Broken())  # local_seconds 1.0 by default
    await backend.fetch(ANN, DAY)
    again = await backend.fetch(ANN, DAY)
    assert backend.inner.calls == 1 and again.freshness.source == "cache"
