"""A source behind its breaker: counted by mailbox, slow batches counted as failures, nobody
waiting for a backend known to be failing, stale data served from the cache around it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from cas.breaker_board import BreakerBoard, BreakerPolicy
from cas.cache.cached import CachedSource, CachePolicy
from cas.cache.keys import DayPieces
from cas.cache.store import MemoryStore
from cas.errors import BackendFailure, MailboxError
from cas.model.ask import Ask
from cas.model.availability import FreeBusyView
from cas.model.freebusy import BusyType, Event, MailboxData, Window
from cas.model.projection import Requester
from cas.sources.base import ReaderSource
from cas.sources.guarded import GuardedSource
from sitemap.model import Mailbox

T0 = datetime(2024, 3, 4, tzinfo=UTC)
DAY = Window(T0 + timedelta(hours=8), T0 + timedelta(hours=18))
BOXES = [Mailbox(f"u{i}@contoso.test", "eu") for i in range(4)]


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """A reader whose mailboxes answer, fail, or hang until released; it counts its reads."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing: set[str] = set()
        self.hang: asyncio.Event | None = None
        self.cancelled = 0
        self.busy_hour = 9

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        self.calls += 1
        if self.hang is not None:
            try:
                await self.hang.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if mailbox.address in self.failing or "*" in self.failing:
            raise BackendFailure(
                f"cannot connect to CalDAV server at http://127.0.0.1:1/ ({mailbox.address})"
            )
        start = T0 + timedelta(hours=self.busy_hour)
        return MailboxData(events=(Event(start, start + timedelta(hours=1), BusyType.BUSY),))

    async def aclose(self) -> None:
        return None


def ask(seconds: float = 5.0) -> Ask:
    return Ask(
        DAY, 60, FreeBusyView.FREE_BUSY, UTC, Requester("t"), time.monotonic() + seconds, seconds
    )


def guarded(
    backend: Backend, *, failures: int = 3, slow: float = 5.0, clock: Clock | None = None
) -> GuardedSource:
    board = BreakerBoard(
        BreakerPolicy(failures=failures, open_seconds=30.0, max_open_seconds=60.0),
        clock=clock or Clock(),
    )
    breaker = board.breaker("caldav", "eu", "CalDAV backend of site eu")
    source = ReaderSource(backend, name="caldav", site="eu", concurrency=8)
    return GuardedSource(source, breaker, slow_seconds=slow)


async def test_a_failing_backend_is_not_asked_once_its_breaker_opens() -> None:
    backend = Backend()
    backend.failing = {"*"}
    source = guarded(backend, failures=4)
    first = await source.fetch(BOXES[:2], ask())
    assert source.breaker.state == "closed"  # two mailboxes failed: two of four
    assert "Site 'eu', CalDAV backend: cannot connect" in first["u0@contoso.test"].message
    await source.fetch(BOXES[2:], ask())
    assert source.breaker.state == "open"
    calls = backend.calls
    answers = await source.fetch(BOXES, ask())
    assert backend.calls == calls  # answered without asking
    for error in answers.values():
        assert isinstance(error, MailboxError)
        assert error.code == "ErrorFreeBusyGenerationFailed" and error.site == "eu"
        # plain, for the client: who failed, no URL; why is the breaker's (and its log's)
        assert error.plain
        assert error.message.endswith(
            "Site 'eu', CalDAV backend: not asked, it is failing; it is tried again in 30s."
        )
    assert source.breaker.last_failure == (
        "cannot connect to CalDAV server at http://127.0.0.1:1/ (u3@contoso.test)"
    )


async def test_one_working_mailbox_in_a_batch_means_the_backend_works() -> None:
    backend = Backend()
    backend.failing = {"u0@contoso.test", "u1@contoso.test", "u2@contoso.test"}
    source = guarded(backend, failures=3)
    for _ in range(3):
        answers = await source.fetch(BOXES, ask())
        assert isinstance(answers["u3@contoso.test"], MailboxData)
    assert source.breaker.state == "closed"


async def test_waiting_batches_are_answered_as_soon_as_the_breaker_opens() -> None:
    backend = Backend()
    backend.hang = asyncio.Event()  # never set: the backend is stuck
    source = guarded(backend, failures=2, slow=0.05)
    late = ask(30.0)
    first = asyncio.create_task(source.fetch(BOXES[:1], late))
    await asyncio.sleep(0.2)  # past slow_seconds: one failure, still waiting for its answer
    assert not first.done() and source.breaker.state == "closed"
    second = asyncio.create_task(source.fetch(BOXES[1:2], late))
    answers = await asyncio.wait_for(asyncio.gather(first, second), 10)
    await asyncio.sleep(0.01)  # the cancelled reads run their cancellation
    assert source.breaker.state == "open"
    for got in answers:
        (error,) = got.values()
        # the breaker's answer, not the deadline's ("no answer within 30s")
        assert isinstance(error, MailboxError) and "not asked, it is failing" in error.message
    assert source.breaker.last_failure == "no answer within 0.05s"
    assert backend.cancelled == 2  # the reads are not left behind


