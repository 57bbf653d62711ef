"""The old-server emulator app (caslab.oldserver.server), called in-process through httpx's ASGI
transport.

Expected digits are worked out by hand in each test's comments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.server import MAX_BODY_BYTES, create_legacy_app
from caslab.oldserver.store import FreeBusyStore

ANN_DN = "/o=Contoso/ou=EU/cn=Recipients/cn=ann"
DIRECTORY = {
    "ann@contoso.test": DirectoryEntry(ANN_DN, "Ann Example"),
    "bob@contoso.test": DirectoryEntry("/o=Contoso/ou=EU/cn=Recipients/cn=bob", "Bob"),
}
RANGE = {"publish_start": "2024-03-01T00:00:00Z", "publish_end": "2024-05-01T00:00:00Z"}
ANN = {
    "address": "ann@contoso.test",
    "busy": [["2024-03-04T09:00:00Z", "2024-03-04T10:30:00Z"]],
    "tentative": [["2024-03-04T09:15:00+01:00", "2024-03-04T08:45:00Z"]],
    "oof": [["2024-03-04T11:10:00Z", "2024-03-04T11:20:00Z"]],
    **RANGE,
}


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_legacy_app(FreeBusyStore(tmp_path), DIRECTORY)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as client:
        yield client


def fbdata(body: bytes) -> list[str]:
    text = body.decode()
    return [part.split("</a:fbdata>")[0] for part in text.split("<a:fbdata>")[1:]]


async def test_davmail_request(client: httpx.AsyncClient) -> None:
    assert (await client.post("/public/publish", json=ANN)).status_code == 200
    response = await client.get(
        "/public/?cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T12:00:00Z&interval=15"
        "&u=SMTP:ann@contoso.test"
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    # 08:00 0 | 08:15-08:45 tentative 11 | 08:45 0 | 09:00-10:30 busy 222222 | 10:30-11:00 00 |
    # 11:00-11:30 OOF (11:10-11:20 touches both) 33 | 11:30-12:00 00
    assert fbdata(response.content) == ["0110222222003300"] * 2


async def test_zimbra_request_with_endt_and_unknown_and_unpublished_users(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/public/publish", json=ANN)
    response = await client.get(
        "/public",
        params=[
            ("Cmd", "freebusy"),
            ("start", "2024-03-04T08:00:00Z"),
            ("endt", "2024-03-04T12:00:00Z"),
            ("interval", "30"),
            ("u", "SMTP:ANN@contoso.test"),
            ("u", "SMTP:bob@contoso.test"),
            ("u", "SMTP:nobody@contoso.test"),
        ],
    )
    assert response.status_code == 200
    # ann: 1 1 2 2 2 0 3 0; bob has no message and nobody is unknown: no data (4) each.
    assert fbdata(response.content) == ["44444444", "11222030", "44444444", "44444444"]
    assert "<a:displayname>Ann Example</a:displayname>" in response.text
    assert '<a:email type="SMTP">nobody@contoso.test</a:email>' in response.text


async def test_digit_4_outside_the_published_range(client: httpx.AsyncClient) -> None:
    await client.post("/public/publish", json=ANN)
    response = await client.get(
        "/public/?cmd=freebusy&start=2024-04-30T22:00:00Z&end=2024-05-01T02:00:00Z&interval=60"
        "&u=ann@contoso.test"
    )
    assert fbdata(response.content)[-1] == "0044"


ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//cas tests//EN
BEGIN:VEVENT
UID:busy-1
DTSTAMP:20240101T000000Z
DTSTART:20240304T090000Z
DTEND:20240304T100000Z
SUMMARY:Busy
END:VEVENT
BEGIN:VEVENT
UID:free-1
DTSTAMP:20240101T000000Z
DTSTART:20240304T100000Z
DTEND:20240304T110000Z
TRANSP:TRANSPARENT
END:VEVENT
BEGIN:VEVENT
UID:tentative-1
DTSTAMP:20240101T000000Z
DTSTART;TZID=Europe/Berlin:20240304T120000
DTEND;TZID=Europe/Berlin:20240304T123000
STATUS:TENTATIVE
END:VEVENT
BEGIN:VEVENT
UID:oof-daily
DTSTAMP:20240101T000000Z
DTSTART:20240305T080000Z
DTEND:20240305T083000Z
RRULE:FREQ=DAILY;COUNT=3
X-MICROSOFT-CDO-BUSYSTATUS:OOF
END:VEVENT
END:VCALENDAR
"""


