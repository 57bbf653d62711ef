"""The availability service: answers one request from the right source for every mailbox.

It plans the routes (`cas.planning`), fetches each distinct local mailbox once, forwards the
other sites' mailboxes (`cas.forwarder`), all in parallel under a per-request concurrency bound
and one deadline, and returns one result per requested position: `MailboxData` or a
`MailboxError`. Nothing here raises for a single mailbox's trouble.

A forwarded request (hop >= hop limit) is answered only for this site's own mailboxes; a mailbox
of another site gets an error instead of a further hop, so requests can never loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping

from cas.cache.remote import RemoteCache
from cas.errors import BackendFailure, MailboxError
from cas.forwarder import Forwarder, ForwardItem
from cas.model.availability import AvailabilityRequest, MailboxResult
from cas.model.freebusy import MailboxData, Window
from cas.model.projection import Requester, project
from cas.observability import Metrics
from cas.planning import Route, RouteKind, plan_routes
from cas.sources.base import MailboxBackend
from sitemap.model import Mailbox, Sitemap

log = logging.getLogger(__name__)


class AvailabilityService:
    """Answers availability requests for the mailboxes of `site`.

    `backends` maps a mailbox kind (`"modern"`, `"legacy"`) to the backend serving it in this
    site; a kind without a backend is reported per mailbox, not as a crash. `forwarder`, when
    given, answers other sites' mailboxes through their nodes.
    """

    def __init__(
        self,
        sitemap: Sitemap,
        site: str,
        *,
        backends: Mapping[str, MailboxBackend],
        forwarder: Forwarder | None = None,
        remote_cache: RemoteCache | None = None,
        concurrency: int = 32,
        timeout_seconds: float = 10.0,
        hop_limit: int = 1,
        metrics: Metrics | None = None,
    ) -> None:
        self.sitemap = sitemap
        self.site = site
        self.backends = dict(backends)
        self.forwarder = forwarder
        self.remote_cache = remote_cache
        self.concurrency = concurrency
        self.timeout_seconds = timeout_seconds
        self.hop_limit = hop_limit
        self.metrics = metrics

    async def availability(
        self,
        request: AvailabilityRequest,
        requester: Requester,
        *,
        hop: int = 0,
        budget_seconds: float | None = None,
        request_id: str = "-",
    ) -> list[MailboxResult]:
        timeout = self.timeout_seconds
        if budget_seconds is not None:
            timeout = max(0.0, min(timeout, budget_seconds))
        deadline = time.monotonic() + timeout
        routes = plan_routes(self.sitemap, self.site, request.mailboxes)
        if self.metrics is not None:
            for kind, count in Counter(route.kind.value for route in routes).items():
                self.metrics.mailbox(kind, count)
        gate = asyncio.Semaphore(self.concurrency)

        local: dict[str, asyncio.Task[MailboxResult]] = {}
        remote: list[ForwardItem] = []
        answers: dict[int, MailboxResult] = {}
        for position, route in enumerate(routes):
            if route.kind is RouteKind.UNKNOWN:
                answers[position] = MailboxError.of(
                    "ErrorMailRecipientNotFound", route.query.address
                )
            elif route.kind is RouteKind.REMOTE:
                refusal = self._refuse_remote(route, hop)
                if refusal is not None:
                    answers[position] = refusal
                else:
                    assert route.mailbox is not None
                    remote.append(ForwardItem(position, route.query, route.mailbox))
            elif route.key not in local:
                assert route.key is not None
                local[route.key] = asyncio.create_task(
                    self._answer_local(route, request.window, gate)
                )

        waiting: list[asyncio.Task[object]] = list(local.values())  # type: ignore[arg-type]
        forwarded: asyncio.Task[dict[int, MailboxResult]] | None = None
        if remote:
            forwarded = asyncio.create_task(
                self._forward(remote, request, requester, deadline, hop, request_id)
            )
            waiting.append(forwarded)  # type: ignore[arg-type]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            if late:
                log.warning("%d task(s) not finished within %.1fs", len(late), timeout)

        if forwarded is not None and forwarded.done() and not forwarded.cancelled():
            answers.update(forwarded.result())
        results: list[MailboxResult] = []
        for position, route in enumerate(routes):
            if position in answers:
                results.append(answers[position])
            elif route.kind is RouteKind.REMOTE:
                assert route.mailbox is not None
                results.append(
                    MailboxError.of(
                        "ErrorProxyRequestProcessingFailed",
                        f"Site {route.mailbox.site!r} did not answer within {timeout:g}s.",
                        route.mailbox.site,
                    )
                )
            else:
                assert route.key is not None
                results.append(self._local_result(local[route.key], route, requester, timeout))
        return results

    async def _forward(
        self,
        items: list[ForwardItem],
        request: AvailabilityRequest,
        requester: Requester,
        deadline: float,
        hop: int,
        request_id: str,
    ) -> dict[int, MailboxResult]:
        """Other sites' answers: the entry node's recent copies first, the rest forwarded."""
        assert self.forwarder is not None
        answers: dict[int, MailboxResult] = {}
        if self.remote_cache is not None:
            copies = await self.remote_cache.get([i.mailbox for i in items], request, requester)
            answers = {i.position: c for i, c in zip(items, copies) if c is not None}
            items = [i for i in items if i.position not in answers]
        if items:
            fresh = await self.forwarder.forward(
                items, request, requester, deadline=deadline, hop=hop, request_id=request_id
            )
            answers.update(fresh)
            if self.remote_cache is not None:
                await self.remote_cache.put(
                    [i.mailbox for i in items],
                    [fresh[i.position] for i in items],
                    request,
                    requester,
                )
        return answers

    def _refuse_remote(self, route: Route, hop: int) -> MailboxError | None:
        assert route.mailbox is not None
        site = route.mailbox.site
        if hop >= self.hop_limit:
            return MailboxError.of(
                "ErrorProxyRequestProcessingFailed",
                f"Mailbox lives in site {site!r}, not in {self.site!r} which this forwarded "
                f"request was sent to; the hop limit ({self.hop_limit}) stops it here.",
                site,
            )
        if self.forwarder is None:
            return MailboxError.of(
                "ErrorProxyRequestProcessingFailed",
                f"Mailbox lives in site {site!r}; this node serves {self.site!r} and "
                "cross-site forwarding is not configured (no cluster secret).",
                site,
            )
        return None

    def _local_result(
        self, task: asyncio.Task[MailboxResult], route: Route, requester: Requester, timeout: float
    ) -> MailboxResult:
        if task.cancelled() or not task.done():
            return MailboxError.of(
                "ErrorFreeBusyGenerationFailed",
                f"The backend did not answer within {timeout:g}s.",
                self.site,
            )
        result = task.result()
        if isinstance(result, MailboxData) and route.mailbox is not None:
            result = project(result, requester, route.mailbox.address)
        return result

    async def _answer_local(
        self, route: Route, window: Window, gate: asyncio.Semaphore
    ) -> MailboxResult:
        assert route.mailbox is not None
        mailbox = route.mailbox
        backend = self.backends.get(mailbox.kind)
        if backend is None:
            return MailboxError.of(
                "ErrorFreeBusyGenerationFailed",
                f"No {mailbox.kind} backend is configured for site {self.site!r}.",
                self.site,
            )
        async with gate:
            return await self._fetch(backend, mailbox, window)

    async def _fetch(
        self, backend: MailboxBackend, mailbox: Mailbox, window: Window
    ) -> MailboxResult:
        try:
            return await backend.fetch(mailbox, window)
        except BackendFailure as exc:
            log.warning("backend failed for %s: %s", mailbox.address, exc)
            return MailboxError.of("ErrorFreeBusyGenerationFailed", str(exc), self.site)
        except Exception:
            # A bug in an adapter costs its own mailbox, never the whole request.
            log.exception("unexpected error reading %s", mailbox.address)
            return MailboxError.of(
                "ErrorFreeBusyGenerationFailed",
                "An internal error occurred; it has been logged.",
                self.site,
            )
