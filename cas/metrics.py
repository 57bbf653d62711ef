"""Prometheus metrics of a node: what they are, who counts them, and the endpoint serving them.

`Metrics` owns its own `CollectorRegistry`, so tests can build several apps;
`metrics_endpoint(metrics)` serves it in the text exposition format. `RequestCountMiddleware`
counts every answer by front door and status. Label values come from closed sets only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

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
    "ENDPOINTS",
    "ROUTES",
    "GateLike",
    "Metrics",
    "RequestCountMiddleware",
    "endpoint_of",
    "metrics_endpoint",
]

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
        self.throttled = Counter(
            "cas_throttled",
            "Requests refused because their requester asked for too much, by front door.",
            ["endpoint"],
            registry=r,
        )
        self.limits = Gauge(
            "cas_limit", "The node's limits, by setting (cas/settings.py).", ["setting"], registry=r
        )
        self.source_gauges = {
            what: Gauge(f"cas_source_{what}", text, ["source"], registry=r)
            for what, text in (
                ("limit", "Most calls at once this node makes to a backend, by source."),
                ("in_flight", "Calls to a backend under way now, by source."),
                ("waiting", "Calls waiting for their turn at a backend, by source."),
            )
        }

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

    # breakers and connections
    def breaker_known(self, kind: str, target: str) -> None:
        self.breaker_state.labels(kind=kind, target=target).set(0)

    def breaker_transition(self, kind: str, target: str, state: str) -> None:
        self.breaker_state.labels(kind=kind, target=target).set(BREAKER_LEVELS.get(state, 2))
        self.breaker_transitions.labels(kind=kind, target=target, state=state).inc()

    def connection_dropped(self, reason: str) -> None:
        self.connections_dropped.labels(reason=reason).inc()

    # limits and throttling
    def throttle(self, endpoint: str) -> None:
        self.throttled.labels(endpoint=endpoint).inc()

    def show_limits(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.limits.labels(setting=name).set(value)

    def watch_gate(self, gate: GateLike) -> None:
        """Report `gate`'s limit and counts as they are when scraped (a newer gate of the same
        source, after a reload, replaces it)."""
        gauges = self.source_gauges
        gauges["limit"].labels(source=gate.name).set(gate.limit)
        gauges["in_flight"].labels(source=gate.name).set_function(lambda: gate.in_flight)
        gauges["waiting"].labels(source=gate.name).set_function(lambda: gate.waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GateLike(Protocol):
    """What `Metrics.watch_gate` reads (`cas.sources.gate.Gate`)."""

    name: str
    limit: int
    in_flight: int
    waiting: int


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving `metrics` in the Prometheus text format."""

    async def endpoint(request: Request) -> Response:
        return Response(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return endpoint
