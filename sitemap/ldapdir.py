"""The mailbox directory read from LDAP, refreshed on an interval, its last good copy kept.

`LdapDirectory` is a `LiveDirectory`: `refresh()` reads every mailbox entry (paged search) and
every group, turns them into `Mailbox` and `Group` values and swaps them in as one snapshot.
An entry that cannot be a mailbox (no address, a domain not served, no site, an address
another entry has) is skipped and counted, never fatal. When the server cannot be asked the
previous snapshot stays; when there is none yet, `load()` falls back to `cache_file`, which
every good refresh rewrites.

`start()` runs the refresh every `refresh_seconds` in a daemon thread (ldap3 is synchronous);
`stop()` ends it. `LdapDirectory.shared(...)` hands out one object per configuration, so a
site map loaded again with the same `ldap` and `directory` sections keeps the loaded copy.

Attribute values: aliases such as `proxyAddresses` keep only SMTP ones (`smtp:`/`SMTP:`
prefixes dropped; X500, SIP and others ignored); a missing legacy DN gets the site map's
default (`/o=<org>/ou=<site>/cn=Recipients/cn=<local part>`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sitemap._ldapentries import EntryBuilder
from sitemap.directory import Group, LiveDirectory, Snapshot
from sitemap.ldap import LdapError, LdapUnavailable, service_connection
from sitemap.model import LdapDirectoryConfig, LdapServer, Mailbox, Site

__all__ = ["DirectoryUnavailable", "LdapDirectory", "RefreshReport"]

log = logging.getLogger(__name__)

SHOWN_PROBLEMS = 5
SIZE_LIMIT_EXCEEDED = 4


class DirectoryUnavailable(ValueError):
    """Neither the directory server nor a cached copy could give the mailboxes (a ValueError,
    so a site map reload that meets it keeps the configuration running)."""


@dataclass(frozen=True, slots=True)
class RefreshReport:
    mailboxes: int
    groups: int
    skipped: tuple[str, ...]
    seconds: float


def _search(connection: Any, base: str, search_filter: str, attributes: list[str], page: int):  # type: ignore[no-untyped-def]
    """The (dn, attributes) of every entry, page by page; `LdapUnavailable` when the search
    ends short of the last entry (a size or time limit, a lost connection): a directory cut
    short must never replace a whole one."""
    results = connection.extend.standard.paged_search(
        base, search_filter, attributes=attributes, paged_size=page, generator=True
    )
    for item in results:
        if item.get("type") == "searchResEntry":
            yield item["dn"], item["attributes"]
    result = connection.result or {}
    code = result.get("result")
    if code == SIZE_LIMIT_EXCEEDED:
        raise LdapUnavailable(
            f"the search under {base} stopped at the server's size limit; let the service "
            "account read the whole directory in pages (OpenLDAP: limits ... size.prtotal="
            "unlimited; Active Directory pages without a total limit)"
        )
    if code not in (0, None):
        raise LdapUnavailable(f"the search under {base} failed: {result.get('description')}")


class LdapDirectory(LiveDirectory):
    """See the module docstring."""

    _shared: ClassVar[weakref.WeakValueDictionary[tuple[Any, ...], LdapDirectory]] = (
        weakref.WeakValueDictionary()
    )
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        server: LdapServer,
        config: LdapDirectoryConfig,
        sites: tuple[Site, ...],
        domains: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.server, self.config, self.sites, self.domains = server, config, sites, domains
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        self.last_report: RefreshReport | None = None
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(
        cls,
        server: LdapServer,
        config: LdapDirectoryConfig,
        sites: tuple[Site, ...],
        domains: tuple[str, ...],
    ) -> LdapDirectory:
        """The directory object of this configuration, made once per process while in use."""
        key = (server, config, tuple(sorted(config.sites.items())), sites, domains)
        with cls._shared_lock:
            found = cls._shared.get(key)
            if found is None:
                found = cls(server, config, sites, domains)
                cls._shared[key] = found
            return found

    def __repr__(self) -> str:
        return f"LdapDirectory({self.server.url}, {self.config.base}, {len(self)} mailboxes)"

    # --- reading ------------------------------------------------------------------------------

    def read(self) -> tuple[Snapshot, RefreshReport]:
        """Read the whole directory now; `LdapUnavailable` when the server cannot be asked."""
        began = time.monotonic()
        c = self.config
        builder = EntryBuilder(c, self.sites, self.domains)
        wanted = [
            a
            for a in (
                c.address_attribute, c.aliases_attribute, c.site_attribute,
                c.legacy_dn_attribute, c.display_name_attribute, c.kind_attribute,
            )
            if a
        ]  # fmt: skip
        connection = service_connection(self.server)
        try:
            for dn, attributes in _search(
                connection, c.base, c.filter, wanted, self.server.page_size
            ):
                builder.add(dn, attributes)
            builder.finish()
            group_entries: list[tuple[str, Mapping[str, Any]]] = []
            if c.group_base:
                group_attributes = [c.group_name_attribute, c.group_member_attribute]
                if c.group_address_attribute:
                    group_attributes.append(c.group_address_attribute)
                group_entries = list(
                    _search(
                        connection,
                        c.group_base,
                        c.group_filter,
                        group_attributes,
                        self.server.page_size,
                    )
                )
        except LdapError:
            raise
        except Exception as exc:  # ldap3 raises its own errors mid-search (lost connection)
            raise LdapUnavailable(f"search failed: {' '.join(str(exc).split())[:200]}") from None
        finally:
            connection.unbind()
        groups = builder.groups(group_entries)
        snapshot = Snapshot(tuple(builder.mailboxes), tuple(groups))
        report = RefreshReport(
            len(builder.mailboxes), len(groups), tuple(builder.skipped), time.monotonic() - began
        )
        return snapshot, report

    def refresh(self) -> RefreshReport:
        """Read the directory and swap it in; on failure keep the last good copy and raise
        `LdapUnavailable`."""
        with self._refreshing:
            try:
                snapshot, report = self.read()
            except LdapUnavailable as exc:
                self.last_error = str(exc)
                raise
            self.replace(snapshot)
            self.last_refresh, self.last_error, self.last_report = time.time(), None, report
        if report.skipped:
            shown = "; ".join(report.skipped[:SHOWN_PROBLEMS])
            log.warning("directory: %d entries skipped, e.g. %s", len(report.skipped), shown)
        log.info(
            "directory: %d mailboxes, %d groups read from %s in %.1f s",
            report.mailboxes, report.groups, self.server.url, report.seconds,
        )  # fmt: skip
        self._write_cache(snapshot)
        return report

    def load(self) -> None:
        """Make sure there is content: read the directory, else the cache file; else
        `DirectoryUnavailable` saying why."""
        if self.loaded:
            return
        try:
            self.refresh()
            return
        except LdapUnavailable as exc:
            problem = str(exc)
        cached = self._read_cache()
        if cached is None:
            where = (
                f" and no usable cache_file {self.config.cache_file}"
                if self.config.cache_file
                else ""
            )
            raise DirectoryUnavailable(f"the LDAP directory cannot be read: {problem}{where}")
        self.replace(cached)
        log.warning(
            "directory: %s; serving %d mailboxes from %s until it answers",
            problem, len(cached.mailboxes), self.config.cache_file,
        )  # fmt: skip

    # --- the refresh thread -------------------------------------------------------------------

    def start(self) -> None:
        """Refresh every `refresh_seconds` in a daemon thread until `stop()` (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ldap-directory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.refresh_seconds):
            try:
                self.refresh()
            except LdapUnavailable as exc:
                log.warning("directory: %s; keeping the copy of %s", exc, self._age())
            except Exception:
                log.exception("directory refresh failed; keeping the last good copy")

    def _age(self) -> str:
        if self.last_refresh is None:
            return "the cache file"
        return f"{time.time() - self.last_refresh:.0f} s ago"

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- the cache file -----------------------------------------------------------------------

    def _write_cache(self, snapshot: Snapshot) -> None:
        if not self.config.cache_file:
            return
        document = {
            "mailboxes": [
                [m.address, m.site, m.kind, m.legacy_dn, list(m.aliases), m.display_name]
                for m in snapshot.mailboxes
            ],
            "groups": [[g.name, g.address, list(g.members)] for g in snapshot.groups],
        }
        path = Path(self.config.cache_file)
        temporary = path.with_name(path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(document), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("directory: cannot write cache_file %s: %s", path, exc.strerror or exc)

    def _read_cache(self) -> Snapshot | None:
        if not self.config.cache_file:
            return None
        sites = {s.name: s for s in self.sites}
        try:
            document = json.loads(Path(self.config.cache_file).read_text(encoding="utf-8"))
            mailboxes = tuple(
                Mailbox(
                    address=a, site=s, kind=k, legacy_dn=dn, aliases=tuple(al), display_name=n,
                    timezone=sites[s].timezone, working_hours=sites[s].working_hours,
                )
                for a, s, k, dn, al, n in document["mailboxes"]
                if s in sites
            )  # fmt: skip
            groups = tuple(Group(n, a, tuple(m)) for n, a, m in document["groups"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("directory: cache_file %s unusable: %s", self.config.cache_file, exc)
            return None
        return Snapshot(mailboxes, groups)
