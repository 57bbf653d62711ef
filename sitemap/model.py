"""Typed values of a loaded site map: the organisation's sites and its mailbox directory.

Everything here is frozen and already validated by `sitemap.load`; code that holds a `Sitemap`
can rely on every reference (a mailbox's site, a site's backend) being present and well formed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

MailboxKind = Literal["modern", "legacy"]
NodeScheme = Literal["http", "https"]

DEFAULT_COST = 100
"""The cost from one site to another when the first site's `costs` does not name the second."""


class SecretUnavailable(Exception):
    """A referenced secret (environment variable or file) could not be read."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives: an environment variable or a file. Never the secret itself."""

    env: str | None = None
    file: str | None = None

    def resolve(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailable(f"environment variable {self.env} is not set")
            return value
        if self.file is not None:
            try:
                return Path(self.file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretUnavailable(f"cannot read secret file {self.file}: {exc}") from exc
        raise SecretUnavailable("secret reference names neither env nor file")

    def describe(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


DiscoveryMode = Literal["template", "principal", "search"]
DISCOVERY_MODES: tuple[DiscoveryMode, ...] = ("template", "principal", "search")


@dataclass(frozen=True, slots=True)
class CalDavBackendConfig:
    """A site's CalDAV mailbox backend.

    `discovery` says which calendars count for a mailbox: `template`, the one calendar at
    `calendar_path`; `principal`, every opaque calendar in the calendar home of the principal at
    `principal_path`; `search`, the same for the principal a search by address finds. Both paths
    are templates relative to `url`; `{address}` and `{local}` (the part before the @) are
    filled in per mailbox. A mailbox's own `calendar_url` always wins. Discovered calendars are
    found again after `discovery_refresh_seconds`.
    """

    url: str
    username: str | None = None
    password: SecretRef | None = None
    calendar_path: str = "{address}/calendar/"
    max_connections: int = 10
    timeout_seconds: float = 10.0
    verify_tls: bool | str = True
    discovery: DiscoveryMode = "template"
    principal_path: str = "{address}/"
    discovery_refresh_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class LegacyServerConfig:
    """A site's old server, asked for legacy mailboxes at `url` (its `/public/` root)."""

    url: str
    username: str | None = None
    password: SecretRef | None = None
    timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """Where SRV names are resolved. No `nameservers`: the system's resolver configuration."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class WorkingHoursSpec:
    """Working days (English weekday names) and minutes after local midnight."""

    days: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
    start_minute: int = 8 * 60
    end_minute: int = 17 * 60


def _no_costs() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Site:
    """One site. Its nodes are the static `nodes` plus whatever the SRV name `srv` gives now
    (targets reached with `node_scheme`); `costs` maps other site names to the cost of reaching
    them from here (see `cost_to`)."""

    name: str
    nodes: tuple[str, ...] = ()
    timezone: str = "UTC"
    caldav: CalDavBackendConfig | None = None
    working_hours: WorkingHoursSpec = field(default_factory=WorkingHoursSpec)
    srv: str | None = None
    node_scheme: NodeScheme = "https"
    costs: Mapping[str, int] = field(default_factory=_no_costs, hash=False)
    legacy: LegacyServerConfig | None = None
    redis: str | None = None
    redis_password: SecretRef | None = None

    @property
    def has_nodes(self) -> bool:
        """Whether the site names any node at all (static or through DNS SRV)."""
        return bool(self.nodes) or self.srv is not None

    def cost_to(self, other: str) -> int:
        """Cost of reaching site `other` from this one: 0 to itself, else `costs` or 100."""
        if other == self.name:
            return 0
        return self.costs.get(other, DEFAULT_COST)


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    site: str
    kind: MailboxKind = "modern"
    legacy_dn: str | None = None
    aliases: tuple[str, ...] = ()
    display_name: str | None = None
    timezone: str | None = None
    calendar_url: str | None = None
    working_hours: WorkingHoursSpec | None = None

    @property
    def local_part(self) -> str:
        return self.address.split("@", 1)[0]


@dataclass(frozen=True, slots=True)
class ClientUser:
    """A client allowed to call the node (HTTP Basic)."""

    username: str
    password: SecretRef


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Who may call the node. `anonymous` lets anyone in (labs, trusted networks only)."""

    users: tuple[ClientUser, ...] = ()
    anonymous: bool = False


@dataclass(frozen=True)
class Sitemap:
    source: str
    sites: tuple[Site, ...]
    mailboxes: tuple[Mailbox, ...]
    domains: tuple[str, ...] = ()
    auth: ClientAuth = field(default_factory=ClientAuth)
    settings: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    dns: DnsConfig | None = None
    _index: Mapping[str, Mailbox] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, Mailbox] = {}
        for mailbox in self.mailboxes:
            for name in (mailbox.address, *mailbox.aliases):
                index[name.casefold()] = mailbox
        object.__setattr__(self, "_index", MappingProxyType(index))

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)

    def lookup(self, address: str) -> Mailbox | None:
        """The mailbox an address or alias names (case-insensitive), or None."""
        return self._index.get(address.strip().casefold())

    def mailboxes_of(self, site: str) -> tuple[Mailbox, ...]:
        return tuple(m for m in self.mailboxes if m.site == site)