async def test_publish_an_ics(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/public/publish/bob@contoso.test.ics",
        params=RANGE,
        content=ICS.encode(),
        headers={"Content-Type": "text/calendar"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "USER-/CN=RECIPIENTS/CN=BOB"
    base = "/public/?cmd=freebusy&interval={}&u=SMTP:bob@contoso.test&start={}&end={}"
    # 08-09 free | 09-10 busy | 10-11 transparent = free | 11-12 tentative (12:00 CET = 11:00Z)
    day = await client.get(base.format(60, "2024-03-04T08:00:00Z", "2024-03-04T12:00:00Z"))
    assert fbdata(day.content)[-1] == "0201"
    # Daily OOF 08:00-08:30 on March 5, 6, 7; one-day slots from 08:00.
    days = await client.get(base.format(1440, "2024-03-05T08:00:00Z", "2024-03-09T08:00:00Z"))
    assert fbdata(days.content)[-1] == "3330"


async def test_duplicates_through_the_front(client: httpx.AsyncClient) -> None:
    await client.post("/public/publish", json=ANN)
    later = {**ANN, "busy": [["2024-03-04T08:00:00Z", "2024-03-04T12:00:00Z"]], "duplicate": True}
    response = await client.post("/public/publish", json=later)
    assert response.json()["subject"] == "USER-/CN=RECIPIENTS/CN=ANN-2"
    answer = await client.get(
        "/public/?cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T12:00:00Z&interval=30"
        "&u=SMTP:ann@contoso.test"
    )
    assert fbdata(answer.content)[-1] == "11222030"  # the earliest message wins


async def test_publish_by_legacy_dn_not_in_the_directory(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/public/publish", json={"legacy_dn": "/o=Contoso/ou=US/cn=Recipients/cn=zed", **RANGE}
    )
    assert response.status_code == 200
    assert response.json()["folder"] == "/o=Contoso/ou=US"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "cmd is missing"),
        ("?cmd=gallery&u=a@x", "cmd=gallery is not supported"),
        ("?cmd=freebusy&start=2024-03-04T08:00:00Z&u=a@x", "end is missing"),
        (
            "?cmd=freebusy&start=2024-03-05T08:00:00Z&end=2024-03-04T08:00:00Z&u=a@x",
            "must be before end",
        ),
        (
            "?cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-05T08:00:00Z&interval=2&u=a@x",
            "outside 5..1440",
        ),
        ("?cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-05T08:00:00Z", "no user asked"),
    ],
)
async def test_bad_queries_are_400_with_a_message(
    client: httpx.AsyncClient, query: str, message: str
) -> None:
    response = await client.get("/public/" + query)
    assert response.status_code == 400
    assert message in response.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 400, "body is not JSON"),
        (b"[]", 400, "body must be a JSON object"),
        (b'{"busy": []}', 400, "name the user"),
        (b'{"address": "ann@contoso.test"}', 400, "publish_start and publish_end are required"),
        (b'{"address": "who@contoso.test"}', 404, "not in the old server's directory"),
        (
            b'{"legacy_dn": "ann", "publish_start": "2024-03-01", "publish_end": "2024-04-01"}',
            400,
            "a legacy DN starts with",
        ),
        (
            b'{"address": "ann@contoso.test", "publish_start": "2024-04-01", '
            b'"publish_end": "2024-03-01"}',
            400,
            "publish_start must be before publish_end",
        ),
        (
            b'{"address": "ann@contoso.test", "publish_start": "2024-03-01", '
            b'"publish_end": "2024-04-01", "busy": [["2024-03-02"]]}',
            400,
            "busy[0] must be",
        ),
        (
            b'{"address": "ann@contoso.test", "publish_start": "2024-03-01", '
            b'"publish_end": "2024-04-01", "oof": [["2024-03-03", "2024-03-02"]]}',
            400,
            "oof[0] ends before",
        ),
        (
            b'{"address": "ann@contoso.test", "publish_start": "2024-03-01", '
            b'"publish_end": "2024-04-01", "tentative": [["x", "2024-03-02"]]}',
            400,
            "tentative[0]='x' is not",
        ),
    ],
)
async def test_bad_publishing_calls(
    client: httpx.AsyncClient, body: bytes, status: int, message: str
) -> None:
    response = await client.post("/public/publish", content=body)
    assert response.status_code == status
    assert message in response.text


@pytest.mark.parametrize(
    ("path", "params", "body", "status", "message"),
    [
        ("/public/publish/ann@contoso.test", RANGE, ICS, 400, "as /public/publish/{address}.ics"),
        ("/public/publish/who@contoso.test.ics", RANGE, ICS, 404, "not in the old server's"),
        ("/public/publish/ann@contoso.test.ics", {}, ICS, 400, "publish_start and publish_end"),
        (
            "/public/publish/ann@contoso.test.ics",
            RANGE,
            "BEGIN:VCALENDAR\nnonsense",
            400,
            "unusable calendar",
        ),
        (
            "/public/publish/ann@contoso.test.ics",
            {**RANGE, "tz": "Mars/Olympus"},
            ICS,
            400,
            "unknown time zone",
        ),
    ],
)
async def test_bad_ics_publishing(
    client: httpx.AsyncClient, path: str, params: dict, body: str, status: int, message: str
) -> None:
    response = await client.put(path, params=params, content=body.encode())
    assert response.status_code == status
    assert message in response.text


async def test_non_utf8_and_huge_bodies(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/public/publish/ann@contoso.test.ics", params=RANGE, content=b"\xff\xfe\x00"
    )
    assert response.status_code == 400 and "not UTF-8" in response.text
    response = await client.post("/public/publish", content=b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413


async def test_healthz_counts_messages(client: httpx.AsyncClient) -> None:
    await client.post("/public/publish", json=ANN)
    assert (await client.get("/healthz")).json() == {"status": "ok", "messages": 1}
