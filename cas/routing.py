"""Where each requested mailbox is answered from: the pure routing plan of one request.

`plan_routes` resolves every requested address through the directory and gives, per position
in the request, either the source that answers it (`local:modern`, `local:legacy`, `site:us`,
...) or the error it gets right away (an unknown address; another site's mailbox in a request
that may not be forwarded again; a kind or site this node has no source for). `Plan.batches`
is the one batch per source, each mailbox once however many positions name it; `Plan.fill`
puts the sources' answers back in request order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from cas.errors import MailboxError
from cas.model.availability import MailboxQuery, MailboxResult
from cas.sources.base import key_of
from sitemap.model import Mailbox, Sitemap

PROXY_FAILED = "ErrorProxyRequestProcessingFailed"


def local_target(kind: str) -> str:
    return f"local:{kind}"


def site_target(site: str) -> str:
    return f"site:{site}"


@dataclass(frozen=True, slots=True)
class Route:
    query: MailboxQuery
    mailbox: Mailbox | None = None
    target: str | None = None  # the source answering it, or None with `error`
    error: MailboxError | None = None

    @property
    def kind(self) -> str:
        """For metrics: unknown, local, legacy or remote."""
        if self.mailbox is None:
            return "unknown"
        if self.target is not None and self.target.startswith("site:"):
            return "remote"
        if self.error is not None and self.error.code == PROXY_FAILED:
            return "remote"
        return "legacy" if self.mailbox.kind == "legacy" else "local"


@dataclass(frozen=True)
class Plan:
    routes: tuple[Route, ...]
    batches: dict[str, list[Mailbox]] = field(default_factory=dict)

    def kinds(self) -> Counter[str]:
        return Counter(route.kind for route in self.routes)

    def fill(self, answers: Mapping[str, Mapping[str, MailboxResult]]) -> list[MailboxResult]:
        """One result per position: the route's error, or its source's answer."""
        results: list[MailboxResult] = []
        for route in self.routes:
            if route.error is not None:
                results.append(route.error)
            else:
                assert route.target is not None and route.mailbox is not None
                results.append(answers[route.target][key_of(route.mailbox)])
        return results


def resolve(sitemap: Sitemap, query: MailboxQuery) -> Mailbox | None:
    """The directory entry a query names: by SMTP address or alias, or by legacy DN for EX."""
    if query.routing_type.upper() == "EX":
        return sitemap.directory.by_legacy_dn(query.address)
    return sitemap.lookup(query.address)


def plan_routes(
    sitemap: Sitemap,
    site: str,
    queries: Sequence[MailboxQuery],
    *,
    targets: Collection[str],
    hop: int = 0,
    hop_limit: int = 1,
) -> Plan:
    """The plan of one request at a node of `site` that has sources for `targets`."""
    routes: list[Route] = []
    batches: dict[str, dict[str, Mailbox]] = {}
    for query in queries:
        route = _route(sitemap, site, query, targets, hop, hop_limit)
        routes.append(route)
        if route.target is not None and route.mailbox is not None:
            batches.setdefault(route.target, {}).setdefault(key_of(route.mailbox), route.mailbox)
    return Plan(tuple(routes), {t: list(found.values()) for t, found in batches.items()})


def _route(
    sitemap: Sitemap,
    site: str,
    query: MailboxQuery,
    targets: Collection[str],
    hop: int,
    hop_limit: int,
) -> Route:
    mailbox = resolve(sitemap, query)
    if mailbox is None:
        error = MailboxError.of("ErrorMailRecipientNotFound", query.address)
        return Route(query, error=error)
    if mailbox.site == site:
        target = local_target(mailbox.kind)
        if target in targets:
            return Route(query, mailbox, target)
        detail = f"No {mailbox.kind} backend is configured for site {site!r}."
        return Route(
            query,
            mailbox,
            error=MailboxError.of("ErrorFreeBusyGenerationFailed", detail, site, plain=True),
        )
    there = mailbox.site
    if hop >= hop_limit:
        detail = (
            f"Mailbox lives in site {there!r}, not in {site!r} which this forwarded "
            f"request was sent to; the hop limit ({hop_limit}) stops it here."
        )
        return Route(query, mailbox, error=MailboxError.of(PROXY_FAILED, detail, there, plain=True))
    target = site_target(there)
    if target in targets:
        return Route(query, mailbox, target)
    detail = (
        f"Mailbox lives in site {there!r}; this node serves {site!r} and "
        "cross-site forwarding is not configured (no cluster secret)."
    )
    return Route(query, mailbox, error=MailboxError.of(PROXY_FAILED, detail, there, plain=True))
