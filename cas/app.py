"""The app factory: one Starlette app for one node of one site, built from settings.

`create_app(settings, sitemap, site, ...)` assembles routes and lifespan in one place.
Production passes a sitemap path and gets real adapters built from it (and reloads it when it
changes or on SIGHUP); tests inject fakes. The lifespan owns connection pools and the reload
watcher and closes them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cas import __version__
from cas.autodiscover import AutodiscoverService
from cas.cache.freshness import CachedBackend, CachePolicy
from cas.cache.remote import RemoteCache
from cas.cache.store import CacheStore, open_store
from cas.endpoints.api import ApiEndpoints
from cas.endpoints.autodiscover import AutodiscoverEndpoints
from cas.endpoints.ews import EwsEndpoint
from cas.endpoints.public import LegacyFrontDoor
from cas.errors import Unauthorized
from cas.forwarder import Forwarder
from cas.identity import build_authenticator
from cas.model.availability import Limits
from cas.observability import (
    Metrics,
    RequestCountMiddleware,
    RequestIdMiddleware,
    metrics_endpoint,
)
from cas.runtime import Runtime, RuntimeHolder, sitemap_path
from cas.service import AvailabilityService
from cas.settings import Settings
from cas.sources.base import MailboxBackend
from cas.trust import PeerTrust, load_cluster_secret
from sitemap.discovery import SiteNodes, SrvResolver
from sitemap.ldapdir import LdapDirectory
from sitemap.model import Site, Sitemap

EWS_PATHS = ("/EWS/Exchange.asmx", "/ews/exchange.asmx", "/EWS/exchange.asmx")
AUTODISCOVER_SOAP_PATHS = ("/autodiscover/autodiscover.svc", "/Autodiscover/Autodiscover.svc")
AUTODISCOVER_POX_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
AUTODISCOVER_JSON_PATH = "/autodiscover/autodiscover.json/v1.0/{address}"
LEGACY_RESOLUTION = 5  # minutes


def default_backends(sitemap: Sitemap, site: str) -> dict[str, MailboxBackend]:
    """Real adapters for the site, as the sitemap describes them."""
    from cas.sources.caldav import CalDavBackend
    from cas.sources.oldserver import LegacyBackend

    backends: dict[str, MailboxBackend] = {}
    config = sitemap.site(site)
    if config.caldav is not None:
        backends["modern"] = CalDavBackend.for_site(config)
    if config.legacy is not None:
        # Read at the finest interval over whole UTC days (what the cache asks for): any window
        # and interval on the 5-minute grid then gets exactly the digits the old server gives.
        backends["legacy"] = LegacyBackend(config.legacy, default_interval=LEGACY_RESOLUTION)
    return backends


def cache_policy(settings: Settings) -> CachePolicy:
    return CachePolicy(
        refresh_seconds=settings.cache_refresh_seconds,
        query_window_seconds=settings.cache_query_window_seconds,
        max_stale_seconds=settings.cache_max_stale_seconds,
        negative_ttl_seconds=settings.cache_negative_seconds,
        fetch_timeout_seconds=settings.request_timeout_seconds,
        local_seconds=settings.cache_local_seconds,
    )


def site_store(settings: Settings, sitemap: Sitemap, site: str, metrics: Metrics) -> CacheStore:
    """The site's Redis, or an in-process store (with a warning) when none is configured."""
    config = sitemap.site(site)
    password = config.redis_password.resolve() if config.redis_password is not None else None
    try:
        return open_store(
            config.redis,
            password=password,
            timeout_seconds=settings.redis_timeout_seconds,
            observer=metrics,
        )
    except ValueError as exc:
        raise ConfigurationError(f"site {site}: redis: {exc}") from None


