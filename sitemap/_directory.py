"""Reading the `directory` section of a site map: mailboxes and groups taken from LDAP.

`read_directory` checks the mapping from directory attributes to mailbox fields (attribute
names, search bases and filters, the site and kind translations against the sites and kinds
that exist) and returns an `LdapDirectoryConfig`; the directory itself is read by
`sitemap.ldapdir` when a node starts, never by `sitemap validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sitemap._auth import as_attribute, as_dn, ldap_filter
from sitemap._checks import Fields, Report, section
from sitemap._values import Invalid, as_positive_number, as_text, describe, resolve_path
from sitemap.model import LdapDirectoryConfig

DIRECTORY_FIELDS = (
    "source", "base", "filter", "address_attribute", "aliases_attribute", "site_attribute",
    "sites", "default_site", "legacy_dn_attribute", "display_name_attribute", "kind_attribute",
    "legacy_values", "group_base", "group_filter", "group_name_attribute",
    "group_address_attribute", "group_member_attribute", "refresh_seconds", "cache_file",
)  # fmt: skip
SOURCES = ("ldap",)
OPTIONAL_ATTRIBUTES = (
    "aliases_attribute", "legacy_dn_attribute", "display_name_attribute",
    "group_address_attribute",
)  # fmt: skip


def _optional_attribute(value: Any) -> str | None:
    """An attribute name, or false/empty to read none."""
    if value is False or value == "":
        return ""
    return as_attribute(value)


def _site_map(fields: Fields, site_names: tuple[str, ...]) -> dict[str, str]:
    value = fields.data.get("sites")
    if value is None:
        return {}
    if not isinstance(value, dict):
        fields.problem(
            "sites", f"expected a mapping of attribute value to site, got {describe(value)}"
        )
        return {}
    found: dict[str, str] = {}
    for key, site in value.items():
        if not isinstance(site, str) or site not in site_names:
            known = ", ".join(site_names) or "none defined"
            fields.problem(f"sites.{key}", f"no site named {site!r} (sites: {known})")
            continue
        found[str(key)] = site
    return found


def read_directory(
    report: Report, top: Fields, base_dir: Path, site_names: tuple[str, ...], *, has_ldap: bool
) -> LdapDirectoryConfig | None:
    fields = section(report, top, "directory", DIRECTORY_FIELDS)
    if fields is None:
        return None
    source = fields.get("source", as_text, required=True)
    if source is not None and source not in SOURCES:
        fields.problem("source", f"expected one of {', '.join(SOURCES)}, got {source!r}")
    if not has_ldap:
        fields.problem("source", "an ldap directory needs the top-level ldap section (the server)")
    for key in ("mailboxes", "mailboxes_csv"):
        if top.data.get(key):
            top.problem(key, "the mailboxes come from the directory section; leave this out")
    base = fields.get("base", as_dn, required=True)
    sites = _site_map(fields, site_names)
    default_site = fields.get("default_site", as_text)
    if default_site is not None and default_site not in site_names:
        fields.problem("default_site", f"no site named {default_site!r}")
    site_attribute = fields.get("site_attribute", as_attribute)
    if site_attribute is None and default_site is None and len(site_names) != 1:
        fields.problem(
            "site_attribute", "required (or default_site) when the site map has several sites"
        )
    if sites and site_attribute is None:
        fields.problem("sites", "translates values of site_attribute, which is not set")
    kind_attribute = fields.get("kind_attribute", as_attribute)
    legacy_values = tuple(v for _, v in fields.items("legacy_values", as_text))
    if legacy_values and kind_attribute is None:
        fields.problem("legacy_values", "are values of kind_attribute, which is not set")
    values: dict[str, Any] = {
        "filter": fields.get("filter", ldap_filter()),
        "address_attribute": fields.get("address_attribute", as_attribute),
        "group_base": fields.get("group_base", as_dn),
        "group_filter": fields.get("group_filter", ldap_filter()),
        "group_name_attribute": fields.get("group_name_attribute", as_attribute),
        "group_member_attribute": fields.get("group_member_attribute", as_attribute),
        "refresh_seconds": fields.get("refresh_seconds", as_positive_number),
    }
    optional: dict[str, str | None] = {}  # an explicit false or "": read no such attribute
    for key in OPTIONAL_ATTRIBUTES:
        if key in fields.data:
            try:
                optional[key] = _optional_attribute(fields.data[key]) or None
            except Invalid as exc:
                fields.problem(key, str(exc))
    cache_file = fields.get("cache_file", as_text)
    if base is None or source not in SOURCES:
        return None
    given = {k: v for k, v in values.items() if v is not None} | optional
    return LdapDirectoryConfig(
        base=base,
        site_attribute=site_attribute,
        sites=sites,
        default_site=default_site,
        kind_attribute=kind_attribute,
        legacy_values=legacy_values,
        cache_file=resolve_path(cache_file, base_dir) if cache_file else None,
        **given,
    )
