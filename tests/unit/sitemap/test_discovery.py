"""SRV discovery against a real DNS responder on loopback, queried by dnspython.

Records change while a test runs, to show ordering, TTL refresh and the last good answer kept
when DNS fails.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from caslab.dnsserver import DnsResponder
from sitemap.discovery import DiscoveryError, NodeAddress, SiteNodes, SrvResolver, srv_order
from sitemap.load import parse_sitemap
from sitemap.model import DnsConfig
from sitemap.replica import Candidate
from tests.unit.sitemap.conftest import FakeClock

SRV = "_cas._tcp.eu.contoso.test"
N1, N2, N3 = "node1.eu.contoso.test", "node2.eu.contoso.test", "node3.eu.contoso.test"
TIMEOUT = 0.3  # seconds: failures are tested fast


def resolver_for(
    server: DnsResponder, clock: FakeClock, *, seed: int = 7, retry_seconds: float = 5.0
) -> SrvResolver:
    config = DnsConfig(nameservers=("127.0.0.1",), port=server.port, timeout_seconds=TIMEOUT)
    return SrvResolver(config, rng=random.Random(seed), clock=clock, retry_seconds=retry_seconds)


def srv_queries(server: DnsResponder) -> int:
    return sum(1 for _, rdtype in server.queries if rdtype == "SRV")


def urls(nodes: list[NodeAddress]) -> list[str]:
    return [n.url for n in nodes]


# --- answers ---------------------------------------------------------------------------------


async def test_records_come_lowest_priority_first_with_their_addresses(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(10, 0, 8001, N1), (20, 0, 8003, N3), (0, 5, 8002, N2)], ttl=60)
    responder.set_a(N1, ["127.0.0.1"], ttl=60)
    responder.set_a(N2, ["127.0.0.3", "127.0.0.2"], ttl=60)
    responder.set_aaaa(N3, ["::1"], ttl=60)
    nodes = await resolver_for(responder, clock).resolve(SRV)
    assert urls(nodes) == [
        "https://127.0.0.2:8002",
        "https://127.0.0.3:8002",
        "https://127.0.0.1:8001",
        "https://[::1]:8003",
    ]
    assert [n.priority for n in nodes] == [0, 0, 10, 20]
    assert nodes[0] == NodeAddress(
        url="https://127.0.0.2:8002", priority=0, weight=5, port=8002, target=N2, ttl=60,
        address="127.0.0.2",
    )  # fmt: skip


async def test_ipv4_then_ipv6_and_the_site_scheme(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 0, 9000, N1)])
    responder.set_a(N1, ["127.0.0.1"])
    responder.set_aaaa(N1, ["::1"])
    nodes = await resolver_for(responder, clock).resolve(SRV, scheme="http")
    assert urls(nodes) == ["http://127.0.0.1:9000", "http://[::1]:9000"]
    assert {n.target for n in nodes} == {N1}


async def test_a_target_without_addresses_is_named_in_the_url(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 0, 9000, "localhost")])
    [node] = await resolver_for(responder, clock).resolve(SRV)
    assert (node.url, node.address) == ("https://localhost:9000", None)


async def test_a_dot_target_means_no_service(responder: DnsResponder, clock: FakeClock) -> None:
    responder.set_srv(SRV, [(0, 0, 0, ".")])
    assert await resolver_for(responder, clock).resolve(SRV) == []


async def test_many_records_arrive_over_tcp_after_truncation(
    responder: DnsResponder, clock: FakeClock
) -> None:
    records = [(0, 1, 9000 + i, f"n{i:02d}.eu.contoso.test") for i in range(40)]
    responder.set_srv(SRV, records)
    for _, _, _, target in records:
        responder.set_a(target, ["127.0.0.1"])
    nodes = await resolver_for(responder, clock).resolve(SRV)
    assert sorted(n.port for n in nodes) == list(range(9000, 9040))


# --- weighted order (RFC 2782) ---------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    name: str
    priority: int
    weight: int


class ScriptedRandom(random.Random):
    """Leaves the arrangement alone and draws scripted numbers, noting each range asked for."""

    def __init__(self, draws: list[int]) -> None:
        super().__init__(0)
        self.draws = list(draws)
        self.ranges: list[tuple[int, int]] = []

    def shuffle(self, x: list[object]) -> None:  # type: ignore[override]
        pass

    def randint(self, a: int, b: int) -> int:
        self.ranges.append((a, b))
        return self.draws.pop(0)


def test_weighted_order_traced_by_hand() -> None:
    a, b, c, z = Rec("a", 0, 30), Rec("b", 0, 10), Rec("c", 0, 0), Rec("z", 1, 5)
    rng = ScriptedRandom([35, 0, 12, 3])
    # priority 0, arranged weight-0 first: [c(0), a(30), b(40)] as running sums.
    # draw 35 -> b (first sum >= 35); [c(0), a(30)]: draw 0 -> c; [a(30)]: draw 12 -> a.
    # priority 1: [z(5)]: draw 3 -> z.
    assert srv_order([z, a, b, c], rng) == [b, c, a, z]
    assert rng.ranges == [(0, 40), (0, 30), (0, 30), (0, 5)]


def test_weights_share_the_first_place_in_proportion() -> None:
    a, b, c = Rec("a", 0, 30), Rec("b", 0, 10), Rec("c", 0, 0)
    rng = random.Random(2782)
    first = Counter(srv_order([a, b, c], rng)[0].name for _ in range(8200))
    # draw uniform in 0..40: c only on 0 (1/41), a on 1..30 (30/41), b on 31..40 (10/41)
    assert 5500 <= first["a"] <= 6500 and 1700 <= first["b"] <= 2300 and first["c"] <= 400


def test_all_weights_zero_give_a_random_order_of_all() -> None:
    recs = [Rec(n, 0, 0) for n in "abcd"]
    rng = random.Random(1)
    orders = {tuple(r.name for r in srv_order(recs, rng)) for _ in range(200)}
    assert len(orders) > 10 and all(sorted(o) == list("abcd") for o in orders)


async def test_resolve_orders_equal_priorities_by_weight_with_a_seeded_rng(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 90, 8001, N1), (0, 10, 8002, N2), (5, 0, 8003, N3)])
    for target in (N1, N2, N3):
        responder.set_a(target, ["127.0.0.1"])
    resolver = resolver_for(responder, clock, seed=42)
    orders = [tuple(n.port for n in await resolver.resolve(SRV)) for _ in range(300)]
    assert set(orders) == {(8001, 8002, 8003), (8002, 8001, 8003)}
    assert Counter(orders)[(8001, 8002, 8003)] > 230  # about 90 %
    again = resolver_for(responder, clock, seed=42)
    assert [tuple(n.port for n in await again.resolve(SRV)) for _ in range(300)] == orders
    assert srv_queries(responder) == 2  # one per resolver: the rest came from the cache


# --- TTL and refresh -------------------------------------------------------------------------


async def test_the_answer_is_kept_for_its_smallest_ttl_then_refreshed(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 0, 8001, N1)], ttl=60)
    responder.set_a(N1, ["127.0.0.1"], ttl=30)
    resolver = resolver_for(responder, clock)
    [node] = await resolver.resolve(SRV)
    assert (node.url, node.ttl) == ("https://127.0.0.1:8001", 30)

    responder.set_srv(SRV, [(0, 0, 8001, N1), (1, 0, 8002, N2)], ttl=60)
    responder.set_a(N1, ["127.0.0.5"], ttl=30)
    responder.set_a(N2, ["127.0.0.6"], ttl=30)
    responder.set_aaaa(N2, ["::1"], ttl=30)
    clock.advance(29.9)
    assert urls(await resolver.resolve(SRV)) == ["https://127.0.0.1:8001"]  # still cached
    assert srv_queries(responder) == 1

    clock.advance(0.1)
    assert urls(await resolver.resolve(SRV)) == [
        "https://127.0.0.5:8001",
        "https://127.0.0.6:8002",
        "https://[::1]:8002",
    ]
    assert srv_queries(responder) == 2


async def test_a_removed_node_disappears_after_the_ttl(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 0, 8001, N1), (0, 0, 8002, N2)], ttl=10)
    responder.set_a(N1, ["127.0.0.1"], ttl=10)
    responder.set_a(N2, ["127.0.0.2"], ttl=10)
    resolver = resolver_for(responder, clock)
    assert len(await resolver.resolve(SRV)) == 2
    responder.set_srv(SRV, [(0, 0, 8002, N2)], ttl=10)
    clock.advance(10)
    assert urls(await resolver.resolve(SRV)) == ["https://127.0.0.2:8002"]


async def test_concurrent_callers_share_one_lookup(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 0, 8001, N1)])
    responder.set_a(N1, ["127.0.0.1"])
    resolver = resolver_for(responder, clock)
    answers = await asyncio.gather(*(resolver.resolve(SRV) for _ in range(10)))
    assert all(urls(a) == ["https://127.0.0.1:8001"] for a in answers)
    assert srv_queries(responder) == 1


# --- failures: the last good answer ----------------------------------------------------------


async def good_then_expired(responder: DnsResponder, clock: FakeClock) -> SrvResolver:
    responder.set_srv(SRV, [(0, 0, 8001, N1)], ttl=30)
    responder.set_a(N1, ["127.0.0.1"], ttl=30)
    resolver = resolver_for(responder, clock)
    assert urls(await resolver.resolve(SRV)) == ["https://127.0.0.1:8001"]
    clock.advance(31)
    return resolver


@pytest.mark.parametrize(
    ("break_dns", "reason"),
    [
        (lambda r: r.fail(SRV), "SERVFAIL"),
        (lambda r: r.remove(SRV), "NXDOMAIN"),
        (lambda r: r.silence(SRV), f"no answer within {TIMEOUT:g} s"),
        (lambda r: r.fail(N1), f"target {N1}: the name servers failed"),  # its A lookup fails
        (lambda r: r.stop(), "no answer within"),  # nobody listens any more
    ],
    ids=["servfail", "nxdomain", "timeout", "target-servfail", "stopped"],
)
async def test_a_failed_refresh_keeps_the_last_good_answer_and_logs_it(
    responder: DnsResponder,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    break_dns: Callable[[DnsResponder], None],
    reason: str,
) -> None:
    resolver = await good_then_expired(responder, clock)
    break_dns(responder)
    with caplog.at_level(logging.WARNING, logger="sitemap.discovery"):
        assert urls(await resolver.resolve(SRV)) == ["https://127.0.0.1:8001"]
    [record] = caplog.records
    assert SRV in record.getMessage() and "last good answer" in record.getMessage()
    assert reason in record.getMessage()


async def test_after_a_failure_dns_is_asked_again_only_after_the_retry_delay(
    responder: DnsResponder, clock: FakeClock
) -> None:
    resolver = await good_then_expired(responder, clock)
    responder.fail(SRV)
    await resolver.resolve(SRV)
    asked = srv_queries(responder)
    responder.heal(SRV)
    responder.set_srv(SRV, [(0, 0, 8009, N1)], ttl=30)
    clock.advance(4.9)
    assert urls(await resolver.resolve(SRV)) == ["https://127.0.0.1:8001"]  # last good
    assert srv_queries(responder) == asked
    clock.advance(0.1)
    assert urls(await resolver.resolve(SRV)) == ["https://127.0.0.1:8009"]  # recovered


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (lambda r: None, "no such name (NXDOMAIN)"),
        (lambda r: r.fail(SRV), "SERVFAIL"),
        (lambda r: r.silence(SRV), "no answer within"),
        (lambda r: r.set_a(SRV, ["127.0.0.1"]), "no SRV records"),
        (
            lambda r: (r.set_srv(SRV, [(0, 0, 1, N1)]), r.fail(N1)),
            f"target {N1}: the name servers failed",
        ),
    ],
    ids=["nxdomain", "servfail", "timeout", "no-srv", "target-servfail"],
)
async def test_with_no_last_good_answer_a_failure_raises(
    responder: DnsResponder,
    clock: FakeClock,
    prepare: Callable[[DnsResponder], None],
    reason: str,
) -> None:
    prepare(responder)
    with pytest.raises(DiscoveryError) as caught:
        await resolver_for(responder, clock).resolve(SRV)
    assert caught.value.name == SRV and reason in caught.value.reason
    assert str(caught.value).startswith(f"{SRV}: ")


# --- a site's candidates -----------------------------------------------------------------------


def sitemap_text(port: int) -> str:
    return f"""
