"""The presence hub with a stand-in service (the pure core; the real path is in
tests/integration/test_presence.py): reads per change do not grow with the streams, each
requester gets its own view, resuming replays what was missed, bad ids start fresh, bounds and
draining."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cas.errors import StreamsExhausted
from cas.model.availability import AvailabilityRequest, MailboxResult
from cas.model.busy import BusyType
from cas.model.freebusy import Event, EventDetails, MailboxData
from cas.model.projection import Requester
from cas.presence.hub import PresenceHub
from cas.presence.state import Shape
from cas.presence.streams import Pushed, Subscription
from sitemap.model import Mailbox

NOW = datetime(2030, 1, 7, 9, 10, tzinfo=UTC)
ANN = Mailbox("ann@contoso.test", "eu")
BOB = Mailbox("bob@contoso.test", "eu")
HELPER = Requester("helper", frozenset({"helpdesk"}))
VIEWER = Requester("viewer")


@dataclass
class FakeService:
    """Answers from `calendars`; a requester not in `sees_details` gets times only."""

    calendars: dict[str, tuple[Event, ...]] = field(default_factory=dict)
    sees_details: set[str] = field(default_factory=lambda: {"helper"})
    asks: list[tuple[str | None, tuple[str, ...]]] = field(default_factory=list)

    def ask(self, request: AvailabilityRequest, requester: Requester, **_: Any) -> Requester:
        return requester

    async def availability(
        self, request: AvailabilityRequest, ask: Requester
    ) -> Sequence[MailboxResult]:
        self.asks.append((ask.username, tuple(q.address for q in request.mailboxes)))
        found: list[MailboxResult] = []
        for query in request.mailboxes:
            events = self.calendars.get(query.address, ())
            if ask.username not in self.sees_details:
                events = tuple(Event(e.start, e.end, e.busy_type) for e in events)
                found.append(MailboxData(events=events, times_only=True))
            else:
                found.append(MailboxData(events=events))
        return found


def meeting(subject: str) -> Event:
    details = EventDetails(subject=subject, location="Room 1", is_meeting=True)
    return Event(NOW - timedelta(minutes=10), NOW + timedelta(minutes=50), BusyType.BUSY, details)


def drained(sub: Subscription) -> list[Pushed | None]:
    found = []
    while not sub.queue.empty():
        found.append(sub.queue.get_nowait())
    return found


def states(items: list[Pushed | None]) -> list[tuple[str, str | None]]:
    docs = [json.loads(p.data) for p in items if p is not None and p.event == "presence"]
    return [(d["state"], d.get("subject")) for d in docs]


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
async def hub(service: FakeService):  # type: ignore[no-untyped-def]
    hub = PresenceHub(
        lambda: service,  # type: ignore[arg-type,return-value]
        Shape(slots=8), max_streams=4, reask_seconds=3600, clock=lambda: NOW,
    )  # fmt: skip
    hub.start()
    yield hub
    await hub.aclose()


async def test_streams_of_one_requester_share_one_read_per_change(
    hub: PresenceHub, service: FakeService
) -> None:
    subs = [await hub.subscribe(HELPER, [ANN], None) for _ in range(3)]
    assert service.asks == [("helper", (ANN.address,))]  # the first stream read it; not again
    assert [states(drained(s)) for s in subs] == [[("Available", None)]] * 3
    service.calendars[ANN.address] = (meeting("Planning"),)
    hub.changed(ANN.address)
    hub.changed(ANN.address)  # twice within the coalescing time: read once
    await asyncio.sleep(0.2)
    assert service.asks[1:] == [("helper", (ANN.address,))]
    assert [states(drained(s)) for s in subs] == [[("InAMeeting", "Planning")]] * 3


async def test_each_requester_sees_its_own_level(hub: PresenceHub, service: FakeService) -> None:
    service.calendars[ANN.address] = (meeting("Planning"),)
    helper = await hub.subscribe(HELPER, [ANN], None)
    viewer = await hub.subscribe(VIEWER, [ANN], None)
    assert states(drained(helper)) == [("InAMeeting", "Planning")]
    # times only: no subject, and a meeting cannot be told from an appointment
    assert states(drained(viewer)) == [("Busy", None)]
    assert {who for who, _ in service.asks} == {"helper", "viewer"}


async def test_resuming_replays_what_was_missed_and_bad_ids_start_fresh(
    hub: PresenceHub, service: FakeService
) -> None:
    keeper = await hub.subscribe(HELPER, [ANN, BOB], None)
    (first_ann, first_bob) = [p for p in drained(keeper) if p is not None]
    service.calendars[ANN.address] = (meeting("Planning"),)
    hub.changed(ANN.address)
    await asyncio.sleep(0.2)
    (pushed,) = [p for p in drained(keeper) if p is not None]
    assert pushed.id == f"{hub.epoch}-1" and first_ann.id == first_bob.id == f"{hub.epoch}-0"
    resumed = await hub.subscribe(HELPER, [ANN, BOB], first_ann.id)
    assert [p.id for p in drained(resumed) if p is not None] == [pushed.id]  # only the missed
    for bad in ("garbage", f"{hub.epoch}-99", "00000000-1", f"{hub.epoch}-x", None):
        fresh = await hub.subscribe(HELPER, [ANN], bad)
        assert states(drained(fresh)) == [("InAMeeting", "Planning")], bad
        hub.unsubscribe(fresh)


async def test_the_bound_draining_and_letting_go(hub: PresenceHub) -> None:
    subs = [await hub.subscribe(HELPER, [ANN], None) for _ in range(4)]
    with pytest.raises(StreamsExhausted) as refused:
        await hub.subscribe(VIEWER, [BOB], None)
    assert refused.value.http_status == 503 and "Retry-After" in refused.value.headers
    hub.unsubscribe(subs.pop())
    assert hub.streams == 3 and HELPER.key in hub._groups
    hub.drain()
    await asyncio.sleep(0)
    for sub in subs:
        items = drained(sub)
        assert items[-1] is None  # the stream ends
        hint = items[-2]
        assert hint is not None and hint.event == "draining" and hint.retry_ms == 1000
    with pytest.raises(StreamsExhausted):
        await hub.subscribe(HELPER, [ANN], None)
    for sub in subs:
        hub.unsubscribe(sub)
    assert hub.streams == 0 and hub._groups == {}
