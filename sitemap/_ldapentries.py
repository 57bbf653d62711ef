"""LDAP entries as mailboxes and groups: attribute values read, SMTP aliases kept, each entry that
cannot be a mailbox skipped and counted, group membership expanded through nested groups.

`EntryBuilder` is pure (no connection): `sitemap.ldapdir` feeds it what its searches return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from sitemap.directory import Group
from sitemap.model import LdapDirectoryConfig, Mailbox, Site


def _first(values: Any) -> str | None:
    if isinstance(values, list):
        values = values[0] if values else None
    if values is None:
        return None
    text = values.decode() if isinstance(values, bytes) else str(values)
    return text.strip() or None


def _all(values: Any) -> list[str]:
    if values is None:
        return []
    items = values if isinstance(values, list) else [values]
    return [(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in items if v]


def smtp_aliases(values: Iterable[str]) -> list[str]:
    """SMTP addresses of a `proxyAddresses`-like attribute; other address types are dropped."""
    found = []
    for value in values:
        kind, sep, rest = value.partition(":")
        if not sep:
            found.append(value)
        elif kind.casefold() == "smtp":
            found.append(rest.strip())
    return [a for a in found if a]


class EntryBuilder:
    """Turns directory entries into mailboxes, checking each the way the YAML loader does."""

    def __init__(
        self, config: LdapDirectoryConfig, sites: tuple[Site, ...], domains: tuple[str, ...]
    ):
        self.config = config
        self.sites = {s.name: s for s in sites}
        self.domains = {d.casefold() for d in domains}
        self.org = (domains[0] if domains else "").split(".")[0]
        self.pending: list[tuple[str, Mailbox]] = []
        self.dn_to_address: dict[str, str] = {}
        self.mailboxes: list[Mailbox] = []
        self.skipped: list[str] = []

    def _address_ok(self, address: str) -> bool:
        local, at, host = address.partition("@")
        if not at or not local or not host or "@" in host or any(c.isspace() for c in address):
            return False
        return not self.domains or host.casefold() in self.domains

    def _site(self, attributes: Mapping[str, Any]) -> str | None:
        c = self.config
        value = _first(attributes.get(c.site_attribute)) if c.site_attribute else None
        if value is not None:
            site = c.sites.get(value, value if value in self.sites else None)
            if site is not None:
                return site
        if c.default_site is not None:
            return c.default_site
        return next(iter(self.sites)) if len(self.sites) == 1 else None

    def add(self, dn: str, attributes: Mapping[str, Any]) -> None:
        """Read one entry; clashes between entries are settled in `finish`."""
        c = self.config
        address = _first(attributes.get(c.address_attribute))
        if address is None or not self._address_ok(address):
            self.skipped.append(f"{dn}: {c.address_attribute} is not a served address: {address!r}")
            return
        site = self._site(attributes)
        if site is None:
            self.skipped.append(f"{dn}: no site for {address} ({c.site_attribute})")
            return
        raw = _all(attributes.get(c.aliases_attribute)) if c.aliases_attribute else []
        aliases = tuple(a for a in smtp_aliases(raw) if self._address_ok(a))
        legacy_dn = _first(attributes.get(c.legacy_dn_attribute)) if c.legacy_dn_attribute else None
        local = address.partition("@")[0]
        if legacy_dn is None or not legacy_dn.casefold().startswith("/o="):
            org = self.org or address.partition("@")[2].split(".")[0]
            legacy_dn = f"/o={org}/ou={site}/cn=Recipients/cn={local}"
        kind = "modern"
        if c.kind_attribute:
            values = {v.casefold() for v in _all(attributes.get(c.kind_attribute))}
            if values & {v.casefold() for v in c.legacy_values}:
                kind = "legacy"
        home = self.sites[site]
        name = (
            _first(attributes.get(c.display_name_attribute)) if c.display_name_attribute else None
        )
        mailbox = Mailbox(
            address=address,
            site=site,
            kind=kind,  # type: ignore[arg-type]
            legacy_dn=legacy_dn,
            aliases=aliases,
            display_name=name,
            timezone=home.timezone,
            working_hours=home.working_hours,
        )
        self.pending.append((dn, mailbox))

    def finish(self) -> None:
        """Settle clashes the same way whatever order the server sent: entries in DN order; a
        primary address beats any alias; of two entries with one primary address, the first
        is kept; an alias another entry has already, or that is a primary address, is dropped."""
        self.pending.sort(key=lambda item: item[0].casefold())
        primaries: dict[str, str] = {}
        kept: list[tuple[str, Mailbox]] = []
        for dn, mailbox in self.pending:
            key = mailbox.address.casefold()
            if key in primaries:
                self.skipped.append(f"{dn}: {mailbox.address} is also {primaries[key]}")
                continue
            primaries[key] = dn
            kept.append((dn, mailbox))
        claimed = set(primaries)
        for dn, mailbox in kept:
            aliases = []
            for alias in mailbox.aliases:
                if alias.casefold() not in claimed:
                    claimed.add(alias.casefold())
                    aliases.append(alias)
            self.mailboxes.append(replace(mailbox, aliases=tuple(aliases)))
            self.dn_to_address[dn.casefold()] = mailbox.address

    def groups(self, entries: list[tuple[str, Mapping[str, Any]]]) -> list[Group]:
        c = self.config
        direct: dict[str, list[str]] = {}
        names: dict[str, tuple[str, str | None]] = {}
        for dn, attributes in entries:
            name = _first(attributes.get(c.group_name_attribute)) or dn
            address = (
                _first(attributes.get(c.group_address_attribute))
                if c.group_address_attribute
                else None
            )
            names[dn.casefold()] = (name, address)
            direct[dn.casefold()] = [
                m.casefold() for m in _all(attributes.get(c.group_member_attribute))
            ]

        def expand(dn: str, seen: set[str]) -> list[str]:
            found: list[str] = []
            for member in direct.get(dn, []):
                if member in self.dn_to_address:
                    found.append(self.dn_to_address[member])
                elif member in direct and member not in seen:
                    seen.add(member)
                    found += expand(member, seen)
            return found

        return [
            Group(name, address, tuple(dict.fromkeys(expand(dn, {dn}))))
            for dn, (name, address) in names.items()
        ]
