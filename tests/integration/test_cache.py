"""The cache with real parts: two `cas serve` nodes of one site, a real redis-server, and a real
Radicale behind a fault proxy that counts, delays and cuts the nodes' backend calls.

Radicale answers HTTP/1.0 (one connection per request), so the proxy's connection count is the
number of backend calls the site made.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from caslab.redis import RedisProcess
from tests.support.cluster import Cluster, start_cluster
from tests.support.node import make_test_ca
from tests.support.redis import redis_servers
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
F = "{urn:x-cas:freshness:1}"
START, END = "2024-03-04T08:00:00Z", "2024-03-04T12:00:00Z"  # 4 hourly slots
# Several tests read a mailbox twice and expect the second read from the cache: both reads
# (and whatever the test does between them, a fraction of a second) must fall within REFRESH,
# with room for a loaded machine; past it, a read goes to the backend again.
REFRESH = 3.0
QUERY_WINDOW = 0.5
BACKEND_DELAY = 3.0  # added by the CalDAV proxy when a test makes the backend slow


def event(hour: int, summary: str) -> str:
    return f"""
BEGIN:VEVENT
UID:{uuid.uuid4()}
DTSTAMP:20240101T000000Z
DTSTART:20240304T{hour:02d}0000Z
DTEND:20240304T{hour + 1:02d}0000Z
SUMMARY:{summary}
END:VEVENT"""


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    for servers in redis_servers(tmp_path_factory, ["site"]):
        yield servers["site"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis):
    root = tmp_path_factory.mktemp("cache-cluster")
    ca = make_test_ca(root / "tls")
    cluster = start_cluster(
        root, ca, {"eu": ["a", "b", "c", "d", "e"]}, nodes_per_site=2,
        settings={"cache_refresh_seconds": REFRESH, "cache_query_window_seconds": QUERY_WINDOW,
                  "request_timeout_seconds": 5},
        redis_url=redis.url, caldav_proxy=True,
    )  # fmt: skip
    try:
        for local, hour in zip("abcde", (8, 9, 10, 11, 8)):
            cluster.write_events(f"eu-{local}@contoso.test", [event(hour, local)])
        yield cluster
    finally:
        cluster.stop()


def lookup(cluster: Cluster, addresses: list[str], node: int = 0) -> tuple[httpx.Response, list]:
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=15) as client:
        r = client.post(
            cluster.sites["eu"][node].direct_url + "/EWS/Exchange.asmx",
            content=availability(addresses, start=START, end=END, interval="60"),
            auth=cluster.client,
        )
    assert r.status_code == 200, r.text
    tree = etree.fromstring(r.content)
    fresh = {
        int(m.get("index")): (m.get("source"), float(m.get("age")))
        for m in tree.iter(f"{F}Mailbox")
    }
    rows = []
    for i, item in enumerate(tree.iter(f"{M}FreeBusyResponse")):
        rows.append(
            (
                item.findtext(f"{M}ResponseMessage/{M}ResponseCode"),
                item.findtext(f".//{T}MergedFreeBusy"),
                fresh.get(i),
            )
        )
    return r, rows


def backend_calls(cluster: Cluster) -> int:
    return cluster.caldav_proxies["eu"].connections


def wait_past_refresh() -> None:
    time.sleep(REFRESH + 0.3)


def test_concurrent_misses_from_both_nodes_make_one_backend_call(cluster: Cluster) -> None:
    before = backend_calls(cluster)
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(
            pool.map(lambda i: lookup(cluster, ["eu-a@contoso.test"], node=i % 2)[1], range(24))
        )
    assert backend_calls(cluster) - before == 1
    assert all(rows[0][:2] == ("NoError", "2000") for rows in answers)


def test_a_repeated_lookup_is_served_from_redis_and_says_so(cluster: Cluster) -> None:
    first, rows = lookup(cluster, ["eu-b@contoso.test"])
    calls = backend_calls(cluster)
    second, again = lookup(cluster, ["eu-b@contoso.test"], node=1)  # the OTHER node: shared cache
    assert backend_calls(cluster) == calls
    assert again[0][:2] == ("NoError", "0200") and again[0][2][0] == "cache"
    assert "cache=1" in second.headers["x-cas-freshness"]
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False) as client:
        metrics = client.get(cluster.sites["eu"][1].direct_url + "/metrics").text
    assert 'cas_cache_events_total{event="hit"}' in metrics


def test_a_slow_backend_past_the_refresh_interval_gets_stale_data_marked(cluster: Cluster) -> None:
    lookup(cluster, ["eu-c@contoso.test"])
    wait_past_refresh()
    cluster.caldav_proxies["eu"].delay(BACKEND_DELAY)
    try:
        started = time.monotonic()
        _, rows = lookup(cluster, ["eu-c@contoso.test"])
        elapsed = time.monotonic() - started
    finally:
        cluster.caldav_proxies["eu"].pass_through()
    # answered at the end of the query window: before the slow backend could have answered,
    # and not after it failed (a failed read is served stale too, but only at its timeout)
    assert elapsed < BACKEND_DELAY
    code, merged, (source, age) = rows[0]
    assert (code, merged, source) == ("NoError", "0020", "stale-cache") and age >= REFRESH


def test_a_cut_backend_gets_stale_data_and_unknown_stays_unknown(cluster: Cluster) -> None:
    lookup(cluster, ["eu-d@contoso.test"])
    wait_past_refresh()
    cluster.caldav_proxies["eu"].cut()
    try:
        _, rows = lookup(cluster, ["eu-d@contoso.test", "eu-e@contoso.test"])
    finally:
        cluster.caldav_proxies["eu"].pass_through()
    assert rows[0][:2] == ("NoError", "0002") and rows[0][2][0] == "stale-cache"
    # eu-e was never read: there is nothing to serve, so it fails rather than looks free
    assert rows[1][0] == "ErrorFreeBusyGenerationFailed" and rows[1][1] is None


def test_an_unchanged_calendar_is_revalidated_and_a_changed_one_reread(cluster: Cluster) -> None:
    address = "eu-a@contoso.test"
    lookup(cluster, [address])
    wait_past_refresh()
    lookup(cluster, [address])  # past the interval: confirmed by its change tag
    wait_past_refresh()
    before = backend_calls(cluster)
    _, rows = lookup(cluster, [address])
    assert backend_calls(cluster) - before == 1  # one PROPFIND, no REPORT
    assert rows[0][2][0] == "revalidated"
    cluster.write_events(address, [event(11, "written later")])
    wait_past_refresh()
    _, rows = lookup(cluster, [address])
    assert rows[0][1] == "2002" and rows[0][2][0] == "backend"


def test_admin_invalidation_makes_a_new_event_show_at_once(cluster: Cluster) -> None:
    address = "eu-b@contoso.test"
    lookup(cluster, [address])
    cluster.write_events(address, [event(11, "urgent")])
    assert lookup(cluster, [address])[1][0][1] == "0200"  # still the cached copy
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False) as client:
        url = cluster.sites["eu"][1].direct_url + "/api/v1/cache/invalidate"
        refused = client.post(url, json={"addresses": [address]})
        assert refused.status_code == 401
        done = client.post(
            url,
            json={"addresses": [address]},
            headers={"Authorization": f"Bearer {cluster.admin_token}"},
        )
    assert done.status_code == 200 and done.json()["results"][0]["status"] == "invalidated"
    # the node that was told sees the new event at once ...
    assert lookup(cluster, [address], node=1)[1][0][1] == "0202"
    # ... and the site's other node once its first-level copy (cache_local_seconds, 1 s) lapses
    time.sleep(1.1)
    assert lookup(cluster, [address], node=0)[1][0][1] == "0202"


def test_redis_killed_mid_run_costs_no_lookup_and_the_cache_comes_back(
    cluster: Cluster, redis
) -> None:
    addresses = [f"eu-{x}@contoso.test" for x in "abc"]
    lookup(cluster, addresses)
    log = cluster.sites["eu"][0].log
    before = len(log.read_text(errors="replace"))
    redis.kill()
    try:
        for _ in range(3):
            # past the node's own 1 s copies: only Redis could answer, and it is gone
            time.sleep(1.1)
            _, rows = lookup(cluster, addresses)
            assert [r[0] for r in rows] == ["NoError"] * 3
            assert all(r[2][0] in ("backend", "revalidated") for r in rows)
    finally:
        redis.start()
    deadline = time.monotonic() + 30  # the breaker lets a trial through after a few seconds
    sources: list = []
    while time.monotonic() < deadline:
        time.sleep(1.1)  # past the node's own copies again: "cache" can only be Redis
        _, rows = lookup(cluster, addresses)
        sources = [r[2][0] for r in rows]
        if sources == ["cache"] * 3:
            break
    assert sources == ["cache"] * 3
    # the operator reads one line when Redis went and one when it came back, not one per
    # lookup: the only warning is the breaker opening; its closing line counts what it refused
    new = log.read_text(errors="replace")[before:].splitlines()
    warnings = [line for line in new if " WARNING " in line or " ERROR " in line]
    assert len(warnings) == 1, warnings
    assert " breaker redis:eu open: Redis " in warnings[0] and " is down " in warnings[0]
    back = [line for line in new if " breaker redis:eu closed: " in line]
    assert len(back) == 1, new
    assert " is back after " in back[0]
