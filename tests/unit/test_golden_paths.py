"""The whole request path pinned byte for byte: one mixed request through every front door.

The request names a local mailbox, a local legacy one, a remote one, a remote legacy one, an
unknown address, a mailbox whose backend fails, one of an unreachable site, and an alias of the
first. The EWS, JSON and old front door answers are compared with golden files in
`tests/data/golden/`, byte for byte (`CAS_UPDATE_GOLDEN=1` rewrites them; review the diff).
What the files must say was checked by hand when they were written; the assertions below
restate the parts that matter independently of the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lxml import etree

from tests.support.ews_schema import validate_ews_body
from tests.support.twosite import MIXED, TwoSites
from tests.unit.test_ews_endpoint import availability

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
UPDATE = os.environ.get("CAS_UPDATE_GOLDEN") == "1"
M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
START, END = "2024-03-04T08:00:00Z", "2024-03-04T18:00:00Z"


def check(name: str, actual: bytes, request_id: str = "") -> None:
    """Compare with the golden file; the request's id (random per request) reads as RID."""
    if request_id:
        assert f"(request {request_id})".encode() in actual  # errors name the request
        actual = actual.replace(f"(request {request_id})".encode(), b"(request RID)")
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
    assert actual == path.read_bytes(), f"{name} changed"


@pytest.fixture
def sites(tmp_path: Path) -> TwoSites:
    return TwoSites(tmp_path)


def codes(body: bytes) -> list[str]:
    return [c.text or "" for c in etree.fromstring(body).iter(f"{M}ResponseCode")]


def merged(body: bytes) -> list[str | None]:
    out: list[str | None] = []
    for response in etree.fromstring(body).iter(f"{M}FreeBusyResponse"):
        out.append(response.findtext(f"{M}FreeBusyView/{T}MergedFreeBusy"))
    return out


def no_internals(body: bytes) -> None:
    """Per-mailbox errors name no backend, node address or transport error (those are logged)."""
    for internal in (b"127.0.0.1", b"https://", b"ConnectError", b"fake backend refuses"):
        assert internal not in body


async def ews(sites: TwoSites, user: str) -> tuple[bytes, str]:
    async with sites.client("eu", user) as client:
        r = await client.post(
            "/EWS/Exchange.asmx",
            content=availability(MIXED, start=START, end=END, view="DetailedMerged"),
        )
    assert r.status_code == 200, r.text
    no_internals(r.content)
    rid = r.headers["x-request-id"]
    return r.content.replace(f"(request {rid})".encode(), b"(request RID)"), r.headers.get(
        "x-cas-freshness", ""
    )


async def test_ews_answer_for_a_mixed_request(sites: TwoSites) -> None:
    body, freshness = await ews(sites, "scheduler")
    check("mixed_ews_scheduler.xml", body)
    validate_ews_body(body)
    assert codes(body) == [
        "NoError", "NoError", "NoError", "NoError", "ErrorMailRecipientNotFound",
        "ErrorFreeBusyGenerationFailed", "ErrorProxyRequestProcessingFailed", "NoError",
    ]  # fmt: skip
    # 08..18 UTC by the hour, computed from the data in tests/support/twosite.py by hand
    assert merged(body) == [
        "0200020100", "0020000044", "0033002002", "1000300000", None, None, None, "0200020100",
    ]  # fmt: skip
    assert b"Doctor" not in body and b"Design review" in body  # private: masked for others
    assert freshness == "backend=3, legacy=2; max-age=0; max-unconfirmed=0"


async def test_the_owner_sees_the_private_item(sites: TwoSites) -> None:
    body, _ = await ews(sites, "ann@contoso.test")
    check("mixed_ews_owner.xml", body)
    assert b"Doctor" in body and b"Clinic" in body


async def test_json_answer_for_a_mixed_request(sites: TwoSites) -> None:
    request = {
        "schedules": MIXED,
        "startTime": {"dateTime": "2024-03-04T09:00:00", "timeZone": "Europe/Berlin"},
        "endTime": {"dateTime": "2024-03-04T19:00:00", "timeZone": "Europe/Berlin"},
        "availabilityViewInterval": 60,
    }
    async with sites.client("eu") as client:
        r = await client.post("/api/v1/availability", json=request)
    assert r.status_code == 200, r.text
    no_internals(r.content)
    check("mixed_api.json", r.content, r.headers["x-request-id"])
    answers = json.loads(r.content)["value"]
    assert [a.get("availabilityView") for a in answers] == [
        "0200020100", "0020000044", "0033002002", "1000300000", None, None, None, "0200020100",
    ]  # fmt: skip
    assert [a["error"]["responseCode"] for a in answers if "error" in a] == [
        "ErrorMailRecipientNotFound", "ErrorFreeBusyGenerationFailed",
        "ErrorProxyRequestProcessingFailed",
    ]  # fmt: skip
    statuses = [item["status"] for item in answers[0]["scheduleItems"]]
    assert statuses == ["busy", "busy", "tentative"]
    assert [item["status"] for item in answers[2]["scheduleItems"]] == [
        "oof", "busy", "workingElsewhere", "busy",
    ]  # fmt: skip


async def test_old_front_door_answer_for_a_mixed_request(sites: TwoSites) -> None:
    params = [("cmd", "freebusy"), ("start", START), ("end", END), ("interval", "30")]
    params += [("u", f"SMTP:{address}") for address in MIXED]
    async with sites.client("eu") as client:
        r = await client.get("/public/", params=params)
    assert r.status_code == 200, r.text
    check("mixed_public.xml", r.content)
    items = etree.fromstring(r.content).iter("{WM}item")
    digits = [item.findtext("{WM}fbdata") for item in items]
    assert digits[1:] == [
        "00220000002200100000", "00002200000000004444", "00003333000022000020",
        "01000000330000000000", "4" * 20, "4" * 20, "4" * 20, "00220000002200100000",
    ]  # fmt: skip


async def test_what_clients_are_not_told_is_in_the_log(
    sites: TwoSites, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="cas.service")
    await ews(sites, "scheduler")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "cas.service")
    assert "site eu answered ErrorFreeBusyGenerationFailed (first eve@contoso.test)" in logged
    assert "fake backend refuses eve@contoso.test" in logged
    assert "https://127.0.0.1:9301 failed: ConnectError" in logged
    assert "nobody@contoso.test" not in logged  # the client's own mistake is not a node's trouble
