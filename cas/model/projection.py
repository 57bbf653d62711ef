"""What a requester may see of a mailbox's data (the permission projection).

Until per-calendar permissions exist, every authenticated requester may see free/busy and the
details of ordinary items; of a **private** item (CLASS PRIVATE/CONFIDENTIAL) only the mailbox's
owner sees subject and location, everyone else sees just that it is private, as Exchange does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from cas.model.freebusy import MailboxData


class Proof(StrEnum):
    """How a requester's identity was proven."""

    NONE = "none"  # anonymous, or not proven at this node
    SECRET = "secret"  # a client user's shared secret from the site map (`auth.users`)
    PASSWORD_FILE = "password-file"  # a password checked against a hash in `auth.users_file`
    LDAP = "ldap"  # a simple bind to the organisation's directory
    JWT = "jwt"  # a bearer token signed by the configured issuer
    PEER = "peer"  # vouched for by another node of the cluster (signed forwarding)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: the authenticated user name (None for an anonymous caller), the user's groups
    (from the users file, the directory or the token's claims) and how that was proven."""

    username: str | None = None
    groups: frozenset[str] = frozenset()
    proof: Proof = Proof.NONE

    @property
    def anonymous(self) -> bool:
        return self.username is None

    def owns(self, address: str) -> bool:
        return self.username is not None and self.username.casefold() == address.casefold()

    def in_group(self, name: str) -> bool:
        folded = name.casefold()
        return any(group.casefold() == folded for group in self.groups)


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
