"""Who may see what of whose calendar: the resolver the mailbox's owning site decides with.

`PermissionPolicy(config)` is built once per site map (`sitemap.model.Permissions`: the
organisation default, the level of callers without a login, grants on every mailbox, and the
entries each mailbox's owner set) and answers `access(mailbox, requester)` with an `Access`
(`cas.model.projection`). Pure: no I/O; a lookup is a few dictionary reads.

Precedence: the most specific entry wins
----------------------------------------
1. The mailbox's owner (the requester's name is the mailbox's address or an alias): full
   details, private items included.
2. An entry on the mailbox naming the requester.
3. Entries on the mailbox naming groups of the requester: the highest of them.
4. The mailbox's own default.
5. An organisation-wide grant naming the requester.
6. Organisation-wide grants naming groups of the requester: the highest of them.
7. The organisation default.

A caller without a login gets the `anonymous` level (by default the organisation default),
but never more than the mailbox's default: a mailbox closed to colleagues without a grant is
closed to strangers too.

Why most specific rather than the highest of every matching entry: an owner must be able to
give one person less than everyone else gets (an entry of `None` for a user keeps them out even
when the default or a group lets others in), as an explicit entry on an Exchange calendar
folder replaces its Default entry. Among groups at one step there is no order to go by, so
the highest wins, as Exchange adds up the rights of a user's groups.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cas.model.projection import OWNER, Access, Level, Requester
from sitemap.model import Grant, Mailbox, Permissions


def _access(grant: Grant, source: str) -> Access:
    return Access(Level.named(grant.level), private=grant.delegate, source=source)


def _best(found: Iterable[Access]) -> Access | None:
    best: Access | None = None
    for access in found:
        if best is None or (access.level, access.private) > (best.level, best.private):
            best = access
    return best


@dataclass(frozen=True, slots=True)
class _Rules:
    """The entries of one calendar, or the organisation's: by user, by group, a default."""

    users: Mapping[str, Access]
    groups: Mapping[str, Access]
    default: Access | None

    @classmethod
    def of(cls, grants: Iterable[Grant], default: str | None, where: str) -> _Rules:
        users: dict[str, Access] = {}
        groups: dict[str, Access] = {}
        for grant in grants:
            if grant.user is not None:
                users[grant.user.casefold()] = _access(grant, f"{where}: user {grant.user}")
            elif grant.group is not None:
                groups[grant.group.casefold()] = _access(grant, f"{where}: group {grant.group}")
        fallback = None
        if default is not None:
            fallback = Access(Level.named(default), source=f"{where}: default")
        return cls(users, groups, fallback)

    def user(self, name: str | None) -> Access | None:
        return None if name is None else self.users.get(name)

    def group(self, folded: frozenset[str]) -> Access | None:
        if not self.groups or not folded:
            return None
        if len(folded) < len(self.groups):
            return _best(a for g in folded if (a := self.groups.get(g)) is not None)
        return _best(a for g, a in self.groups.items() if g in folded)


_NOTHING = _Rules({}, {}, None)


@functools.lru_cache(maxsize=4096)
def _folded(groups: frozenset[str]) -> frozenset[str]:
    return frozenset(g.casefold() for g in groups)


class PermissionPolicy:
    """The organisation's permissions, indexed for lookups (see the module docstring)."""

    def __init__(self, config: Permissions | None = None) -> None:
        config = config if config is not None else Permissions()
        self.config = config
        self.default = Access(Level.named(config.default), source="organisation default")
        anonymous = config.anonymous if config.anonymous is not None else config.default
        self.anonymous = Access(Level.named(anonymous), source="anonymous")
        self._org = _Rules.of(config.grants, None, "organisation")
        self._mailboxes = {
            address: _Rules.of(entry.grants, entry.default, address)
            for address, entry in config.mailboxes.items()
        }
        self._named_groups = frozenset(self._org.groups).union(
            *(rules.groups for rules in self._mailboxes.values())
        )

    def access(self, mailbox: Mailbox, requester: Requester) -> Access:
        """What `requester` may see of `mailbox`."""
        name = None if requester.username is None else requester.username.casefold()
        if name is not None and _owner(name, mailbox):
            return OWNER
        rules = self._rules(mailbox)
        if name is None:
            ceiling = rules.default or self.default
            return self.anonymous if self.anonymous.level <= ceiling.level else ceiling
        groups = _folded(requester.groups)
        return (
            rules.user(name)
            or rules.group(groups)
            or rules.default
            or self._org.user(name)
            or self._org.group(groups)
            or self.default
        )

    def relevant_groups(self, requester: Requester) -> frozenset[str]:
        """The requester's groups that some entry names: all another site needs to decide."""
        if not self._named_groups:
            return frozenset()
        return frozenset(g for g in requester.groups if g.casefold() in self._named_groups)

    def _rules(self, mailbox: Mailbox) -> _Rules:
        if not self._mailboxes:
            return _NOTHING
        found = self._mailboxes.get(mailbox.address.casefold())
        if found is None:
            for alias in mailbox.aliases:  # an LDAP directory: entries may name an alias
                found = self._mailboxes.get(alias.casefold())
                if found is not None:
                    break
        return found or _NOTHING


def _owner(name: str, mailbox: Mailbox) -> bool:
    return name == mailbox.address.casefold() or any(name == a.casefold() for a in mailbox.aliases)


__all__ = ["PermissionPolicy"]
