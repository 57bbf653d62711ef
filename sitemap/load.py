"""Read a site map (YAML, plus an optional CSV directory) into validated `sitemap.model` values.

Every problem is collected, not just the first: `SitemapError.problems` lists each one as a
`Problem(file, entry, field, message)`, and `str(error)` prints them one per line, e.g.
``sitemap.yaml: sites[1] (us): caldav.url: not an http(s) URL: 'ftp://x'``.
The full reference of the format is `docs/sitemap.md`; in short::

    domains: [contoso.test]                 # domains served; mailbox addresses must use one
    auth: {anonymous: false, users: [{username: scheduler, password_env: CAS_CLIENT_PASSWORD}]}
    settings: {window_max_days: 62}         # node settings, passed through (str keys)
    dns: {nameservers: [127.0.0.1], port: 53, timeout_seconds: 2}   # default: the system's
    sites:                                  # required, at least one
      - name: eu                            # [a-z0-9-]+, unique
        timezone: Europe/Amsterdam          # IANA name, default UTC
        nodes: [https://127.0.0.1:8443]     # static node base URLs, default []
        srv: _cas._tcp.eu.contoso.test      # and/or nodes from DNS SRV, default none
        node_scheme: https                  # scheme for SRV targets, https or http
        costs: {us: 10, apac: 50}           # cost to other sites; 0 to itself, 100 if unnamed
        working_hours: {days: [Monday, Friday], start: "08:00", end: "17:00"}
        caldav: {url: http://127.0.0.1:5232/, username: cas, password_env: CAS_EU_CALDAV_PASSWORD,
                 calendar_path: "{address}/calendar/", max_connections: 10,
                 timeout_seconds: 10, verify_tls: true,
                 discovery: template}        # or principal (principal_path) or search
        legacy: {url: http://127.0.0.1:8080/public/, username: fb, password_env: CAS_EU_LEGACY,
                 timeout_seconds: 10}
        redis: redis://127.0.0.1:6379/0     # redis://, rediss:// or unix://; no password inside
    mailboxes:                              # inline directory, default []
      - {address: ann@contoso.test, site: eu, kind: modern, legacy_dn: ..., aliases: [...],
         display_name: Ann, timezone: ..., calendar_url: ..., working_hours: {...}}
    mailboxes_csv: directory.csv            # relative to this file; columns address, site,
                                            # kind, legacy_dn, aliases (;-separated),
                                            # display_name, timezone
    permissions: {default: FreeBusyTimeOnly, grants: [{group: helpdesk, level: FullDetails}],
                  mailboxes: {ann@contoso.test: {default: None, grants: [...]}}}
                                            # or {file: permissions.yaml}; sitemap._permissions

Secrets are referenced (`password_env` / `password_file`), never inlined: a `password` key anywhere,
or a password inside a URL, is an error. Defaults are applied here, so every loaded `Mailbox` has its
`legacy_dn`, `timezone` and `working_hours` filled in. Relative `password_file`, `verify_tls` and
`mailboxes_csv` paths are taken relative to the YAML file's directory. Top-level keys starting with
``x-`` are ignored, to hold YAML anchors (``x-hours: &hours {...}`` then ``working_hours: *hours``).
Unquoted times such as ``17:00`` stay text (YAML 1.1 base-60 numbers are off), and a repeated key
is an error. The checks themselves live in `sitemap._values` (values), `sitemap._checks` (typed
reads), `sitemap._yaml` (reading), `sitemap._sites` (site sections) and `sitemap._mailboxes`
(mailbox entries and CSV rows); this module holds the top level and the entry points.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sitemap._auth import AUTH_FIELDS, LDAP_FIELDS, USER_FIELDS, read_auth, read_ldap
from sitemap._checks import TOP, Fields, Problem, Report, SitemapError, entry_label, no_repeats
from sitemap._directory import DIRECTORY_FIELDS, read_directory
from sitemap._mailboxes import (
    MailboxContext,
    csv_mailboxes,
    default_dn,
    read_mailbox,
    report_repeats,
)
from sitemap._permissions import PERMISSIONS_FIELDS, read_permissions, settle_mailboxes
from sitemap._sites import read_dns, read_site
from sitemap._values import (
    SECRET_INLINED,
    address_checker,
    as_domain,
    describe,
)
from sitemap._yaml import read_yaml
from sitemap.directory import Directory, StaticDirectory
from sitemap.ldapdir import LdapDirectory
from sitemap.model import Mailbox, Site, Sitemap

__all__ = [
    "AUTH_FIELDS",
    "DIRECTORY_FIELDS",
    "LDAP_FIELDS",
    "PERMISSIONS_FIELDS",
    "USER_FIELDS",
    "Problem",
    "SitemapError",
    "load_sitemap",
    "parse_sitemap",
]

TOP_FIELDS = (
    "domains", "auth", "ldap", "directory", "settings", "dns", "sites", "mailboxes",
    "mailboxes_csv", "permissions",
)  # fmt: skip


# --- sections ----------------------------------------------------------------------------------


def _scan_secrets(data: Mapping[Any, Any], report: Report) -> None:
    """Report every `password` key, at any depth, including unknown and pass-through sections.

    A mapping or list shared through YAML anchors is visited once (no loops, no blow-up)."""
    seen: set[int] = set()

    def walk(value: object, entry: str, path: str) -> None:
        if isinstance(value, (dict, list)):
            if id(value) in seen:
                return
            seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                field = f"{path}.{key}" if path else str(key)
                if str(key).casefold() == "password":
                    report.add(entry, field, SECRET_INLINED)
                else:
                    walk(item, entry, field)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, entry, f"{path}[{index}]")

    for key, value in data.items():
        if str(key).casefold() == "password":
            report.add(TOP, str(key), SECRET_INLINED)
        elif key in ("sites", "mailboxes") and isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, entry_label(key, index, item), "")
        else:
            walk(value, str(key), "")


def _entries(report: Report, top: Fields, key: str) -> list[tuple[str, dict[Any, Any]]]:
    """The mapping items of a top-level list, each with its entry label; others are reported."""
    value = top.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        top.problem(key, f"expected a list, got {describe(value)}")
        return []
    found = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            found.append((entry_label(key, index, item), item))
        else:
            report.add(
                entry_label(key, index, item), "", f"expected a mapping, got {describe(item)}"
            )
    return found


def _settings(report: Report, top: Fields) -> Mapping[str, object]:
    value = top.data.get("settings")
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        top.problem("settings", f"expected a mapping, got {describe(value)}")
        return MappingProxyType({})
    for key in value:
        if not isinstance(key, str):
            report.add("settings", str(key), f"setting names are text, got {describe(key)}")
    return MappingProxyType(dict(value))


# --- entry points ------------------------------------------------------------------------------


def parse_sitemap(text: str, source: str, *, base_dir: str | Path | None = None) -> Sitemap:
    """Validate site-map YAML `text`; `source` names it in problems. Raises `SitemapError`.

    Relative paths (`mailboxes_csv`, `password_file`, `verify_tls`) are taken from `base_dir`,
    by default the directory of `source`.
    """
    data, repeated = read_yaml(text, source)
    report = Report(source)
    report.problems.extend(repeated)
    base = Path(base_dir) if base_dir is not None else Path(source).parent
    _scan_secrets(data, report)
    extensions = tuple(k for k in data if isinstance(k, str) and k.startswith("x-"))
    top = Fields(report, TOP, data, TOP_FIELDS + extensions)  # x-...: room for YAML anchors
    domains = top.items("domains", as_domain)
    no_repeats(top, "domains", domains)
    ldap = read_ldap(report, top, base)
    auth = read_auth(report, top, base, has_ldap=ldap is not None)
    settings = _settings(report, top)
    dns_config = read_dns(report, top)

    site_entries = _entries(report, top, "sites")
    if not site_entries and top.data.get("sites") in (None, []):
        top.problem("sites", "required field missing; list at least one site")
    names_written = (raw.get("name") for _, raw in site_entries)
    site_names = tuple(dict.fromkeys(n for n in names_written if isinstance(n, str)))
    sites: dict[str, Site] = {}
    written: dict[str, str] = {}
    for entry, raw in site_entries:
        site = read_site(report, entry, raw, base, site_names)
        name = raw.get("name")
        if isinstance(name, str) and name in written:
            report.add(entry, "name", f"duplicate site name {name!r} (also {written[name]})")
        elif isinstance(name, str):
            written[name] = entry
            if site is not None:
                sites[name] = site

    ctx = MailboxContext(tuple(d for _, d in domains), tuple(written), sites, base)
    directory_config = read_directory(report, top, base, tuple(written), has_ldap=ldap is not None)
    listed: list[tuple[str, str, Mailbox | None]] = [
        (source, entry, read_mailbox(report, entry, raw, ctx))
        for entry, raw in _entries(report, top, "mailboxes")
    ]
    listed += csv_mailboxes(report, top, ctx)
    mailboxes = [(file, entry, m) for file, entry, m in listed if m is not None]
    names = [
        (file, entry, field, name, "address")
        for file, entry, m in mailboxes
        for field, name in [("address", m.address)]
        + [(f"aliases[{i}]", alias) for i, alias in enumerate(m.aliases)]
    ]
    clashed = report_repeats(report, names)
    dns = [
        (file, entry, "legacy_dn", dn, "default legacy DN" if dn == default else "legacy DN")
        for file, entry, m in mailboxes
        if (file, entry) not in clashed  # its default DN clashes too; say it once
        for dn, default in [(m.legacy_dn or "", default_dn(ctx, m.address, m.site))]
    ]
    report_repeats(report, dns)
    permissions = read_permissions(report, top, base, address_checker(ctx.domains))
    directory: Directory | tuple[Mailbox, ...] = tuple(m for _, _, m in mailboxes)
    if directory_config is None:  # the directory is known now: grants must name its mailboxes
        permissions = settle_mailboxes(report, permissions, StaticDirectory(directory).lookup)

    if report.problems:
        raise SitemapError(report.problems)
    if directory_config is not None and ldap is not None:
        directory = LdapDirectory.shared(ldap, directory_config, tuple(sites.values()), ctx.domains)
    return Sitemap(
        source=source,
        sites=tuple(sites.values()),
        mailboxes=directory,
        ldap=ldap,
        domains=ctx.domains,
        auth=auth,
        settings=settings,
        dns=dns_config,
        permissions=permissions,
    )


def load_sitemap(path: str | Path) -> Sitemap:
    """Read and validate the site map at `path` (see the module docstring).

    Raises `SitemapError` listing every problem."""
    shown = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SitemapError(
            [Problem(shown, "", "", f"cannot read: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError:
        raise SitemapError([Problem(shown, "", "", "not UTF-8 text")]) from None
    return parse_sitemap(text, shown, base_dir=file.parent)
