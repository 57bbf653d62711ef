"""Where each requested mailbox is answered from: the pure routing plan of one request.

`plan_routes` resolves every requested address through the directory and says, per position in
the request, whether the mailbox is unknown, answered from this site's backend, from this site's
legacy server, or by a node of another site. Duplicate addresses share one fetch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from cas.model.availability import MailboxQuery
from sitemap.model import Mailbox, Sitemap


class RouteKind(enum.Enum):
    UNKNOWN = "unknown"
    LOCAL = "local"  # this site's mailbox backend
    LOCAL_LEGACY = "legacy"  # this site's legacy public-folder server
    REMOTE = "remote"  # a node of another site


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    query: MailboxQuery
    mailbox: Mailbox | None = None

    @property
    def key(self) -> str | None:
        """What identifies one fetch: the mailbox's primary address (aliases share it)."""
        return self.mailbox.address.casefold() if self.mailbox else None


def resolve(sitemap: Sitemap, query: MailboxQuery) -> Mailbox | None:
    """The directory entry a query names: by SMTP address or alias, or by legacy DN for EX."""
    if query.routing_type.upper() == "EX":
        wanted = query.address.strip().casefold()
        for mailbox in sitemap.mailboxes:
            if mailbox.legacy_dn and mailbox.legacy_dn.casefold() == wanted:
                return mailbox
        return None
    return sitemap.lookup(query.address)


def plan_routes(sitemap: Sitemap, site: str, queries: Sequence[MailboxQuery]) -> list[Route]:
    routes: list[Route] = []
    for query in queries:
        mailbox = resolve(sitemap, query)
        if mailbox is None:
            routes.append(Route(RouteKind.UNKNOWN, query))
        elif mailbox.site != site:
            routes.append(Route(RouteKind.REMOTE, query, mailbox))
        elif mailbox.kind == "legacy":
            routes.append(Route(RouteKind.LOCAL_LEGACY, query, mailbox))
        else:
            routes.append(Route(RouteKind.LOCAL, query, mailbox))
    return routes