dns: {{nameservers: [127.0.0.1], port: {port}, timeout_seconds: {TIMEOUT}}}
sites:
  - {{name: eu, nodes: ["https://127.0.0.1:8443"], srv: {SRV}, costs: {{us: 25}}}}
  - {{name: us, nodes: ["https://127.0.0.1:9443"], costs: {{eu: 40}}}}
  - {{name: apac, srv: _cas._tcp.apac.contoso.test}}
"""


async def test_site_nodes_join_static_and_srv_nodes_with_costs_from_the_local_site(
    responder: DnsResponder, clock: FakeClock
) -> None:
    responder.set_srv(SRV, [(0, 0, 8001, N1), (3, 0, 8002, N2)])
    responder.set_a(N1, ["127.0.0.1"])
    responder.set_a(N2, ["127.0.0.2"])
    sitemap = parse_sitemap(sitemap_text(responder.port), "s.yaml")
    resolver = SrvResolver(sitemap.dns, clock=clock)
    from_us = SiteNodes(sitemap, resolver, local_site="us")
    assert await from_us.nodes("eu") == [
        Candidate("https://127.0.0.1:8443", 40),
        # SRV nodes keep their target's name, which TLS verifies; priority 3 adds to the cost
        Candidate("https://127.0.0.1:8001", 40, name=N1.rstrip(".")),
        Candidate("https://127.0.0.2:8002", 43, name=N2.rstrip(".")),
    ]
    assert await from_us.nodes("us") == [Candidate("https://127.0.0.1:9443", 0)]
    from_eu = SiteNodes(sitemap, resolver, local_site="eu")
    assert [c.cost for c in await from_eu.nodes(sitemap.site("eu"))] == [0, 0, 3]
    assert [c.cost for c in await from_eu.nodes("us")] == [25]
    assert await SiteNodes(sitemap, resolver).nodes("us") == [Candidate("https://127.0.0.1:9443")]


async def test_site_nodes_fall_back_to_static_nodes_when_dns_fails(
    responder: DnsResponder, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    responder.fail(SRV)
    sitemap = parse_sitemap(sitemap_text(responder.port), "s.yaml")
    nodes = SiteNodes(sitemap, SrvResolver(sitemap.dns, clock=clock), local_site="eu")
    with caplog.at_level(logging.WARNING, logger="sitemap.discovery"):
        assert await nodes.nodes("eu") == [Candidate("https://127.0.0.1:8443", 0)]
    assert "site eu" in caplog.text and "static nodes only" in caplog.text
    with pytest.raises(DiscoveryError, match="apac.contoso.test: no such name"):
        await nodes.nodes("apac")  # no static nodes to fall back on
