"""The mailbox directory a site map answers lookups from: a fixed list, or one kept up to date.

`Sitemap.mailboxes` is a `Directory`: a sequence of `Mailbox` values that also answers
`lookup(address)` (address or alias, any case), `by_legacy_dn(dn)` and the groups
(`group(address)`, `groups_of(address)`). Two kinds exist:

* `StaticDirectory`: the YAML/CSV mailboxes, fixed for the life of one loaded site map;
* `LiveDirectory`: a directory whose content is replaced as a whole (`replace(snapshot)`) when
  its source is read again, e.g. `sitemap.ldapdir.LdapDirectory`. Readers see either the old
  or the new `Snapshot`, never a mix: each call reads the current snapshot once.

A `Snapshot` holds the indexes, built once per content, so a lookup is one dict read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import overload

from sitemap.model import Mailbox

__all__ = ["Directory", "Group", "LiveDirectory", "Snapshot", "StaticDirectory"]


@dataclass(frozen=True, slots=True)
class Group:
    """A group of the directory: its name, its address (if it has one) and its members'
    mailbox addresses, nested groups expanded."""

    name: str
    address: str | None = None
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """One content of a directory, with its indexes."""

    mailboxes: tuple[Mailbox, ...] = ()
    groups: tuple[Group, ...] = ()
    by_address: MappingProxyType[str, Mailbox] = field(init=False, repr=False, compare=False)
    by_dn: MappingProxyType[str, Mailbox] = field(init=False, repr=False, compare=False)
    group_index: MappingProxyType[str, Group] = field(init=False, repr=False, compare=False)
    membership: MappingProxyType[str, tuple[Group, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_address: dict[str, Mailbox] = {}
        by_dn: dict[str, Mailbox] = {}
        for mailbox in self.mailboxes:
            for name in (mailbox.address, *mailbox.aliases):
                by_address[name.casefold()] = mailbox
            if mailbox.legacy_dn:
                by_dn.setdefault(mailbox.legacy_dn.casefold(), mailbox)
        groups: dict[str, Group] = {}
        membership: dict[str, list[Group]] = {}
        for group in self.groups:
            groups.setdefault(group.name.casefold(), group)
            if group.address:
                groups.setdefault(group.address.casefold(), group)
            for member in group.members:
                membership.setdefault(member.casefold(), []).append(group)
        object.__setattr__(self, "by_address", MappingProxyType(by_address))
        object.__setattr__(self, "by_dn", MappingProxyType(by_dn))
        object.__setattr__(self, "group_index", MappingProxyType(groups))
        frozen = {k: tuple(v) for k, v in membership.items()}
        object.__setattr__(self, "membership", MappingProxyType(frozen))


class Directory(Sequence[Mailbox]):
    """A sequence of mailboxes that answers lookups; see the module docstring."""

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Mailbox: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mailbox]: ...

    def __getitem__(self, index: int | slice) -> Mailbox | Sequence[Mailbox]:
        return self.snapshot().mailboxes[index]

    def __len__(self) -> int:
        return len(self.snapshot().mailboxes)

    def __iter__(self) -> Iterator[Mailbox]:
        return iter(self.snapshot().mailboxes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Directory):
            return self.snapshot().mailboxes == other.snapshot().mailboxes
        if isinstance(other, tuple):
            return self.snapshot().mailboxes == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def lookup(self, address: str) -> Mailbox | None:
        """The mailbox an address or alias names (case-insensitive), or None."""
        return self.snapshot().by_address.get(address.strip().casefold())

    def by_legacy_dn(self, legacy_dn: str) -> Mailbox | None:
        return self.snapshot().by_dn.get(legacy_dn.strip().casefold())

    @property
    def groups(self) -> tuple[Group, ...]:
        return self.snapshot().groups

    def group(self, name_or_address: str) -> Group | None:
        return self.snapshot().group_index.get(name_or_address.strip().casefold())

    def groups_of(self, address: str) -> tuple[Group, ...]:
        """The groups whose members include the mailbox `address` names."""
        snapshot = self.snapshot()
        mailbox = snapshot.by_address.get(address.strip().casefold())
        key = mailbox.address.casefold() if mailbox else address.strip().casefold()
        return snapshot.membership.get(key, ())


class StaticDirectory(Directory):
    """The mailboxes written in the site map (YAML or CSV)."""

    def __init__(self, mailboxes: Iterable[Mailbox] = (), groups: Iterable[Group] = ()) -> None:
        self._snapshot = Snapshot(tuple(mailboxes), tuple(groups))

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def __repr__(self) -> str:
        return f"StaticDirectory({len(self)} mailboxes)"


class LiveDirectory(Directory):
    """A directory whose content is replaced whole when its source is read again.

    It starts empty (`loaded` False) until the first `replace`."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self.loaded = False

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def replace(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot  # one reference swap: readers see the old or the new one
        self.loaded = True
