"""Request ids on every answer and log line; metrics in their own registry, rendered with labels."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from cas.observability import (
    REQUEST_ID_HEADER,
    Metrics,
    RequestIdLogFilter,
    RequestIdMiddleware,
    adopt,
    configure_logging,
    current_request_id,
    metrics_endpoint,
    request_id,
)

ID = re.compile(r"[A-Za-z0-9_-]{16}")
log = logging.getLogger("tests.observability")


async def echo_id(request: Request) -> Response:
    log.info("serving")
    return JSONResponse({"context": request_id.get(), "current": current_request_id()})


async def adopting(request: Request) -> Response:
    adopt(request.headers["x-verified-id"])
    log.info("adopted")
    return JSONResponse({"context": request_id.get()})


async def bad_adopt(request: Request) -> Response:
    adopt("not valid!")
    return PlainTextResponse("unreachable")


async def forbidden(request: Request) -> Response:
    raise HTTPException(403, "no")


async def crash(request: Request) -> Response:
    raise RuntimeError("boom")


async def stale_header(request: Request) -> Response:
    return PlainTextResponse("x", headers={REQUEST_ID_HEADER: "from-the-app"})


def build_app(trust: object = None) -> Starlette:
    routes = [
        Route("/id", echo_id),
        Route("/adopt", adopting),
        Route("/bad-adopt", bad_adopt),
        Route("/forbidden", forbidden),
        Route("/crash", crash),
        Route("/stale", stale_header),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestIdMiddleware, trust=trust)])


def client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://node")


async def test_each_request_gets_a_fresh_id_visible_inside_the_app() -> None:
    async with client(build_app()) as c:
        first, second = await c.get("/id"), await c.get("/id")
    ids = [r.headers[REQUEST_ID_HEADER] for r in (first, second)]
    assert all(ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert first.json() == {"context": ids[0], "current": ids[0]}
    assert request_id.get() is None and current_request_id() is None


@pytest.mark.parametrize(("path", "status"), [("/forbidden", 403), ("/nowhere", 404)])
async def test_error_answers_carry_the_id(path: str, status: int) -> None:
    async with client(build_app()) as c:
        response = await c.get(path)
    assert response.status_code == status
    assert ID.fullmatch(response.headers[REQUEST_ID_HEADER])


async def test_unhandled_exception_answers_500_with_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdLogFilter())
    async with client(build_app()) as c:
        response = await c.get("/crash")
    assert response.status_code == 500
    rid = response.headers[REQUEST_ID_HEADER]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert errors and errors[0].request_id == rid  # type: ignore[attr-defined]


async def test_the_apps_own_header_is_replaced_not_duplicated() -> None:
    async with client(build_app()) as c:
        response = await c.get("/stale")
    values = response.headers.get_list(REQUEST_ID_HEADER)
    assert len(values) == 1 and values[0] != "from-the-app"


async def test_incoming_id_ignored_unless_trusted() -> None:
    async with client(build_app()) as c:
        response = await c.get("/id", headers={REQUEST_ID_HEADER: "caller-chosen"})
    assert response.headers[REQUEST_ID_HEADER] != "caller-chosen"


async def test_incoming_id_taken_when_trusted_and_well_formed() -> None:
    def trust(scope: Scope) -> bool:
        return (b"x-node", b"yes") in scope["headers"]

    async with client(build_app(trust)) as c:
        trusted = await c.get("/id", headers={REQUEST_ID_HEADER: "hop-id", "x-node": "yes"})
        untrusted = await c.get("/id", headers={REQUEST_ID_HEADER: "hop-id"})
        malformed = await c.get("/id", headers={REQUEST_ID_HEADER: "a b", "x-node": "yes"})
    assert trusted.headers[REQUEST_ID_HEADER] == "hop-id" == trusted.json()["context"]
    assert untrusted.headers[REQUEST_ID_HEADER] != "hop-id"
    assert ID.fullmatch(malformed.headers[REQUEST_ID_HEADER])


async def test_adopt_sets_context_logs_and_response_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tests.observability")
    caplog.handler.addFilter(RequestIdLogFilter())
    async with client(build_app()) as c:
        response = await c.get("/adopt", headers={"x-verified-id": "entry-node-id"})
    assert response.headers[REQUEST_ID_HEADER] == "entry-node-id"
    assert response.json() == {"context": "entry-node-id"}
    adopted = [r for r in caplog.records if r.getMessage() == "adopted"]
    assert adopted[0].request_id == "entry-node-id"  # type: ignore[attr-defined]


async def test_adopt_refuses_malformed_ids() -> None:
    async with client(build_app()) as c:
        response = await c.get("/bad-adopt")
    assert response.status_code == 500
    assert ID.fullmatch(response.headers[REQUEST_ID_HEADER])


async def test_log_records_carry_the_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tests.observability")
    caplog.handler.addFilter(RequestIdLogFilter())
    async with client(build_app()) as c:
        response = await c.get("/id")
    log.info("outside")
    ids = {r.getMessage(): getattr(r, "request_id", None) for r in caplog.records}
    assert ids["serving"] == response.headers[REQUEST_ID_HEADER]
    assert ids["outside"] == "-"


async def test_lifespan_passes_through() -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return next(messages)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    app = RequestIdMiddleware(Starlette())
    await app({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_configure_logging_formats_site_and_id(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before_level, before_handlers = root.level, list(root.handlers)
    try:
        configure_logging("info", "eu")
        handler = configure_logging(logging.INFO, "eu")  # idempotent: replaces, not adds
        assert sum(1 for h in root.handlers if getattr(h, "_cas_handler", False)) == 1
        token = request_id.set("abc123")
        try:
            logging.getLogger("cas.test").info("hello %s", "world")
        finally:
            request_id.reset(token)
        logging.getLogger("cas.test").warning("later")
        lines = capsys.readouterr().err.splitlines()
        assert re.search(r" INFO cas\.test site=eu rid=abc123 hello world$", lines[-2])
        assert re.search(r"^\d{4}-\d\d-\d\d .* WARNING cas\.test site=eu rid=- later$", lines[-1])
    finally:
        root.removeHandler(handler)
        root.setLevel(before_level)
        assert root.handlers == before_handlers


def test_metrics_render_with_labels() -> None:
    metrics = Metrics()
    metrics.observe_forward("us", 0.042)
    with metrics.time_forward("ap"):
        pass
    metrics.forward_error("us", "ErrorTimeout")
    metrics.forward_error("us", 502)
    metrics.failover("us")
    metrics.retry("us")
    metrics.retry("us")
    metrics.request("ews", 200)
    metrics.mailbox("remote", 3)
    text = metrics.render().decode()
    assert 'cas_forward_latency_seconds_bucket{le="0.05",site="us"} 1.0' in text
    assert 'cas_forward_latency_seconds_bucket{le="0.005",site="ap"} 1.0' in text
    assert 'cas_forward_errors_total{code="ErrorTimeout",site="us"} 1.0' in text
    assert 'cas_forward_errors_total{code="502",site="us"} 1.0' in text
    assert 'cas_forward_failovers_total{site="us"} 1.0' in text
    assert 'cas_forward_retries_total{site="us"} 2.0' in text
    assert 'cas_requests_total{endpoint="ews",status="200"} 1.0' in text
    assert 'cas_mailboxes_total{route="remote"} 3.0' in text
    with pytest.raises(ValueError):
        metrics.mailbox("elsewhere")


def test_metrics_of_two_apps_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.retry("us")
    assert 'cas_forward_retries_total{site="us"}' not in b.render().decode()


async def test_metrics_endpoint_serves_the_text_format() -> None:
    metrics = Metrics()
    metrics.request("ews", 200)
    app = Starlette(routes=[Route("/metrics", metrics_endpoint(metrics))])
    async with client(app) as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert 'cas_requests_total{endpoint="ews",status="200"} 1.0' in response.text
