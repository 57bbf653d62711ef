"""The cap on requests in flight: 503 past it in each door's form, probes never refused, and
one log line when the node starts refusing and one when it stops."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from cas.endpoints.errors import FaultMiddleware
from cas.endpoints.overload import InFlightLimit, Overload

LIMIT = 2


def app(release: asyncio.Event, refused: list[int]) -> Starlette:
    async def slow(request: Request) -> Response:
        await release.wait()
        return PlainTextResponse("done")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/api/v1/availability", slow, methods=["POST"]),
            Route("/EWS/Exchange.asmx", slow, methods=["POST"]),
            Route("/healthz", health),
        ],
        middleware=[
            Middleware(InFlightLimit, limit=LIMIT, on_refused=lambda: refused.append(1)),
            Middleware(FaultMiddleware),
        ],
    )


async def test_past_the_limit_requests_get_503_in_their_doors_form_and_probes_pass() -> None:
    release, refused = asyncio.Event(), []
    transport = httpx.ASGITransport(app=app(release, refused))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        busy = [asyncio.create_task(client.post("/api/v1/availability")) for _ in range(LIMIT)]
        await asyncio.sleep(0.05)
        json_door = await client.post("/api/v1/availability", content=b"{}")
        ews_door = await client.post("/EWS/Exchange.asmx", content=b"<x/>")
        probe = await client.get("/healthz")
        release.set()
        done = await asyncio.gather(*busy)
        after = await client.post("/api/v1/availability")
    assert [r.text for r in done] == ["done"] * LIMIT
    assert json_door.status_code == 503 and json_door.headers["retry-after"] == "1"
    assert json_door.json()["error"]["code"] == "ErrorServerBusy"
    assert ews_door.status_code == 503 and b"ErrorServerBusy" in ews_door.content
    assert ews_door.headers["content-type"].startswith("text/xml")
    assert probe.status_code == 200
    assert after.status_code == 200
    assert len(refused) == 2


def test_an_overload_is_one_line_when_it_starts_and_one_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cas.endpoints.overload")
    now = [100.0]
    overload = Overload(
        "requests in flight", "requests", 200, quiet_seconds=5, clock=lambda: now[0]
    )
    for _ in range(40):
        overload.refused()
        now[0] += 0.1
        overload.admitted()  # some get through between refusals: still the same overload
    now[0] += 5
    overload.admitted()
    overload.admitted()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "overloaded: 200 requests in flight (the limit); answering 503 until it eases"),
        (
            "INFO",
            "overload over: 40 requests refused with 503 in 4s (limit: 200 requests in flight)",
        ),
    ]
