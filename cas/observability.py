"""Observability: request ids across hops, log lines that carry them, and Prometheus metrics.

* Request ids. `RequestIdMiddleware` gives every HTTP request an id, puts it in the `request_id`
  context variable and in the `X-Request-Id` response header of every answer, errors included.
  An incoming id is taken only when `trust(scope)` says so; otherwise the endpoint calls
  `adopt(id)` once it has verified a forwarded request's token, and the adopted id replaces the
  generated one for the rest of the request and in the response header.
* Logs. `RequestIdLogFilter` stamps each record with the current id; `configure_logging` installs
  the root handler `cas serve` uses.
* Metrics. `Metrics` owns its own `CollectorRegistry`, so tests can build several apps;
  `metrics_endpoint(metrics)` serves it in the text exposition format.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "ROUTES",
    "Metrics",
    "RequestIdLogFilter",
    "RequestIdMiddleware",
    "adopt",
    "configure_logging",
    "current_request_id",
    "is_valid_request_id",
    "metrics_endpoint",
    "new_request_id",
    "request_id",
]

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
logger = logging.getLogger(__name__)

request_id: ContextVar[str | None] = ContextVar("cas_request_id", default=None)


@dataclass(slots=True)
class _Slot:
    """The id the middleware will put in the response header; `adopt` may replace it."""

    value: str


_slot: ContextVar[_Slot | None] = ContextVar("cas_request_id_slot", default=None)


def new_request_id() -> str:
    """A fresh id: 16 url-safe characters (96 random bits)."""
    return secrets.token_urlsafe(12)


def is_valid_request_id(value: str) -> bool:
    return bool(_VALID_ID.fullmatch(value))


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    slot = _slot.get()
    return slot.value if slot is not None else request_id.get()


def adopt(value: str) -> None:
    """Make `value` the id of the current request (in logs and in the response header).

    Call only after the request proved it comes from a node (a verified forwarding token);
    ids from anyone else are never adopted. Raises ValueError for a malformed id.
    """
    if not is_valid_request_id(value):
        raise ValueError(f"malformed request id {value!r}")
    request_id.set(value)
    slot = _slot.get()
    if slot is not None:
        slot.value = value


class RequestIdMiddleware:
    """Plain ASGI middleware: an id per HTTP request, in the context and every response.

    Place it outermost (wrap the Starlette app, or first in `middleware=`) so that answers
    built by error handlers pass through it. If the app raises before answering, the
    middleware logs the error with the id, answers 500 itself and re-raises.
    """

    def __init__(
        self,
        app: ASGIApp,
        header: str = REQUEST_ID_HEADER,
        trust: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.header = header
        self._header_key = header.lower().encode("latin-1")
        self.trust = trust

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slot = _Slot(self._incoming(scope) or new_request_id())
        slot_token = _slot.set(slot)
        id_token = request_id.set(slot.value)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != self._header_key]
                headers.append((self._header_key, slot.value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error while serving %s", scope.get("path", "?"))
            if not started:
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise
        finally:
            request_id.reset(id_token)
            _slot.reset(slot_token)

    def _incoming(self, scope: Scope) -> str | None:
        if self.trust is None or not self.trust(scope):
            return None
        for key, value in scope.get("headers", []):
            if key == self._header_key:
                text = value.decode("latin-1")
                return text if is_valid_request_id(text) else None
        return None


# -- logging -------------------------------------------------------------------------------------


class RequestIdLogFilter(logging.Filter):
    """Adds `record.request_id` (the current id, "-" outside requests); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


_HANDLER_MARK = "_cas_handler"


