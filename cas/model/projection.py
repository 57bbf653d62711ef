"""What a requester may see of a mailbox's data (the permission projection).

Until per-calendar permissions exist, every authenticated requester may see free/busy and the
details of ordinary items; of a **private** item (CLASS PRIVATE/CONFIDENTIAL) only the mailbox's
owner sees subject and location, everyone else sees just that it is private, as Exchange does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cas.model.freebusy import MailboxData


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: the authenticated user name, or None for an anonymous caller."""

    username: str | None = None

    def owns(self, address: str) -> bool:
        return self.username is not None and self.username.casefold() == address.casefold()


def project(data: MailboxData, requester: Requester, owner_address: str) -> MailboxData:
    if requester.owns(owner_address):
        return data
    if not any(e.details is not None and e.details.is_private for e in data.events):
        return data
    events = tuple(
        replace(e, details=e.details.masked())
        if e.details is not None and e.details.is_private
        else e
        for e in data.events
    )
    return replace(data, events=events)
