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

from cas.model.freebusy import BusyType, Event, MailboxData
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
