"""The app factory: one Starlette app for one node of one site, built from settings.

`create_app(settings, sitemap, site, backends=...)` assembles routes and lifespan in one place.
Production passes nothing and gets real adapters built from the sitemap; tests inject fakes. The
lifespan owns the backends' connection pools and closes them on shutdown.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from cas.auth import BasicAuthenticator
from cas.backends.base import MailboxBackend
from cas.endpoints.ews import EwsEndpoint
from cas.model.availability import Limits
from cas.service import AvailabilityService
from cas.settings import Settings
from sitemap.model import Sitemap

EWS_PATHS = ("/EWS/Exchange.asmx", "/ews/exchange.asmx", "/EWS/exchange.asmx")


def default_backends(sitemap: Sitemap, site: str) -> dict[str, MailboxBackend]:
    """Real adapters for the site, as the sitemap describes them."""
    from cas.backends.caldav import CalDavBackend

    backends: dict[str, MailboxBackend] = {}
    config = sitemap.site(site)
    if config.caldav is not None:
        backends["modern"] = CalDavBackend.for_site(config)
    return backends


def create_app(
    settings: Settings,
    sitemap: Sitemap,
    site: str,
    *,
    backends: Mapping[str, MailboxBackend] | None = None,
) -> Starlette:
    sitemap.site(site)  # KeyError for an unknown site, before anything starts
    chosen = dict(backends) if backends is not None else default_backends(sitemap, site)
    service = AvailabilityService(
        sitemap,
        site,
        backends=chosen,
        concurrency=settings.backend_concurrency,
        timeout_seconds=settings.request_timeout_seconds,
    )
    ews_endpoint = EwsEndpoint(
        service,
        BasicAuthenticator(sitemap.auth),
        limits=Limits(settings.max_mailboxes, settings.window_max_days),
        max_body_bytes=settings.max_body_bytes,
        year=lambda: datetime.datetime.now(datetime.timezone.utc).year,
    )
    state = {"ready": False}

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if state["ready"]:
            return PlainTextResponse("ready")
        return PlainTextResponse("not ready", status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            for backend in chosen.values():
                await backend.aclose()

    routes = [Route(path, ews_endpoint.handle, methods=["POST"]) for path in EWS_PATHS]
    routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    app.state.site = site
    return app