async def test_one_probe_after_the_open_time_closes_it_when_the_backend_is_back() -> None:
    clock = Clock()
    backend = Backend()
    backend.failing = {"*"}
    source = guarded(backend, failures=2, clock=clock)
    await source.fetch(BOXES[:2], ask())
    assert source.breaker.state == "open"
    backend.failing = set()
    clock.now += 29
    assert all(isinstance(r, MailboxError) for r in (await source.fetch(BOXES, ask())).values())
    clock.now += 1
    calls = backend.calls
    answers = await source.fetch(BOXES[:1], ask())  # the probe
    assert isinstance(answers["u0@contoso.test"], MailboxData) and backend.calls == calls + 1
    assert source.breaker.state == "closed"


async def test_a_probe_that_hangs_reopens_at_slow_seconds() -> None:
    clock = Clock()
    backend = Backend()
    backend.failing = {"*"}
    source = guarded(backend, failures=1, slow=0.05, clock=clock)
    await source.fetch(BOXES[:1], ask())
    clock.now += 30
    backend.hang = asyncio.Event()
    (error,) = (await asyncio.wait_for(source.fetch(BOXES[:1], ask(30.0)), 10)).values()
    assert isinstance(error, MailboxError) and "not asked" in error.message
    assert source.breaker.state == "open" and source.breaker.opens == 2


async def test_a_cancelled_probe_frees_the_probe_slot() -> None:
    clock = Clock()
    backend = Backend()
    backend.failing = {"*"}
    source = guarded(backend, failures=1, clock=clock)
    await source.fetch(BOXES[:1], ask())
    clock.now += 30
    backend.hang = asyncio.Event()
    probe = asyncio.create_task(source.fetch(BOXES[:1], ask()))
    await asyncio.sleep(0.05)
    assert not source.breaker.available
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert source.breaker.state == "half-open" and source.breaker.available
    assert backend.cancelled == 1


async def test_behind_the_cache_an_open_breaker_serves_stale_data_at_once() -> None:
    clock = Clock()
    backend = Backend()
    source = guarded(backend, failures=2)
    policy = CachePolicy(refresh_seconds=60, query_window_seconds=5, fetch_timeout_seconds=30)
    cache = CachedSource(source, MemoryStore(clock=clock), DayPieces("eu"), policy, clock=clock)
    warm = await cache.fetch(BOXES[:1], ask())
    assert isinstance(warm["u0@contoso.test"], MailboxData)
    backend.failing = {"*"}
    await cache.fetch(BOXES[1:3], ask())  # two uncached mailboxes fail: the breaker opens
    assert source.breaker.state == "open"
    clock.now += 120  # past the refresh interval: the backend would be asked
    calls = backend.calls
    answers = await cache.fetch(BOXES[:2], ask())
    assert backend.calls == calls
    stale = answers["u0@contoso.test"]
    assert isinstance(stale, MailboxData) and stale.freshness is not None
    assert stale.freshness.source == "stale-cache"
    assert [e.start.hour for e in stale.events] == [9]  # the cached data, never invented
    unknown = answers["u1@contoso.test"]
    assert isinstance(unknown, MailboxError) and "not asked" in unknown.message
    await cache.aclose()


async def test_change_tags_are_not_asked_of_an_open_backend() -> None:
    class Tagged(Backend):
        async def ctag(self, mailbox: Mailbox) -> str:
            self.calls += 1
            return "t1"

    backend = Tagged()
    source = guarded(backend, failures=1)
    assert await source.versions(BOXES[:1], ask()) == {"u0@contoso.test": "t1"}
    source.breaker.allow()
    source.breaker.record_failure("down")
    calls = backend.calls
    assert await source.versions(BOXES[:1], ask()) == {"u0@contoso.test": None}
    assert backend.calls == calls


class Tagged(Backend):
    """A reader that knows change tags and which mailbox a changed path is (as CalDAV does)."""

    def version_of(self, mailbox: Mailbox) -> str:
        return "v1"

    def mailbox_for(self, path: str, mailboxes: list[Mailbox]) -> Mailbox | None:
        return next((m for m in mailboxes if path.startswith(f"/{m.address}/")), None)


def test_what_the_cache_asks_of_a_source_is_passed_through_the_breaker() -> None:
    plain, tagged = guarded(Backend()), guarded(Tagged())
    assert tagged.reads_versions and not plain.reads_versions
    # the owner of a path a storage hook reports (no backend call, so not refused when open)
    tagged.breaker.record_failure("down", weight=10)
    assert tagged.breaker.state == "open"
    assert tagged.mailbox_for("/u2@contoso.test/calendar/x.ics", BOXES) == BOXES[2]
    assert plain.mailbox_for("/u2@contoso.test/calendar/x.ics", BOXES) is None
