"""Throttling at the front doors, with real parts: the node apps of two sites (in process), a
real uvicorn node that exchangelib talks to, and the site's buckets in a real redis-server.

The buckets here refill at 0.01 mailbox per second, so nothing refills while a test runs: a
requester gets exactly `burst` mailboxes, then is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from exchangelib import DELEGATE, Account, Configuration, Credentials, EWSDateTime, EWSTimeZone
from exchangelib.errors import ErrorServerBusy
from exchangelib.protocol import close_connections
from exchangelib.transport import BASIC
from lxml import etree

from cas.cache.store import RedisStore
from cas.errors import Throttled
from cas.model.projection import Requester
from cas.throttle import Throttle
from tests.support.node import ThreadedServer, make_test_ca
from tests.support.twosite import PASSWORDS, TwoSites
from tests.unit.test_ews_endpoint import availability, fault_of

T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
SLOW = {"throttle_rate": 0.01, "throttle_burst": 3}
ANN, BOB = "ann@contoso.test", "bob@contoso.test"


async def post_ews(sites: TwoSites, site: str, user: str, addresses: list[str]):  # type: ignore[no-untyped-def]
    async with sites.client(site, user) as client:
        return await client.post("/EWS/Exchange.asmx", content=availability(addresses))


async def test_ews_answers_server_busy_with_back_off_once_the_burst_is_spent(
    tmp_path: Path,
) -> None:
    sites = TwoSites(tmp_path, settings=SLOW)
    assert (await post_ews(sites, "eu", "scheduler", [ANN, BOB])).status_code == 200
    assert (await post_ews(sites, "eu", "scheduler", [ANN])).status_code == 200  # 3 spent
    refused = await post_ews(sites, "eu", "scheduler", [ANN])
    assert refused.status_code == 500  # a SOAP fault, as EWS clients read them
    code, message = fault_of(refused)
    assert code == "ErrorServerBusy" and "0.01 mailboxes per second" in message
    back_off = etree.fromstring(refused.content).findtext(
        f".//{T}Value[@Name='BackOffMilliseconds']"
    )
    assert back_off is not None and 99_000 < int(back_off) <= 100_000  # 1 mailbox at 0.01/s
    assert refused.headers["retry-after"] == "100"
    # another requester has a bucket of its own
    assert (await post_ews(sites, "eu", BOB, [ANN, BOB, ANN])).status_code == 200


async def test_json_and_the_old_front_door_answer_429_with_retry_after(tmp_path: Path) -> None:
    sites = TwoSites(tmp_path, settings=SLOW)
    body = {"schedules": [ANN, BOB, ANN], "startTime": {"dateTime": "2024-03-04T08:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2024-03-04T18:00:00", "timeZone": "UTC"}}  # fmt: skip
    async with sites.client("eu", "scheduler") as client:
        assert (await client.post("/api/v1/availability", json=body)).status_code == 200
        refused = await client.post("/api/v1/availability", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "300"
        assert refused.json()["error"]["code"] == "ErrorServerBusy"
        old = await client.get("/public/", params={"cmd": "freebusy", "start": "2024-03-04T08:00:00Z",
                                                   "end": "2024-03-04T18:00:00Z", "u": ANN})  # fmt: skip
        assert old.status_code == 429 and old.headers["retry-after"] == "100"
        assert "Too many lookups" in old.text
        metrics = (await client.get("/metrics")).text
    assert 'cas_throttled_total{endpoint="json"} 1.0' in metrics
    assert 'cas_throttled_total{endpoint="public"} 1.0' in metrics
    assert 'cas_limit{setting="throttle_rate"} 0.01' in metrics
    assert 'cas_limit{setting="throttle_burst"} 3.0' in metrics
    assert 'cas_limit{setting="backend_concurrency"} 32.0' in metrics
    assert 'cas_source_limit{source="modern"} 32.0' in metrics
    assert 'cas_source_in_flight{source="modern"} 0.0' in metrics


async def test_forwarded_requests_are_counted_by_the_entry_node_only(tmp_path: Path) -> None:
    sites = TwoSites(tmp_path, settings=SLOW)
    # bob spends his whole bucket at his own site us ...
    assert (await post_ews(sites, "us", BOB, [BOB, BOB, BOB])).status_code == 200
    assert (await post_ews(sites, "us", BOB, [BOB])).status_code == 500
    # ... and still asks through eu, which forwards to us: eu counts, us does not count again
    answered = await post_ews(sites, "eu", BOB, [BOB, BOB, BOB])
    assert answered.status_code == 200
    codes = [c.text for c in etree.fromstring(answered.content).iter("{*}ResponseCode")]
    assert codes == ["NoError"] * 3
    assert (await post_ews(sites, "eu", BOB, [BOB])).status_code == 500  # eu's bucket spent


def test_exchangelib_gets_error_server_busy_with_the_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites = TwoSites(tmp_path, settings=SLOW)
    tls = make_test_ca(tmp_path / "tls")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_pem))
    with ThreadedServer(sites.apps["eu"], tls) as server:
        try:
            config = Configuration(
                service_endpoint=server.url + "/EWS/Exchange.asmx",
                credentials=Credentials("scheduler", PASSWORDS["scheduler"]),
                auth_type=BASIC,
            )
            account = Account(ANN, config=config, autodiscover=False, access_type=DELEGATE)
            zone = EWSTimeZone("UTC")
            start = EWSDateTime(2024, 3, 4, 8, tzinfo=zone)

            def ask() -> list[object]:
                return list(
                    account.protocol.get_free_busy_info(
                        [(ANN, "Required", False)], start, start.replace(hour=18), 60, "FreeBusy"
                    )
                )

            for _ in range(3):
                [view] = ask()
                assert view.view_type == "FreeBusy"  # type: ignore[attr-defined]
            with pytest.raises(ErrorServerBusy) as caught:
                ask()
            assert 99 < caught.value.back_off <= 100
        finally:
            close_connections()


# --- the site's buckets in a real Redis ---------------------------------------------------------


async def test_two_nodes_of_a_site_share_one_bucket_in_redis(redis_url: str) -> None:
    stores = [RedisStore.from_url(redis_url) for _ in range(2)]
    try:
        nodes = [Throttle(store, "eu", rate=0.01, burst=10) for store in stores]
        ann = Requester(ANN)

        async def one(i: int) -> bool:
            try:
                await nodes[i % 2].admit(ann, 1, address=None, door="ews")
            except Throttled:
                return False
            return True

        admitted = await asyncio.gather(*(one(i) for i in range(40)))
        assert sum(admitted) == 10  # the burst, whichever node was asked, however concurrent
        key = nodes[0].key(ann, None)
        assert nodes[1].key(Requester(ANN.upper()), None) == key
        ttl = await stores[0].client.pttl(key)
        assert 0 < ttl <= (10 / 0.01 + 1) * 1000  # kept only until it would be full again
    finally:
        for store in stores:
            await store.aclose()


async def test_a_redis_bucket_refills_at_its_rate(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    try:
        assert await store.take("b", 20.0, 4, cost=4) == (4.0, 0.0)
        taken, wait = await store.take("b", 20.0, 4, cost=2)
        assert taken == 0 and 0 < wait <= 0.1  # 2 tokens at 20 per second
        await asyncio.sleep(0.2)  # at least 4 tokens back by Redis's clock: full again
        assert await store.take("b", 20.0, 4, cost=1, spare=10) == (4.0, 0.0)  # 1 and 3 spare
        assert (await store.take("b", 20.0, 4, cost=1))[0] == 0
    finally:
        await store.aclose()


async def test_without_redis_a_node_keeps_throttling_on_its_own(redis_factory) -> None:  # type: ignore[no-untyped-def]
    server = redis_factory()
    store = RedisStore.from_url(server.url_for(0), timeout_seconds=0.5)
    try:
        throttle = Throttle(store, "eu", rate=0.01, burst=2)
        server.kill()
        await throttle.admit(Requester(ANN), 2, address=None, door="ews")
        with pytest.raises(Throttled):
            await throttle.admit(Requester(ANN), 1, address=None, door="ews")
    finally:
        await store.aclose()
