"""What a requester may see of a mailbox's data: who asks, the level they were given, and the
projection of full data down to that level (pure).

Who asks is a `Requester` (name, groups, how that was proven). What they may see of one
mailbox is an `Access`: a permission level (MS-OXCPERM's free/busy rights) and whether private
items are shown in full. Which `Access` a requester has is decided by the mailbox's owning site
(`cas.model.permissions`); `project` applies it, as Exchange's Availability service does:

    level                              answer
    None                               ErrorNoFreeBusyAccess for that mailbox alone
    FreeBusyTimeOnly                   times and busy types; a Detailed view is answered as
                                       FreeBusy (DetailedMerged as FreeBusyMerged), no details
    FreeBusyTimeAndSubjectAndLocation  subject, location and the item's flags; no item ids
    FullDetails                        everything the backend has

At every level a **private** item (CLASS PRIVATE/CONFIDENTIAL) shows only that it is private,
except to the mailbox's owner and to a full-details delegate (`Access.private`).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum

from cas.errors import MailboxError
from cas.model.freebusy import Event, EventDetails, MailboxData

MailboxResult = MailboxData | MailboxError


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

    @property
    def key(self) -> str:
        """Who this is for keying what was answered for them: a digest of the name and every
        group (any case), so two requesters share a key only when both are the same."""
        name = "-" if self.username is None else "u:" + self.username.casefold()
        groups = sorted({g.casefold() for g in self.groups})
        text = "\n".join([name, *groups])
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Level(enum.IntEnum):
    """MS-OXCPERM's free/busy levels, ordered: a higher level sees everything a lower one does."""

    NONE = 0
    TIME_ONLY = 1
    SUBJECT_AND_LOCATION = 2
    FULL_DETAILS = 3

    @property
    def wire(self) -> str:
        """The EWS `FreeBusyAccessLevel` spelling (the site map's)."""
        return LEVEL_NAMES[self]

    @classmethod
    def named(cls, name: str) -> Level:
        """The level of a (checked) site-map spelling; ValueError for anything else."""
        for level, spelling in LEVEL_NAMES.items():
            if spelling.casefold() == name.casefold():
                return level
        raise ValueError(f"not a permission level: {name!r}")


LEVEL_NAMES: dict[Level, str] = {
    Level.NONE: "None",
    Level.TIME_ONLY: "FreeBusyTimeOnly",
    Level.SUBJECT_AND_LOCATION: "FreeBusyTimeAndSubjectAndLocation",
    Level.FULL_DETAILS: "FullDetails",
}

# level -> (any answer, event details, item ids): the one table of what each level shows
LEVEL_SHOWS: dict[Level, tuple[bool, bool, bool]] = {
    Level.NONE: (False, False, False),
    Level.TIME_ONLY: (True, False, False),
    Level.SUBJECT_AND_LOCATION: (True, True, False),
    Level.FULL_DETAILS: (True, True, True),
}


@dataclass(frozen=True, slots=True)
class Access:
    """What one requester may see of one mailbox: a level, whether private items are shown in
    full (the owner, a full-details delegate), and which entry decided it (for logs)."""

    level: Level
    private: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if self.private and self.level is not Level.FULL_DETAILS:
            raise ValueError("only full details can show private items")


OWNER = Access(Level.FULL_DETAILS, private=True, source="owner")


def _item(details: EventDetails | None, access: Access) -> EventDetails | None:
    if details is None:
        return None
    if details.is_private and not access.private:
        return details.masked()
    if not LEVEL_SHOWS[access.level][2] and details.id is not None:
        return replace(details, id=None)
    return details


def project(result: MailboxResult, access: Access, site: str | None = None) -> MailboxResult:
    """`result` (full data from this site's source, or its error) as `access` may see it."""
    answers, details, _ = LEVEL_SHOWS[access.level]
    if not answers:
        return MailboxError.of("ErrorNoFreeBusyAccess", None, site)
    if isinstance(result, MailboxError):
        return result
    if not details:
        events = tuple(_without_details(e) for e in result.events)
        return replace(result, events=events, times_only=True)
    if access.private:  # the owner, a full-details delegate: everything
        return result
    events = tuple(
        e if e.details is None else replace(e, details=_item(e.details, access))
        for e in result.events
    )
    return replace(result, events=events)


def _without_details(event: Event) -> Event:
    return event if event.details is None else replace(event, details=None)
