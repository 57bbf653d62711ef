"""The availability service: answers one request from the right source for every mailbox.

It plans the routes (`cas.planning`), fetches each distinct mailbox once, all in parallel under
a per-request concurrency bound and one deadline, and returns one result per requested position:
`MailboxData` or a `MailboxError`. Nothing here raises for a single mailbox's trouble.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from cas.backends.base import MailboxBackend
from cas.errors import BackendFailure, MailboxError
from cas.model.availability import AvailabilityRequest, MailboxResult
from cas.model.freebusy import MailboxData, Window
from cas.model.projection import Requester, project
from cas.planning import Route, RouteKind, plan_routes
from sitemap.model import Mailbox, Sitemap

log = logging.getLogger(__name__)


class AvailabilityService:
    """Answers availability requests for the mailboxes of `site`.

    `backends` maps a mailbox kind (`"modern"`, `"legacy"`) to the backend serving it in this
    site; a kind without a backend is reported per mailbox, not as a crash.
    """

    def __init__(
        self,
        sitemap: Sitemap,
        site: str,
        *,
        backends: Mapping[str, MailboxBackend],
        concurrency: int = 32,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.sitemap = sitemap
        self.site = site
        self.backends = dict(backends)
        self.concurrency = concurrency
        self.timeout_seconds = timeout_seconds

    async def availability(
        self, request: AvailabilityRequest, requester: Requester
    ) -> list[MailboxResult]:
        routes = plan_routes(self.sitemap, self.site, request.mailboxes)
        window = request.window
        gate = asyncio.Semaphore(self.concurrency)
        pending: dict[str, asyncio.Task[MailboxResult]] = {}
        for route in routes:
            if route.key is not None and route.key not in pending:
                pending[route.key] = asyncio.create_task(self._answer(route, window, gate))
        started = time.monotonic()
        if pending:
            done, not_done = await asyncio.wait(pending.values(), timeout=self.timeout_seconds)
            for task in not_done:
                task.cancel()
            if not_done:
                log.warning(
                    "%d mailbox(es) not answered within %.1fs", len(not_done), self.timeout_seconds
                )
        log.debug("answered %d mailboxes in %.3fs", len(pending), time.monotonic() - started)

        results: list[MailboxResult] = []
        for route in routes:
            if route.key is None:
                results.append(MailboxError.of("ErrorMailRecipientNotFound", route.query.address))
                continue
            task = pending[route.key]
            if task.cancelled() or not task.done():
                results.append(
                    MailboxError.of(
                        "ErrorFreeBusyGenerationFailed",
                        f"The backend did not answer within {self.timeout_seconds:g}s.",
                        self.site,
                    )
                )
                continue
            result = task.result()
            if isinstance(result, MailboxData) and route.mailbox is not None:
                result = project(result, requester, route.mailbox.address)
            results.append(result)
        return results

    async def _answer(self, route: Route, window: Window, gate: asyncio.Semaphore) -> MailboxResult:
        assert route.mailbox is not None
        mailbox = route.mailbox
        if route.kind is RouteKind.REMOTE:
            return MailboxError.of(
                "ErrorProxyRequestProcessingFailed",
                f"Mailbox lives in site {mailbox.site!r}; this node serves {self.site!r} and "
                "cross-site forwarding is not configured.",
                mailbox.site,
            )
        backend = self.backends.get(mailbox.kind)
        if backend is None:
            return MailboxError.of(
                "ErrorFreeBusyGenerationFailed",
                f"No {mailbox.kind} backend is configured for site {self.site!r}.",
                self.site,
            )
        async with gate:
            return await self._fetch(backend, mailbox, window)

    async def _fetch(self, backend: MailboxBackend, mailbox: Mailbox, window: Window) -> MailboxResult:
        try:
            return await backend.fetch(mailbox, window)
        except BackendFailure as exc:
            log.warning("backend failed for %s: %s", mailbox.address, exc)
            return MailboxError.of("ErrorFreeBusyGenerationFailed", str(exc), self.site)
        except Exception:
            # A bug in an adapter costs its own mailbox, never the whole request.
            log.exception("unexpected error reading %s", mailbox.address)
            return MailboxError.of(
                "ErrorFreeBusyGenerationFailed", "An internal error occurred; it has been logged.",
                self.site,
            )