def admin_token(settings: Settings) -> str | None:
    if not settings.admin_token_file:
        return None
    try:
        with open(settings.admin_token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConfigurationError(f"admin_token_file: {exc}") from None
    if len(token) < 16:
        raise ConfigurationError("admin_token_file: the token must be at least 16 characters")
    return token


class ConfigurationError(Exception):
    """A setting points at something unusable (a missing secret file, a bad CA bundle)."""


def peer_tls_context(settings: Settings) -> ssl.SSLContext:
    """How nodes verify each other: against `peer_ca_file`, else httpx's default CA bundle."""
    if not settings.peer_ca_file:
        return httpx.create_ssl_context(trust_env=False)
    try:
        return ssl.create_default_context(cafile=settings.peer_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"peer_ca_file {settings.peer_ca_file}: {exc}") from None


def peer_client(settings: Settings) -> httpx.AsyncClient:
    """The pooled keep-alive client nodes use to reach each other, verifying the cluster CA."""
    return httpx.AsyncClient(
        verify=peer_tls_context(settings),
        trust_env=False,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
    )


def cluster_secrets(settings: Settings) -> list[bytes]:
    if not settings.cluster_secret_file:
        return []
    try:
        return load_cluster_secret(settings.cluster_secret_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cluster_secret_file: {exc}") from None


def start_directory(sitemap: Sitemap) -> None:
    """Read an LDAP directory before the node serves from it (or from its cache file), and keep
    refreshing it; `DirectoryUnavailable` (a ValueError: a reload keeps the running one)."""
    if isinstance(sitemap.directory, LdapDirectory):
        sitemap.directory.load()
        sitemap.directory.start()


def stop_directory(sitemap: Sitemap, keep: Sitemap | None = None) -> None:
    """Stop refreshing `sitemap`'s LDAP directory, unless `keep` uses the same one. Requests
    still holding the old generation keep its last content."""
    directory = sitemap.directory
    if isinstance(directory, LdapDirectory) and (keep is None or keep.directory is not directory):
        directory.stop()


def _same_backends(old: Site, new: Site) -> bool:
    return (old.caldav, old.legacy) == (new.caldav, new.legacy)


def runtime_builder(
    settings: Settings,
    site: str,
    injected: Mapping[str, MailboxBackend] | None,
    *,
    secrets: list[bytes],
    client: httpx.AsyncClient,
    metrics: Metrics,
    store: CacheStore,
    cache_injected: bool = False,
) -> Callable[[Sitemap, Runtime | None], Runtime]:
    """A function that builds one configuration generation from a sitemap.

    Backends are reused from the previous generation while the site's backend configuration
    is unchanged, and so is the DNS resolver (with its cache) while the `dns` section is.
    """

    def build(sitemap: Sitemap, previous: Runtime | None) -> Runtime:
        config = sitemap.site(site)
        start_directory(sitemap)
        policy = cache_policy(settings)
        if injected is not None:
            backends = dict(injected)
            if cache_injected:
                backends = {
                    kind: CachedBackend(b, store, site, policy, metrics=metrics)
                    for kind, b in backends.items()
                }
        elif previous is not None and _same_backends(previous.sitemap.site(site), config):
            backends = previous.backends
        else:
            backends = {
                kind: CachedBackend(b, store, site, policy, metrics=metrics)
                for kind, b in default_backends(sitemap, site).items()
            }
        if previous is not None and previous.sitemap.dns == sitemap.dns:
            resolver = previous.autodiscover.nodes.resolver
        else:
            resolver = SrvResolver(sitemap.dns)
        forwarder = None
        if secrets:
            forwarder = Forwarder(
                site,
                SiteNodes(sitemap, resolver, local_site=site),
                client,
                secrets,
                metrics=metrics,
                attempts=settings.forward_attempts,
                max_response_bytes=settings.max_peer_response_bytes,
            )
        if previous is not None:
            stop_directory(previous.sitemap, keep=sitemap)
        return Runtime(
            sitemap=sitemap,
            authenticator=build_authenticator(
                sitemap, previous.authenticator if previous else None
            ),
            availability=AvailabilityService(
                sitemap,
                site,
                backends=backends,
                forwarder=forwarder,
                remote_cache=RemoteCache(store, settings.remote_cache_seconds, metrics=metrics),
                concurrency=settings.backend_concurrency,
                timeout_seconds=settings.request_timeout_seconds,
                hop_limit=settings.hop_limit,
                metrics=metrics,
            ),
            autodiscover=AutodiscoverService(
                sitemap, SiteNodes(sitemap, resolver, local_site=site)
            ),
            backends=backends,
        )

    return build


def create_app(
    settings: Settings,
    sitemap: Sitemap,
    site: str,
    *,
    backends: Mapping[str, MailboxBackend] | None = None,
    path: str | None = None,
    store: CacheStore | None = None,
    cache_injected_backends: bool = False,
) -> Starlette:
    """The node app. `path` (the sitemap file) enables reload on change and on SIGHUP.

    Backends built from the sitemap are cached in the site's store; injected ones (tests) only
    when `cache_injected_backends` is set. `store` overrides the site's Redis (tests).
    """
    sitemap.site(site)  # KeyError for an unknown site, before anything starts
    secrets = cluster_secrets(settings)
    token = admin_token(settings)
    metrics = Metrics()
    store = store if store is not None else site_store(settings, sitemap, site, metrics)
    client = peer_client(settings)
    holder = RuntimeHolder(
        runtime_builder(
            settings,
            site,
            backends,
            secrets=secrets,
            client=client,
            metrics=metrics,
            store=store,
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

    ews_endpoint = EwsEndpoint(
        current,
        trust=PeerTrust(secrets, site) if secrets else None,
        limits=limits,
        max_body_bytes=settings.max_body_bytes,
        year=lambda: datetime.datetime.now(datetime.UTC).year,
    )
    autodiscover = AutodiscoverEndpoints(current)
    api = ApiEndpoints(
        current,
        store,
        site=site,
        limits=limits,
        max_body_bytes=settings.max_body_bytes,
        admin_token=token,
    )
    legacy_door = LegacyFrontDoor(current, limits=limits)
    state = {"ready": False, "draining": False}

    async def health_refusal(request: Request) -> Response | None:
        """None when the health door lets this caller in (anonymous by default), else the 401."""
        authenticator = holder.current.authenticator
        try:
            await authenticator.authenticate(request, "health")
        except Unauthorized as fault:
            return PlainTextResponse(
                fault.message, fault.http_status, headers=authenticator.challenge()
            )
        return None

    async def healthz(request: Request) -> Response:
        """Liveness: "ok" for probes; with `Accept: application/json`, also version and site."""
        refusal = await health_refusal(request)
        if refusal is not None:
            return refusal
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"status": "ok", "version": __version__, "site": site})
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        refusal = await health_refusal(request)
        if refusal is not None:
            return refusal
        if state["ready"] and not state["draining"]:
            return PlainTextResponse("ready")
        reason = "draining: shutting down" if state["draining"] else "not ready"
        return PlainTextResponse(reason, status_code=503)

    def drain() -> None:
        """Leave readiness (on SIGTERM); requests keep being served until the server stops."""
        state["draining"] = True

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = None
        if holder.path is not None:
            holder.install_sighup()
            watcher = asyncio.create_task(holder.watch(settings.reload_check_seconds))
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            if watcher is not None:
                watcher.cancel()
            stop_directory(holder.current.sitemap)
            await holder.aclose()
            await client.aclose()
            await store.aclose()

    routes = [Route(p, ews_endpoint.handle, methods=["POST"]) for p in EWS_PATHS]
    routes += [Route(p, autodiscover.soap, methods=["POST"]) for p in AUTODISCOVER_SOAP_PATHS]
    routes += [Route(p, autodiscover.pox, methods=["POST"]) for p in AUTODISCOVER_POX_PATHS]
    routes += [Route(AUTODISCOVER_JSON_PATH, autodiscover.json, methods=["GET"])]
    routes += [Route(p, legacy_door.freebusy, methods=["GET"]) for p in ("/public/", "/public")]
    routes += [Route("/api/v1/availability", api.availability, methods=["POST"])]
    routes += [Route("/api/v1/cache/invalidate", api.invalidate, methods=["POST"])]
    routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    routes += [Route("/metrics", metrics_endpoint(metrics))]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(RequestCountMiddleware, metrics=metrics),
        ],
    )
    app.state.metrics = metrics
    app.state.drain = drain
    app.state.holder = holder
    app.state.site = site
    return app