def configure_logging(level: int | str, site: str) -> logging.Handler:
    """Install (or replace) the root handler: time, level, logger, site, request id, message.

    Give uvicorn `log_config=None` so its loggers propagate here and carry the id too.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdLogFilter())
    site_text = site.replace("%", "%%")
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s site={site_text} rid=%(request_id)s %(message)s"
        )
    )
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # One line per backend or peer call is debugging detail, not the node's story.
    chatty = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(chatty)
    return handler


# -- metrics -------------------------------------------------------------------------------------

# Which front door a path belongs to (a closed set of label values), first match wins.
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("/ews/", "ews"),
    ("/autodiscover/", "autodiscover"),
    ("/public", "legacy"),
    ("/api/v1/availability", "json"),
    ("/api/v1/cache/", "admin"),
)


def endpoint_of(path: str) -> str:
    lowered = path.lower()
    return next((name for prefix, name in ENDPOINTS if lowered.startswith(prefix)), "other")


class RequestCountMiddleware:
    """Counts every HTTP answer by front door and status (`cas_requests_total`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_of(scope.get("path", ""))

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.request(endpoint, int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


ROUTES = ("local", "remote", "legacy", "unknown")
BREAKER_LEVELS = {"closed": 0, "half-open": 1, "open": 2}
FORWARD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own.

    Label values must come from closed sets (site names from the sitemap, EWS response codes or
    HTTP statuses, endpoint names), never from request input, to keep cardinality bounded.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.forward_latency = Histogram(
            "cas_forward_latency_seconds",
            "Latency of requests forwarded to another site, by target site.",
            ["site"],
            buckets=FORWARD_BUCKETS,
            registry=r,
        )
        self.forward_errors = Counter(
            "cas_forward_errors",
            "Forwarded requests that failed, by target site and error code.",
            ["site", "code"],
            registry=r,
        )
        self.forward_failovers = Counter(
            "cas_forward_failovers",
            "Times a forwarded request moved on to another node of the target site.",
            ["site"],
            registry=r,
        )
        self.forward_retries = Counter(
            "cas_forward_retries",
            "Retries of forwarded requests, by target site.",
            ["site"],
            registry=r,
        )
        self.requests = Counter(
            "cas_requests",
            "Requests served, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.mailboxes = Counter(
            "cas_mailboxes",
            "Mailboxes asked about, by route (local, remote, legacy, unknown).",
            ["route"],
            registry=r,
        )

        self.cache_events = Counter(
            "cas_cache_events",
            "Cache outcomes: hit, miss, stale (served stale), revalidated (unchanged ctag), "
            "changed (ctag moved: dropped), single_flight_wait, remote_hit.",
            ["event"],
            registry=r,
        )
        self.redis_errors = Counter(
            "cas_redis_errors", "Failed calls to the site's Redis, by kind.", ["kind"], registry=r
        )
        self.redis_breaker = Gauge(
            "cas_redis_breaker_state",
            "The Redis circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )

        self.breaker_state = Gauge(
            "cas_breaker_state",
            "Each dependency's circuit breaker (kind: caldav, oldserver, peer, redis; target: "
            "its site or node): 0 closed, 1 half-open, 2 open.",
            ["kind", "target"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "cas_breaker_transitions",
            "Circuit breaker transitions, by dependency and the state entered.",
            ["kind", "target", "state"],
            registry=r,
        )
        self.overload_refusals = Counter(
            "cas_overload_refusals",
            "Requests answered 503 because the node had too many in flight.",
            registry=r,
        )
        self.connections_dropped = Counter(
            "cas_connections_dropped",
            "Client connections closed or refused by the node: idle (no request in time), "
            "headers (not complete in time), too-many (past max_connections).",
            ["reason"],
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "cas_requests_in_flight", "Requests being served now (health probes excepted).",
            registry=r,
        )  # fmt: skip

    def observe_forward(self, site: str, seconds: float) -> None:
        self.forward_latency.labels(site=site).observe(seconds)

    @contextlib.contextmanager
    def time_forward(self, site: str) -> Iterator[None]:
        """Observe the latency of the enclosed forward, whether it succeeds or fails."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe_forward(site, time.perf_counter() - start)

    def forward_error(self, site: str, code: str | int) -> None:
        self.forward_errors.labels(site=site, code=str(code)).inc()

    def failover(self, site: str) -> None:
        self.forward_failovers.labels(site=site).inc()

    def retry(self, site: str) -> None:
        self.forward_retries.labels(site=site).inc()

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def mailbox(self, route: str, count: int = 1) -> None:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        self.mailboxes.labels(route=route).inc(count)

    # cache and Redis (the store reports through `error` and `breaker`)
    def cache(self, event: str) -> None:
        self.cache_events.labels(event=event).inc()

    def error(self, kind: str) -> None:
        self.redis_errors.labels(kind=kind).inc()

    def breaker(self, state: str) -> None:
        self.redis_breaker.set(BREAKER_LEVELS.get(state, 2))

    def breaker_known(self, kind: str, target: str) -> None:
        self.breaker_state.labels(kind=kind, target=target).set(0)

    def breaker_transition(self, kind: str, target: str, state: str) -> None:
        self.breaker_state.labels(kind=kind, target=target).set(BREAKER_LEVELS.get(state, 2))
        self.breaker_transitions.labels(kind=kind, target=target, state=state).inc()

    def connection_dropped(self, reason: str) -> None:
        self.connections_dropped.labels(reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving `metrics` in the Prometheus text format."""

    async def endpoint(request: Request) -> Response:
        return Response(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return endpoint
