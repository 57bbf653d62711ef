"""The app factory: one Starlette app for one node of one site, built from settings.

`create_app(settings, sitemap, site, ...)` assembles routes, middleware and lifespan in one
place. Production passes a sitemap path and gets real sources built from it
(`cas.wiring`), reloaded when the file changes or on SIGHUP; tests inject fakes. Errors become
HTTP answers in one middleware (`cas.endpoints.errors`). The lifespan owns connection pools and
the reload watcher and closes them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Mapping

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cas import __version__
from cas.breaker_board import BreakerBoard
from cas.cache.store import CacheStore
from cas.changes import CHANGES_PATH, follow_forgotten
from cas.config import (
    admin_token,
    breaker_policy,
    change_token,
    cluster_secrets,
    peer_client,
    site_store,
)
from cas.endpoints.api import ApiEndpoints
from cas.endpoints.autodiscover import AutodiscoverEndpoints
from cas.endpoints.changes import ChangeEndpoints
from cas.endpoints.errors import FaultMiddleware
from cas.endpoints.ews import EwsEndpoint
from cas.endpoints.overload import InFlightLimit
from cas.endpoints.presence import PresenceEndpoints
from cas.endpoints.public import LegacyFrontDoor
from cas.model.availability import Limits
from cas.observability import (
    Metrics,
    RequestCountMiddleware,
    RequestIdMiddleware,
    metrics_endpoint,
)
from cas.presence.hub import PresenceHub
from cas.presence.state import Shape
from cas.runtime import Runtime, RuntimeHolder, sitemap_path
from cas.settings import Settings
from cas.sources.base import MailboxReader
from cas.sources.peers import VERSIONS_PATH
from cas.throttle import Throttle
from cas.trust import PeerTrust
from cas.wiring import runtime_builder, stop_directory
from sitemap.model import Sitemap

EWS_PATHS = ("/EWS/Exchange.asmx", "/ews/exchange.asmx", "/EWS/exchange.asmx")
AUTODISCOVER_SOAP_PATHS = ("/autodiscover/autodiscover.svc", "/Autodiscover/Autodiscover.svc")
AUTODISCOVER_POX_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
AUTODISCOVER_JSON_PATH = "/autodiscover/autodiscover.json/v1.0/{address}"
# The settings that bound what a node does, shown as `cas_limit{setting=...}`.
LIMIT_SETTINGS = (
    "max_mailboxes", "window_max_days", "max_body_bytes", "request_timeout_seconds",
    "backend_concurrency", "oldserver_concurrency", "throttle_rate", "throttle_burst",
    "hop_limit", "max_peer_response_bytes",
)  # fmt: skip


def unconfirmed_bound(settings: Settings) -> float:
    """How long presence takes data as current without its source vouching for it again: the
    setting, or (0) the longest a cache serves data unconfirmed (the validation interval, else
    the refresh interval; the old servers' refresh), plus one re-ask and one request timeout."""
    if settings.presence_max_unconfirmed_seconds > 0:
        return settings.presence_max_unconfirmed_seconds
    validate = settings.cache_validate_seconds
    served = validate if validate > 0 else settings.cache_refresh_seconds
    served = max(served, settings.oldserver_refresh_seconds)
    return served + settings.presence_reask_seconds + settings.request_timeout_seconds


def create_app(
    settings: Settings,
    sitemap: Sitemap,
    site: str,
    *,
    backends: Mapping[str, MailboxReader] | None = None,
    path: str | None = None,
    store: CacheStore | None = None,
    peers: httpx.AsyncClient | None = None,
    cache_injected_backends: bool = False,
) -> Starlette:
    """The node app. `path` (the sitemap file) enables reload on change and on SIGHUP.

    Sources built from the sitemap are cached in the site's store. Tests inject per-kind
    readers (`backends`), cached only when `cache_injected_backends` is set. `store` overrides the site's Redis, `peers` the
    client other nodes are reached with (tests).
    """
    sitemap.site(site)  # KeyError for an unknown site, before anything starts
    secrets = cluster_secrets(settings)
    token = admin_token(settings)
    metrics = Metrics()
    board = BreakerBoard(breaker_policy(settings), metrics=metrics)
    store = store if store is not None else site_store(settings, sitemap, site, metrics, board)
    client = peers if peers is not None else peer_client(settings)
    holder = RuntimeHolder(
        runtime_builder(
            settings,
            site,
            backends,
            secrets=secrets,
            client=client,
            metrics=metrics,
            store=store,
            board=board,
            cache_injected=cache_injected_backends,
        ),
        sitemap,
        path=sitemap_path(path),
        site=site,
        grace_seconds=settings.request_timeout_seconds + 5,
    )

    def current() -> Runtime:
        return holder.current

    limits = Limits(settings.max_mailboxes, settings.window_max_days)
    throttle = Throttle(
        store, site, rate=settings.throttle_rate, burst=settings.throttle_burst, metrics=metrics
    )
    metrics.show_limits({name: float(getattr(settings, name)) for name in LIMIT_SETTINGS})

    ews_endpoint = EwsEndpoint(
        current,
        trust=PeerTrust(secrets, site) if secrets else None,
        limits=limits,
        max_body_bytes=settings.max_body_bytes,
        year=lambda: datetime.datetime.now(datetime.UTC).year,
        throttle=throttle,
        body_timeout_seconds=settings.http_body_timeout_seconds,
    )
    autodiscover = AutodiscoverEndpoints(
        current, body_timeout_seconds=settings.http_body_timeout_seconds
    )
    api = ApiEndpoints(
        current,
        site=site,
        limits=limits,
        max_body_bytes=settings.max_body_bytes,
        admin_token=token,
        throttle=throttle,
        body_timeout_seconds=settings.http_body_timeout_seconds,
    )
    legacy_door = LegacyFrontDoor(current, limits=limits, throttle=throttle)
    changes = ChangeEndpoints(
        current,
        site=site,
        tokens=[t for t in (change_token(settings), token) if t],
        trust=PeerTrust(secrets, site) if secrets else None,
    )
    hub = PresenceHub(
        lambda: holder.current.availability,
        Shape(settings.presence_slots, settings.presence_slot_minutes),
        max_streams=settings.presence_max_streams,
        reask_seconds=settings.presence_reask_seconds,
        max_unconfirmed_seconds=unconfirmed_bound(settings),
        batch=settings.max_mailboxes,
    )
    presence = PresenceEndpoints(
        current,
        hub,
        max_addresses=settings.presence_max_addresses,
        heartbeat_seconds=settings.presence_heartbeat_seconds,
        throttle=throttle,
    )
    state = {"ready": False, "draining": False}

    async def healthz(request: Request) -> Response:
        """Liveness: "ok" for probes; with `Accept: application/json`, also the version, the
        site and every dependency's breaker (what `cas doctor` shows); never fails for them."""
        await holder.current.authenticator.authenticate(request, "health")
        if "application/json" in request.headers.get("accept", ""):
            document = {"status": "ok", "version": __version__, "site": site}
            return JSONResponse(document | {"breakers": board.snapshot()})
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        await holder.current.authenticator.authenticate(request, "health")
        if state["ready"] and not state["draining"]:
            return PlainTextResponse("ready")
        reason = "draining: shutting down" if state["draining"] else "not ready"
        return PlainTextResponse(reason, status_code=503)

    def drain() -> None:
        """Leave readiness (on SIGTERM); requests keep being served until the server stops."""
        state["draining"] = True
        hub.drain()  # presence streams end with a retry hint, so clients go to another node

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        def forgotten(address: str) -> None:
            holder.current.availability.drop_locally(address)
            hub.changed(address)  # presence reads the mailbox again and pushes what changed

        follower = asyncio.create_task(follow_forgotten(store, site, forgotten))
        hub.start()
        watcher = None
        if holder.path is not None:
            holder.install_sighup()
            watcher = asyncio.create_task(holder.watch(settings.reload_check_seconds))
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            follower.cancel()
            await hub.aclose()
            if watcher is not None:
                watcher.cancel()
            stop_directory(holder.current.sitemap)
            await holder.aclose()
            await client.aclose()
            await throttle.aclose()
            await store.aclose()

    routes = [Route(p, ews_endpoint.handle, methods=["POST"]) for p in EWS_PATHS]
    routes += [Route(p, autodiscover.soap, methods=["POST"]) for p in AUTODISCOVER_SOAP_PATHS]
    routes += [Route(p, autodiscover.pox, methods=["POST"]) for p in AUTODISCOVER_POX_PATHS]
    routes += [Route(AUTODISCOVER_JSON_PATH, autodiscover.json, methods=["GET"])]
    routes += [Route(p, legacy_door.freebusy, methods=["GET"]) for p in ("/public/", "/public")]
    routes += [Route("/api/v1/availability", api.availability, methods=["POST"])]
    routes += [Route("/api/v1/cache/invalidate", api.invalidate, methods=["POST"])]
    routes += [Route("/api/v1/changes", changes.changed, methods=["POST"])]
    routes += [Route(CHANGES_PATH, changes.internal_changes, methods=["POST"])]
    routes += [Route(VERSIONS_PATH, changes.internal_versions, methods=["POST"])]
    routes += [Route("/api/v1/presence", presence.many, methods=["POST"])]
    routes += [Route("/api/v1/presence/stream", presence.stream, methods=["GET"])]
    routes += [Route("/api/v1/presence/{address}", presence.one, methods=["GET"])]
    routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    routes += [Route("/metrics", metrics_endpoint(metrics))]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(RequestCountMiddleware, metrics=metrics),
            Middleware(
                InFlightLimit,
                limit=settings.max_requests_in_flight,
                on_change=metrics.requests_in_flight.set,
                on_refused=metrics.overload_refusals.inc,
            ),
            Middleware(FaultMiddleware),
        ],
    )
    app.state.metrics = metrics
    app.state.breakers = board
    app.state.drain = drain
    app.state.holder = holder
    app.state.presence = hub
    app.state.site = site
    return app
