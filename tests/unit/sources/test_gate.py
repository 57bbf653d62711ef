"""The gate in front of a backend: a burst of reads never has more than `limit` at the backend,
the rest wait their turn, and metrics show the limit and the counts as they are."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cas.metrics import Metrics
from cas.model.ask import Ask
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import MailboxData, Window
from cas.model.projection import Requester
from cas.sources.base import ReaderSource
from cas.sources.gate import Gate
from sitemap.model import Mailbox

T0 = datetime(2024, 3, 4, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(days=1))


class SlowBackend:
    """Counts how many reads run at once; each waits until the test opens `release`."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            return MailboxData()
        finally:
            self.running -= 1

    async def aclose(self) -> None:
        return None


def ask_for(mailboxes: list[Mailbox]) -> Ask:
    request = AvailabilityRequest(
        tuple(MailboxQuery(m.address) for m in mailboxes), WINDOW, 60, FreeBusyView.FREE_BUSY, UTC
    )
    return Ask.of(request, Requester("ann@contoso.test"), timeout_seconds=10)


async def test_a_burst_of_requests_never_has_more_than_the_limit_at_the_backend() -> None:
    backend = SlowBackend()
    source = ReaderSource(backend, name="caldav", site="eu", concurrency=3)
    metrics = Metrics()
    metrics.watch_gate(source.gate)
    boxes = [Mailbox(f"u{i}@contoso.test", "eu") for i in range(10)]
    # two requests at once, 5 mailboxes each: 10 reads wanted, 3 allowed
    calls = [asyncio.create_task(source.fetch(boxes[i : i + 5], ask_for(boxes))) for i in (0, 5)]
    for _ in range(100):
        await asyncio.sleep(0)
        if source.gate.waiting == 7:
            break
    assert (source.gate.in_flight, source.gate.waiting) == (3, 7)
    sample = metrics.registry.get_sample_value
    assert sample("cas_source_limit", {"source": "caldav"}) == 3
    assert sample("cas_source_in_flight", {"source": "caldav"}) == 3
    assert sample("cas_source_waiting", {"source": "caldav"}) == 7
    backend.release.set()
    answers = await asyncio.gather(*calls)
    assert sum(len(a) for a in answers) == 10 and backend.most == 3
    assert (source.gate.in_flight, source.gate.waiting) == (0, 0)
    assert sample("cas_source_in_flight", {"source": "caldav"}) == 0


async def test_a_call_cancelled_while_waiting_leaves_the_counts_right() -> None:
    gate = Gate(1, "oldserver")
    async with gate:
        waiter = asyncio.create_task(gate.__aenter__())
        await asyncio.sleep(0)
        assert gate.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (gate.in_flight, gate.waiting) == (1, 0)
    assert gate.in_flight == 0
    with pytest.raises(ValueError):
        Gate(0, "x")


def test_the_limits_are_the_settings() -> None:
    from cas.settings import load_settings
    from cas.sources.registry import local_sources
    from sitemap.model import CalDavBackendConfig, LegacyServerConfig, Site

    site = Site(
        "eu",
        caldav=CalDavBackendConfig("http://127.0.0.1:5232/"),
        legacy=LegacyServerConfig("http://127.0.0.1:8080/public/"),
    )
    settings = load_settings({"backend_concurrency": 7, "oldserver_concurrency": 2}, environ={})
    sources = local_sources(site, settings)
    limits = {kind: getattr(source, "gate").limit for kind, source in sources.items()}  # noqa: B009
    assert limits == {"modern": 7, "legacy": 2}
