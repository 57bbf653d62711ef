"""The availability service: answers one request from the right source for every mailbox.

It plans the routes (`cas.routing`): one batch per source, each mailbox once. It calls every
source with its batch at once, under the ask's one deadline, and fills the answer by position.
A source that has not answered by the deadline is cut off, and its mailboxes get that
source's own "did not answer" error. A source that breaks costs only its own mailboxes.
Nothing here raises for a single mailbox's trouble.

The site that owns a mailbox decides what the requester may see of it: data from this site's
own sources is projected here to the level the permission policy gives the requester
(`cas.model.permissions`, `cas.model.projection`); data from another site arrives already
projected by that site.

A forwarded request (hop >= hop limit) is answered only for this site's own mailboxes; a
mailbox of another site gets an error instead of a further hop, so requests can never loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from cas.cache.cached import CachedSource
from cas.errors import CLIENT_DETAIL_CODES, MailboxError
from cas.model.ask import Ask
from cas.model.availability import AvailabilityRequest, MailboxResult
from cas.model.permissions import PermissionPolicy
from cas.model.projection import Requester, project
from cas.observability import Metrics
from cas.routing import Plan, local_target, plan_routes, site_target
from cas.sources.base import Answers, PathOwned, Source, Versioned, key_of
from sitemap.model import Mailbox, Sitemap

log = logging.getLogger(__name__)

DEADLINE_GRACE = 0.05


class AvailabilityService:
    """Answers availability requests at a node of `site` from `sources` (by routing target)."""

    def __init__(
        self,
        sitemap: Sitemap,
        site: str,
        sources: Mapping[str, Source],
        *,
        timeout_seconds: float = 10.0,
        hop_limit: int = 1,
        metrics: Metrics | None = None,
        permissions: PermissionPolicy | None = None,
    ) -> None:
        self.sitemap = sitemap
        self.site = site
        self.sources = dict(sources)
        self.timeout_seconds = timeout_seconds
        self.hop_limit = hop_limit
        self.metrics = metrics
        self.permissions = permissions if permissions is not None else PermissionPolicy()

    def ask(
        self,
        request: AvailabilityRequest,
        requester: Requester,
        *,
        hop: int = 0,
        budget_seconds: float | None = None,
        request_id: str = "-",
    ) -> Ask:
        """The request's `Ask`: its deadline is this node's timeout, or the caller's budget."""
        timeout = self.timeout_seconds
        if budget_seconds is not None:
            timeout = max(0.0, min(timeout, budget_seconds))
        return Ask.of(request, requester, timeout_seconds=timeout, hop=hop, request_id=request_id)

    async def availability(self, request: AvailabilityRequest, ask: Ask) -> list[MailboxResult]:
        plan = plan_routes(
            self.sitemap, self.site, request.mailboxes,
            targets=self.sources, hop=ask.hop, hop_limit=self.hop_limit,
        )  # fmt: skip
        if self.metrics is not None:
            for kind, count in plan.kinds().items():
                self.metrics.mailbox(kind, count)
        answers = await self._gather(plan, ask)
        results = plan.fill(answers)
        for position, route in enumerate(plan.routes):
            mailbox = route.mailbox
            if mailbox is not None and mailbox.site == self.site:
                access = self.permissions.access(mailbox, ask.requester)
                results[position] = project(results[position], access, self.site)
        return results if ask.hop > 0 else self._for_client(plan, results, ask)

    def _for_client(
        self, plan: Plan, results: list[MailboxResult], ask: Ask
    ) -> list[MailboxResult]:
        """Per-mailbox errors as a client sees them (`MailboxError.for_client`). A detail the
        client is not told is logged once per request, with how many mailboxes it cost; a plain
        one (a deadline, an open breaker, already logged once by its breaker) is not."""
        details: dict[tuple[str, str, str | None], list[str]] = {}
        shown: list[MailboxResult] = []
        for route, result in zip(plan.routes, results, strict=True):
            if isinstance(result, MailboxError):
                if not result.plain and result.code not in CLIENT_DETAIL_CODES:
                    where = (result.code, result.message, result.site)
                    details.setdefault(where, []).append(route.query.address)
                result = result.for_client(ask.request_id)
            shown.append(result)
        for (code, message, site), addresses in details.items():
            log.info(
                "%d mailbox(es) of site %s answered %s (first %s): %s",
                len(addresses), site or "-", code, addresses[0], message,
            )  # fmt: skip
        return shown

    async def versions(self, mailboxes: Sequence[Mailbox], ask: Ask) -> dict[str, str | None]:
        """The current version of each of this site's mailboxes (None: not known), confirmed
        with the backend at most once per validation interval; other sites check their copies
        against these."""
        batches: dict[str, list[Mailbox]] = {}
        for mailbox in mailboxes:
            if mailbox.site == self.site:
                batches.setdefault(local_target(mailbox.kind), []).append(mailbox)
        found: dict[str, str | None] = {key_of(m): None for m in mailboxes}
        for target, batch in batches.items():
            source = self.sources.get(target)
            if isinstance(source, Versioned):
                found.update(await source.versions(batch, ask))
        return found

    def mailbox_for(self, path: str) -> Mailbox | None:
        """The site's mailbox whose calendar holds `path` (as a storage hook reports it)."""
        mine = [m for m in self.sitemap.mailboxes_of(self.site) if m.kind == "modern"]
        source = self.sources.get(local_target("modern"))
        return source.mailbox_for(path, mine) if isinstance(source, PathOwned) else None

    def drop_locally(self, address: str) -> None:
        """Another node of the site dropped a mailbox: drop this node's first-level copies."""
        mailbox = self.sitemap.lookup(address) or Mailbox(address, self.site)
        for source in self.sources.values():
            if isinstance(source, CachedSource):
                source.drop_locally(mailbox)

    async def forget(self, mailbox: Mailbox) -> int:
        """Drop what this node's caches hold of `mailbox`: its site's entries when the site is
        this one, and this node's copies of another site's answers about it; how many."""
        targets = [local_target(mailbox.kind)] if mailbox.site == self.site else []
        targets.append(site_target(mailbox.site))
        dropped = 0
        for target in targets:
            source = self.sources.get(target)
            if source is not None:
                dropped += await source.forget(mailbox)
        return dropped

    async def _gather(self, plan: Plan, ask: Ask) -> dict[str, Answers]:
        calls = {
            target: asyncio.create_task(self._call(self.sources[target], mailboxes, ask))
            for target, mailboxes in plan.batches.items()
        }
        if calls:
            # Sources answer by the deadline themselves; the grace only catches one that does not.
            _, late = await asyncio.wait(calls.values(), timeout=ask.left() + DEADLINE_GRACE)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "%d source(s) not finished within %.1fs", len(late), ask.timeout_seconds
                )
        answers: dict[str, Answers] = {}
        for target, task in calls.items():
            source, mailboxes = self.sources[target], plan.batches[target]
            got = task.result() if task.done() and not task.cancelled() else {}
            late_error = source.unanswered(ask)
            answers[target] = {key_of(m): got.get(key_of(m), late_error) for m in mailboxes}
        return answers

    async def _call(self, source: Source, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        try:
            return await source.fetch(mailboxes, ask)
        except Exception:
            # A bug in a source costs its own mailboxes, never the whole request.
            log.exception("source %s failed", source.name)
            error = MailboxError.of(
                "ErrorFreeBusyGenerationFailed", "An internal error occurred; it has been logged.",
                source.site,
            )  # fmt: skip
            return {key_of(m): error for m in mailboxes}
