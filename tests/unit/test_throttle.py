"""Throttling: whose bucket a request takes from, what a refusal says, and that it goes on when
the site's store is down. The front doors' answers are in tests/integration/test_throttle.py."""

from __future__ import annotations

import pytest

from cas.cache.store import CacheUnavailable, MemoryStore
from cas.codecs.ews.client import EwsFaultError, parse_get_user_availability_response
from cas.codecs.ews.soap import render_fault
from cas.errors import Throttled
from cas.metrics import Metrics
from cas.model.projection import Proof, Requester
from cas.throttle import Throttle
from tests.unit.cache.test_cached import Broken


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ANN = Requester("ann@contoso.test", frozenset({"sales"}), Proof.LDAP)


def throttle(rate: float = 10.0, burst: int = 20, **kwargs: object) -> tuple[Throttle, Clock]:
    clock = Clock()
    return Throttle(MemoryStore(clock=clock), "eu", rate=rate, burst=burst, **kwargs), clock  # type: ignore[arg-type]


async def test_a_requester_may_take_its_burst_then_waits_for_the_rate() -> None:
    gate, clock = throttle(rate=10.0, burst=20)
    await gate.admit(ANN, 15, address="127.0.0.1", door="ews")
    await gate.admit(ANN, 5, address="127.0.0.1", door="ews")
    with pytest.raises(Throttled) as caught:
        await gate.admit(ANN, 4, address="127.0.0.1", door="ews")
    assert caught.value.back_off_ms == 400  # 4 tokens at 10/s
    assert caught.value.headers == {"Retry-After": "1"}
    assert "10 mailboxes per second" in caught.value.message
    clock.now += 0.4
    await gate.admit(ANN, 4, address="127.0.0.1", door="ews")


async def test_the_bucket_is_the_requester_s_by_name_in_any_case_wherever_it_calls_from() -> None:
    gate, _ = throttle(rate=1.0, burst=3)
    await gate.admit(ANN, 3, address="127.0.0.1", door="ews")
    same = Requester("ANN@Contoso.TEST", proof=Proof.PEER)
    with pytest.raises(Throttled):
        await gate.admit(same, 1, address="127.0.0.9", door="json")
    await gate.admit(Requester("bob@contoso.test"), 3, address="127.0.0.1", door="ews")


async def test_anonymous_callers_are_counted_by_their_address() -> None:
    gate, _ = throttle(rate=1.0, burst=2)
    await gate.admit(Requester(), 2, address="127.0.0.7", door="public")
    with pytest.raises(Throttled):
        await gate.admit(Requester(), 1, address="127.0.0.7", door="public")
    await gate.admit(Requester(), 2, address="127.0.0.8", door="public")
    # a user named like an address does not share the address's bucket
    await gate.admit(Requester("127.0.0.7"), 2, address="127.0.0.7", door="public")


async def test_a_request_larger_than_the_burst_costs_the_whole_burst_and_can_pass() -> None:
    gate, _ = throttle(rate=1.0, burst=50)
    await gate.admit(ANN, 100, address=None, door="ews")
    with pytest.raises(Throttled) as caught:
        await gate.admit(ANN, 1, address=None, door="ews")
    assert caught.value.back_off_ms == 1000


async def test_a_rate_of_zero_turns_throttling_off() -> None:
    gate, _ = throttle(rate=0.0, burst=1)
    for _ in range(100):
        await gate.admit(ANN, 100, address=None, door="ews")
    assert not gate.enabled


async def test_without_the_site_store_each_node_counts_on_its_own() -> None:
    store = Broken()
    with pytest.raises(CacheUnavailable):
        await store.take("k", 1.0, 1)
    gate = Throttle(store, "eu", rate=1.0, burst=2)
    await gate.admit(ANN, 2, address=None, door="ews")
    with pytest.raises(Throttled):
        await gate.admit(ANN, 1, address=None, door="ews")


async def test_refusals_are_counted_by_door_and_keys_hold_no_names() -> None:
    metrics = Metrics()
    gate, _ = throttle(rate=1.0, burst=1, metrics=metrics)
    await gate.admit(ANN, 1, address=None, door="json")
    for _ in range(3):
        with pytest.raises(Throttled):
            await gate.admit(ANN, 1, address=None, door="json")
    assert metrics.registry.get_sample_value("cas_throttled_total", {"endpoint": "json"}) == 3
    key = gate.key(ANN, None)
    assert key.startswith("cas:throttle:eu:") and "ann" not in key


def test_the_ews_fault_carries_back_off_milliseconds_the_forwarder_reads() -> None:
    fault = Throttled("Too many lookups.", 2.5)
    body = render_fault(fault)
    assert b'<t:Value Name="BackOffMilliseconds">2500</t:Value>' in body
    with pytest.raises(EwsFaultError) as caught:
        parse_get_user_availability_response(body, None)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.back_off_ms) == ("ErrorServerBusy", 2500)


class Counting(MemoryStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.takes = 0

    async def take(self, *args: object, **kwargs: object) -> tuple[float, float]:
        self.takes += 1
        return await super().take(*args, **kwargs)  # type: ignore[arg-type]


async def test_a_busy_requester_meets_the_store_once_per_lease() -> None:
    store = Counting(Clock())
    gate = Throttle(store, "eu", rate=100.0, burst=100)
    assert gate.lease == 10  # a tenth of a second of the rate
    for _ in range(22):
        await gate.admit(ANN, 1, address=None, door="ews")
    assert store.takes == 2  # 1 + 10 ahead, twice: 22 lookups
    slow = Throttle(Counting(Clock()), "eu", rate=9.0, burst=100)
    assert slow.lease == 0  # under 10 per second: every request meets the store


async def test_what_nodes_take_ahead_only_moves_tokens_between_them() -> None:
    store = MemoryStore(clock=Clock())  # the clock stands still: no refill
    nodes = [Throttle(store, "eu", rate=100.0, burst=100) for _ in range(3)]
    admitted = 0
    for i in range(300):
        try:
            await nodes[i % 3].admit(ANN, 1 + i % 2, address=None, door="ews")
        except Throttled:
            continue
        admitted += 1 + i % 2
    assert admitted == 100  # the burst exactly, spread over three nodes
