"""Typed values of a loaded site map: the organisation's sites and its mailbox directory.

Everything here is frozen and already validated by `sitemap.load`; code that holds a `Sitemap`
can rely on every reference (a mailbox's site, a site's backend) being present and well formed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sitemap.directory import Directory

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


def _no_sites() -> Mapping[str, str]:
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
    """A client allowed to call the node (HTTP Basic), its password kept as a secret reference."""

    username: str
    password: SecretRef


DOORS = ("ews", "api", "public", "autodiscover", "autodiscover_json", "health")
"""The front doors a node has, as `auth.anonymous` names them."""

DEFAULT_ANONYMOUS_DOORS = ("autodiscover_json", "health")
"""The doors open without credentials unless `auth.anonymous` says otherwise."""


@dataclass(frozen=True, slots=True)
class LdapServer:
    """The organisation's directory server (the top-level `ldap` section).

    `bind_dn` and `password` are the service account the node searches with; without them the
    node searches anonymously. `ca_file` verifies `ldaps://` and StartTLS."""

    url: str
    bind_dn: str | None = None
    password: SecretRef | None = None
    start_tls: bool = False
    ca_file: str | None = None
    timeout_seconds: float = 5.0
    page_size: int = 500


GroupMode = Literal["member_of", "search", "none"]


@dataclass(frozen=True, slots=True)
class LdapLogin:
    """HTTP Basic checked by a simple bind to the directory (`auth.ldap`).

    The user's entry is found under `user_base` with `user_filter` ({user}: the name given,
    escaped); the node then binds as that entry with the password given. Groups come from the
    entry's `member_of_attribute` (`member_of`), or from a search under `group_base` with
    `group_filter` ({dn}: the user's DN, escaped) (`search`); a group is named by its
    `group_name_attribute`."""

    user_base: str
    user_filter: str = "(&(objectClass=person)(|(uid={user})(mail={user})))"
    groups: GroupMode = "member_of"
    member_of_attribute: str = "memberOf"
    group_base: str | None = None
    group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    group_name_attribute: str = "cn"


@dataclass(frozen=True, slots=True)
class JwtIssuer:
    """Bearer tokens (JWTs) of an OpenID Connect issuer (`auth.jwt`), verified with the keys
    its `jwks_url` publishes; the user is `username_claim`, the groups `groups_claim`."""

    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256",)
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    leeway_seconds: float = 30.0
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Who may call the node, and how callers prove it.

    `users` are the plain client users of old site maps (a secret each); `users_file` is a file
    of users with password hashes; `ldap` checks passwords against the directory; `jwt` accepts
    bearer tokens. `anonymous` (true) opens every door; otherwise `anonymous_doors` are the
    doors served without credentials. Verified credentials are remembered `cache_seconds`."""

    users: tuple[ClientUser, ...] = ()
    anonymous: bool = False
    anonymous_doors: tuple[str, ...] = DEFAULT_ANONYMOUS_DOORS
    users_file: str | None = None
    ldap: LdapLogin | None = None
    jwt: JwtIssuer | None = None
    cache_seconds: float = 60.0
    realm: str = "CAS availability"

    def is_anonymous(self, door: str) -> bool:
        """Whether `door` serves callers who give no credentials."""
        return self.anonymous or door in self.anonymous_doors


@dataclass(frozen=True, slots=True)
class LdapDirectoryConfig:
    """Mailboxes and groups read from the directory (the `directory` section, `source: ldap`).

    Mailboxes are the entries under `base` matching `filter`; each attribute named here fills
    one field of `Mailbox`. A mailbox's site is the value of `site_attribute`, translated by
    `sites` when given (value -> site name), else `default_site`; its kind is `legacy` when
    `kind_attribute` holds one of `legacy_values`. Groups are the entries under `group_base`
    matching `group_filter`, their members the DNs in `group_member_attribute`. The directory
    is read again every `refresh_seconds`; the last good copy stays in use while it is down,
    and is written to `cache_file` (when set) for a node that starts while it is down."""

    base: str
    filter: str = "(mail=*)"
    address_attribute: str = "mail"
    aliases_attribute: str | None = "proxyAddresses"
    site_attribute: str | None = None
    sites: Mapping[str, str] = field(default_factory=_no_sites, hash=False)
    default_site: str | None = None
    legacy_dn_attribute: str | None = "legacyExchangeDN"
    display_name_attribute: str | None = "displayName"
    kind_attribute: str | None = None
    legacy_values: tuple[str, ...] = ()
    group_base: str | None = None
    group_filter: str = "(objectClass=groupOfNames)"
    group_name_attribute: str = "cn"
    group_address_attribute: str | None = "mail"
    group_member_attribute: str = "member"
    refresh_seconds: float = 300.0
    cache_file: str | None = None


PERMISSION_LEVELS = ("None", "FreeBusyTimeOnly", "FreeBusyTimeAndSubjectAndLocation", "FullDetails")
"""MS-OXCPERM's free/busy levels (EWS `FreeBusyAccessLevel`), from least to most."""

LEVEL_ALIASES = {
    "AvailabilityOnly": "FreeBusyTimeOnly",
    "LimitedDetails": "FreeBusyTimeAndSubjectAndLocation",
    "Reviewer": "FullDetails",
}
"""Exchange's calendar folder roles (`Add-MailboxFolderPermission`) that mean those levels."""

DEFAULT_LEVEL = "FreeBusyTimeAndSubjectAndLocation"
"""The organisation default when the site map says nothing (what every caller saw before
permission levels existed)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of a calendar's permissions: a `user` (a requester's name) or a `group` (one
    of a requester's groups), the `level` it gets, and for a delegate with FullDetails
    (`delegate`) whether private items are shown in full."""

    level: str
    user: str | None = None
    group: str | None = None
    delegate: bool = False


@dataclass(frozen=True, slots=True)
class MailboxPermissions:
    """What one mailbox's owner set: a `default` for everyone without a grant (None: the
    organisation's), and grants to users and groups."""

    default: str | None = None
    grants: tuple[Grant, ...] = ()


def _no_mailbox_permissions() -> Mapping[str, MailboxPermissions]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Permissions:
    """Who may see what of whose calendar (the `permissions` section, or the file it names).

    `default` is every calendar's default entry; `anonymous` what a caller without a login
    gets (None: the default); `grants` apply to every mailbox; `mailboxes` are the entries
    each mailbox's owner set, keyed by casefolded address. `file` is where they were read
    from, when not from the site map itself."""

    default: str = DEFAULT_LEVEL
    anonymous: str | None = None
    grants: tuple[Grant, ...] = ()
    mailboxes: Mapping[str, MailboxPermissions] = field(
        default_factory=_no_mailbox_permissions, hash=False
    )
    file: str | None = None


@dataclass(frozen=True)
class Sitemap:
    """A loaded site map. `mailboxes` is the directory: a tuple as written (YAML/CSV), or a
    `sitemap.directory.Directory` such as the LDAP directory, kept up to date while in use;
    `lookup` and `mailboxes_of` read whichever it is."""

    source: str
    sites: tuple[Site, ...]
    mailboxes: Sequence[Mailbox]
    domains: tuple[str, ...] = ()
    auth: ClientAuth = field(default_factory=ClientAuth)
    settings: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    dns: DnsConfig | None = None
    ldap: LdapServer | None = None
    permissions: Permissions = field(default_factory=Permissions)
    _directory: Directory = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from sitemap.directory import Directory, StaticDirectory

        directory = self.mailboxes
        if not isinstance(directory, Directory):
            directory = StaticDirectory(directory)
        object.__setattr__(self, "_directory", directory)

    @property
    def directory(self) -> Directory:
        """The mailbox directory, with its lookups and groups."""
        return self._directory

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)

    def lookup(self, address: str) -> Mailbox | None:
        """The mailbox an address or alias names (case-insensitive), or None."""
        return self._directory.lookup(address)

    def mailboxes_of(self, site: str) -> tuple[Mailbox, ...]:
        return tuple(m for m in self._directory if m.site == site)
