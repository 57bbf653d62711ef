"""Changes seen everywhere: validation by version, pushed changes, invalidation across sites.

Two sites run in one process (tests/support/twosite.py); the us site's backend keeps a change
tag per calendar, as a CalDAV server does. The eu node keeps copies of us answers; what is
checked is that a change at us reaches an eu lookup without anyone invalidating by hand, and
what it costs.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from lxml import etree

from cas.cache.flights import _read_at
from cas.cache.keys import Entry
from cas.cache.shelf import DROP_SKEW_SECONDS
from cas.model.freebusy import BusyType, Event, MailboxData
from cas.sources.base import FakeBackend
from tests.support.twosite import NODES, T0, TwoSites
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
F = "{urn:x-cas:freshness:1}"
START, END = "2024-03-04T08:00:00Z", "2024-03-04T18:00:00Z"
BOB = "bob@contoso.test"
MOVED = MailboxData(events=(Event(T0, T0 + timedelta(hours=1), BusyType.BUSY),))  # 08-09 busy


async def merged_and_source(sites: TwoSites, site: str = "eu") -> tuple[str, str]:
    async with sites.client(site) as client:
        r = await client.post(
            "/EWS/Exchange.asmx", content=availability([BOB], start=START, end=END)
        )
    assert r.status_code == 200, r.text
    tree = etree.fromstring(r.content)
    merged = tree.findtext(f".//{T}MergedFreeBusy") or ""
    source = next(tree.iter(f"{F}Mailbox")).get("source") or ""
    return merged, source


def us_backend(sites: TwoSites):  # type: ignore[no-untyped-def]
    return sites.backends["us"]["modern"]


async def test_without_push_a_change_is_seen_within_the_validation_interval(tmp_path: Path) -> None:
    sites = TwoSites(tmp_path, settings={"cache_validate_seconds": 0.3})
    before, _ = await merged_and_source(sites)
    assert before == "0033002002"
    _, source = await merged_and_source(sites)
    assert source == "remote-cache"
    reads = len(sites.backend_calls["us"])
    us_backend(sites).change(BOB, MOVED)
    await asyncio.sleep(0.4)  # one validation interval later
    after, source = await merged_and_source(sites)
    assert after == "2000000000", "the change is seen at the other site"
    assert len(sites.backend_calls["us"]) == reads + 1  # read once more, after the tag moved
    assert us_backend(sites).tag_calls >= 1


async def test_an_unchanged_mailbox_costs_one_tag_request_per_interval_at_most(
    tmp_path: Path,
) -> None:
    sites = TwoSites(tmp_path, settings={"cache_validate_seconds": 0.5})
    await merged_and_source(sites)
    reads, tags = len(sites.backend_calls["us"]), us_backend(sites).tag_calls
    for _ in range(20):  # all within one interval
        await merged_and_source(sites)
    assert (len(sites.backend_calls["us"]), us_backend(sites).tag_calls) == (reads, tags)
    await asyncio.sleep(0.6)
    for _ in range(5):
        _, source = await merged_and_source(sites)
    assert len(sites.backend_calls["us"]) == reads  # confirmed, not read again
    assert us_backend(sites).tag_calls == tags + 1


async def test_a_pushed_change_reaches_the_other_site_at_once(tmp_path: Path) -> None:
    token = tmp_path / "change-token"
    token.write_text("c" * 32)
    sites = TwoSites(
        tmp_path, settings={"cache_validate_seconds": 0, "change_token_file": str(token)}
    )
    await merged_and_source(sites)
    assert (await merged_and_source(sites))[1] == "remote-cache"
    us_backend(sites).change(BOB, MOVED)
    async with sites.client("us", user=None) as client:
        r = await client.post(
            "/api/v1/changes",
            json={"paths": ["/nowhere/at/all.ics"], "addresses": [BOB]},
            headers={"Authorization": "Bearer " + "c" * 32},
        )
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["changed"] == [BOB]
    assert json.loads(r.content)["unknown"] == ["/nowhere/at/all.ics"]
    for _ in range(40):  # the announcement goes out within a few tens of milliseconds
        merged, _ = await merged_and_source(sites)
        if merged == "2000000000":
            break
        await asyncio.sleep(0.05)
    assert merged == "2000000000"
    assert await merged_and_source(sites, "us") == ("2000000000", "cache")


async def test_changes_need_the_token_and_node_calls_a_signature(tmp_path: Path) -> None:
    token = tmp_path / "change-token"
    token.write_text("c" * 32)
    sites = TwoSites(tmp_path, settings={"change_token_file": str(token)})
    async with sites.client("us", user=None) as client:
        r = await client.post("/api/v1/changes", json={"addresses": [BOB]})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        for path in ("/api/v1/internal/changes", "/api/v1/internal/versions"):
            r = await client.post(path, json={"addresses": [BOB]})
            assert r.status_code == 401, (path, r.text)
    assert sites.router.calls == []


async def test_invalidating_at_one_site_drops_the_owners_data_too(tmp_path: Path) -> None:
    token = tmp_path / "admin-token"
    token.write_text("a" * 32)
    sites = TwoSites(tmp_path, settings={"admin_token_file": str(token)})
    await merged_and_source(sites)
    reads = len(sites.backend_calls["us"])
    async with sites.client("eu", user=None) as client:
        r = await client.post(
            "/api/v1/cache/invalidate",
            json={"addresses": [BOB]},
            headers={"Authorization": "Bearer " + "a" * 32},
        )
    [result] = json.loads(r.content)["results"]
    assert result["sites"]["us"]["status"] == "told" and result["sites"]["us"]["keys"] >= 1
    assert result["untold"] == ["ap"]
    assert await merged_and_source(sites) == ("0033002002", "backend")
    assert len(sites.backend_calls["us"]) == reads + 1
    assert NODES["us"] in sites.router.calls


def read_then_wait(sites: TwoSites, seconds: float) -> None:
    """The us backend reads a calendar at once but answers `seconds` later, so a change can
    arrive while the old data is on its way."""
    backend = us_backend(sites)

    async def fetch(mailbox, window):  # type: ignore[no-untyped-def]
        data = await FakeBackend.fetch(backend, mailbox, window)
        await asyncio.sleep(seconds)
        return data

    backend.fetch = fetch


async def push(sites: TwoSites, token: str) -> None:
    async with sites.client("us", user=None) as client:
        r = await client.post(
            "/api/v1/changes", json={"addresses": [BOB]},
            headers={"Authorization": "Bearer " + token},
        )  # fmt: skip
    assert r.status_code == 200, r.text


def pushed_sites(tmp_path: Path) -> tuple[TwoSites, str]:
    token = tmp_path / "change-token"
    token.write_text("c" * 32)
    settings = {"cache_validate_seconds": 3600, "change_token_file": str(token)}
    return TwoSites(tmp_path, settings=settings), "c" * 32


async def test_a_read_in_flight_when_a_change_arrives_is_answered_but_not_kept(
    tmp_path: Path,
) -> None:
    sites, token = pushed_sites(tmp_path)
    read_then_wait(sites, 0.3)
    lookup = asyncio.ensure_future(merged_and_source(sites, "us"))
    await asyncio.sleep(0.1)  # the read has the old data
    us_backend(sites).change(BOB, MOVED)
    await push(sites, token)
    assert (await lookup)[0] == "0033002002"  # what was read before the change
    assert await merged_and_source(sites, "us") == ("2000000000", "backend")  # not kept


async def test_an_answer_of_another_site_in_flight_when_a_change_arrives_is_not_kept(
    tmp_path: Path,
) -> None:
    sites, token = pushed_sites(tmp_path)
    read_then_wait(sites, 0.3)
    lookup = asyncio.ensure_future(merged_and_source(sites, "eu"))  # forwarded to us
    await asyncio.sleep(0.1)
    us_backend(sites).change(BOB, MOVED)
    await push(sites, token)  # us tells eu at once
    await asyncio.sleep(0.1)
    assert (await lookup)[0] == "0033002002"  # read before the change
    assert (await merged_and_source(sites, "eu"))[0] == "2000000000"  # eu did not keep it


def test_an_answer_vouched_for_before_the_read_counts_from_then_less_the_clock_skew() -> None:
    data = MailboxData()
    fresh = Entry(data, vouched_at=100.5, version=None, site="us", kept_at=100.6)
    assert _read_at(100.0, fresh) == 100.0  # read from the backend during this read
    copy = Entry(data, vouched_at=90.0, version=None, site="us", kept_at=100.6)
    assert _read_at(100.0, copy) == 90.0 - DROP_SKEW_SECONDS  # the other site's old copy
