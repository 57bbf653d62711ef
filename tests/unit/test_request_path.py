"""The request path's promises, through real node apps of two sites (tests/support/twosite.py).

Each test pins one promise that a deliberate bug once broke without any test noticing: the
entry node's copies of other sites' answers (kept per requester, and actually used), the
admin token, the hop limit, private items masked by the site that owns the mailbox, and the
time budget a forwarding node passes on. Expectations come from the fixed data, not from the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from tests.support.twosite import NODES, TwoSites
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
F = "{urn:x-cas:freshness:1}"
START, END = "2024-03-04T08:00:00Z", "2024-03-04T18:00:00Z"


def subjects(body: bytes) -> list[str | None]:
    return [
        e.findtext(f"{T}Subject") for e in etree.fromstring(body).iter(f"{T}CalendarEventDetails")
    ]


def sources(body: bytes) -> list[str | None]:
    return [m.get("source") for m in etree.fromstring(body).iter(f"{F}Mailbox")]


def codes(body: bytes) -> list[str | None]:
    return [c.text for c in etree.fromstring(body).iter(f"{M}ResponseCode")]


def messages(body: bytes) -> list[str | None]:
    return [c.text for c in etree.fromstring(body).iter(f"{M}MessageText")]


async def ask(sites: TwoSites, user: str, addresses: list[str]) -> bytes:
    async with sites.client("eu", user) as client:
        r = await client.post(
            "/EWS/Exchange.asmx",
            content=availability(addresses, start=START, end=END, view="DetailedMerged"),
        )
    assert r.status_code == 200, r.text
    return r.content


def calls_to_us(sites: TwoSites) -> int:
    return sites.router.calls.count(NODES["us"])


@pytest.mark.parametrize("first", ["scheduler", "bob@contoso.test"])
async def test_copies_of_remote_answers_keep_each_requesters_view(
    tmp_path: Path, first: str
) -> None:
    sites = TwoSites(tmp_path)
    second = "bob@contoso.test" if first == "scheduler" else "scheduler"
    seen = {}
    for user in (first, second, first, second):
        body = await ask(sites, user, ["bob@contoso.test"])
        seen.setdefault(user, []).append(subjects(body))
    # bob's own private item: its subject for bob only, in whatever order they asked
    assert seen["bob@contoso.test"][0] == ["Dentist", "1:1", "From home", "Therapy"]
    assert seen["scheduler"][0] == ["Dentist", "1:1", "From home", None]
    assert seen["bob@contoso.test"][1] == seen["bob@contoso.test"][0]
    assert seen["scheduler"][1] == seen["scheduler"][0]


async def test_a_repeated_remote_lookup_is_answered_from_the_entry_nodes_copy(
    tmp_path: Path,
) -> None:
    sites = TwoSites(tmp_path)
    first = await ask(sites, "scheduler", ["bob@contoso.test"])
    assert sources(first) == ["backend"] and calls_to_us(sites) == 1
    again = await ask(sites, "scheduler", ["bob@contoso.test"])
    assert sources(again) == ["remote-cache"]
    assert calls_to_us(sites) == 1, "the copy was not used"
    assert subjects(again) == subjects(first)


async def test_without_copies_every_lookup_asks_the_other_site(tmp_path: Path) -> None:
    sites = TwoSites(tmp_path, settings={"remote_cache_seconds": 0})
    seen = [sources(await ask(sites, "scheduler", ["bob@contoso.test"])) for _ in range(2)]
    assert seen == [["backend"], ["cache"]]  # the second from the us site's own cache
    assert calls_to_us(sites) == 2


async def test_invalidation_needs_the_admin_token(tmp_path: Path) -> None:
    token = tmp_path / "admin-token"
    token.write_text("t" * 32)
    sites = TwoSites(tmp_path, settings={"admin_token_file": str(token)})
    body = {"addresses": ["ann@contoso.test"]}
    async with sites.client("eu", user=None) as client:
        for header in (None, "Bearer " + "u" * 32, "Basic " + "t" * 32):
            headers = {"Authorization": header} if header else {}
            r = await client.post("/api/v1/cache/invalidate", json=body, headers=headers)
            assert r.status_code == 401, (header, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.post(
            "/api/v1/cache/invalidate", json=body, headers={"Authorization": "Bearer " + "t" * 32}
        )
    assert r.status_code == 200
    [result] = json.loads(r.content)["results"]
    assert result["address"] == "ann@contoso.test"
    # every site is told: eu drops its own data, us its copies; ap has no node that answers
    assert result["status"] == "partly-invalidated" and result["untold"] == ["ap"]
    assert result["sites"]["eu"]["status"] == "dropped"
    assert result["sites"]["us"]["status"] == "told"
    assert (
        result["sites"]["ap"]["status"] == "unreachable"
        and "'ap'" in result["sites"]["ap"]["message"]
    )


async def test_a_forwarded_request_is_not_forwarded_again(tmp_path: Path) -> None:
    sites = TwoSites(tmp_path)
    body = availability(["bob@contoso.test", "ann@contoso.test"], start=START, end=END)
    async with sites.client("us") as client:
        r = await client.post(
            "/EWS/Exchange.asmx", content=body, headers=sites.peer_call("us", body)
        )
    assert r.status_code == 200, r.text
    assert codes(r.content) == ["NoError", "ErrorProxyRequestProcessingFailed"]
    assert "hop limit" in (messages(r.content)[0] or "")
    assert sites.router.calls == [], "the us node called another node"


async def test_the_owning_site_masks_private_items_for_a_forwarded_requester(
    tmp_path: Path,
) -> None:
    sites = TwoSites(tmp_path)
    body = availability(["bob@contoso.test"], start=START, end=END, view="DetailedMerged")
    async with sites.client("us") as client:
        r = await client.post(
            "/EWS/Exchange.asmx", content=body, headers=sites.peer_call("us", body)
        )
    assert subjects(r.content) == ["Dentist", "1:1", "From home", None]


async def test_a_forwarding_nodes_budget_bounds_the_answer(tmp_path: Path) -> None:
    sites = TwoSites(tmp_path, delays={"bob@contoso.test": 3.0})
    body = availability(["bob@contoso.test"], start=START, end=END)
    async with sites.client("us") as client:
        r = await client.post(
            "/EWS/Exchange.asmx", content=body, headers=sites.peer_call("us", body, budget_ms=300)
        )
    assert codes(r.content) == ["ErrorFreeBusyGenerationFailed"]
    assert "within 0.3s" in (messages(r.content)[0] or ""), messages(r.content)
