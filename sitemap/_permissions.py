"""Reading the `permissions` section of a site map, or the file it names: who may see what.

The section (or the file, which holds the same keys) gives the organisation's default level,
the level of callers without a login, grants that apply to every mailbox, and the entries each
mailbox's owner set (a default and grants to users or groups)::

    permissions:
      default: FreeBusyTimeOnly                 # every calendar's default entry
      anonymous: None                           # callers without a login (default: as default)
      grants:                                   # on every mailbox
        - {group: helpdesk, level: FreeBusyTimeAndSubjectAndLocation}
      mailboxes:
        ann@contoso.test:
          default: None
          grants:
            - {user: bob@contoso.test, level: FullDetails, delegate: true}
            - {group: managers, level: FreeBusyTimeAndSubjectAndLocation}

Levels are MS-OXCPERM's (`None`, `FreeBusyTimeOnly`, `FreeBusyTimeAndSubjectAndLocation`,
`FullDetails`), any case, or Exchange's role names for them (`AvailabilityOnly`,
`LimitedDetails`, `Reviewer`). How they combine is `cas.model.permissions`' business; here each
value is checked for form, and, when the directory is known when the site map is read (YAML or
CSV), each mailbox entry must name one of its mailboxes (`settle_mailboxes`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sitemap._checks import TOP, Fields, Report, SitemapError, section
from sitemap._values import Invalid, as_flag, as_text, describe, resolve_path
from sitemap._yaml import read_yaml
from sitemap.model import (
    DEFAULT_LEVEL,
    LEVEL_ALIASES,
    PERMISSION_LEVELS,
    Grant,
    Mailbox,
    MailboxPermissions,
    Permissions,
)

PERMISSIONS_FIELDS = ("default", "anonymous", "grants", "mailboxes", "file")
FILE_FIELDS = ("default", "anonymous", "grants", "mailboxes")
GRANT_FIELDS = ("user", "group", "level", "delegate")
MAILBOX_PERMISSION_FIELDS = ("default", "grants")
FULL_DETAILS = PERMISSION_LEVELS[-1]

_SPELLINGS = {name.casefold(): name for name in PERMISSION_LEVELS} | {
    alias.casefold(): level for alias, level in LEVEL_ALIASES.items()
}


def as_level(value: Any) -> str:
    """A permission level, as MS-OXCPERM spells it."""
    if not isinstance(value, str):
        raise Invalid(
            f"expected a permission level ({', '.join(PERMISSION_LEVELS)}), got {describe(value)}"
        )
    level = _SPELLINGS.get(value.strip().casefold())
    if level is None:
        raise Invalid(
            f"not a permission level: {value!r} (levels: {', '.join(PERMISSION_LEVELS)}; "
            f"or Exchange's roles {', '.join(LEVEL_ALIASES)})"
        )
    return level


def _grant(fields: Fields, *, per_mailbox: bool) -> tuple[tuple[str, str], Grant] | None:
    user = fields.get("user", as_text)
    group = fields.get("group", as_text)
    level = fields.get("level", as_level, required=True)
    delegate = fields.get("delegate", as_flag) or False
    if "user" not in fields.data and "group" not in fields.data:
        fields.problem("user", "name a user or a group")
    elif "user" in fields.data and "group" in fields.data:
        fields.problem("group", "name a user or a group, not both")
    if delegate and level is not None and level != FULL_DETAILS:
        fields.problem("delegate", f"a delegate has level {FULL_DETAILS}, not {level}")
    if delegate and not per_mailbox:
        fields.problem("delegate", "a delegate is one mailbox's: give it under mailboxes")
    if level is None or (user is None) == (group is None):
        return None
    principal = ("user", user.casefold()) if user is not None else ("group", str(group).casefold())
    return principal, Grant(level=level, user=user, group=group, delegate=delegate)


def _grants(fields: Fields, key: str, *, per_mailbox: bool) -> tuple[Grant, ...]:
    value = fields.data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        fields.problem(key, f"expected a list of grants, got {describe(value)}")
        return ()
    grants: list[Grant] = []
    first: dict[tuple[str, str], int] = {}
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            fields.problem(
                where, f"expected a mapping (user or group, level), got {describe(item)}"
            )
            continue
        one = Fields(
            fields.report, fields.entry, item, GRANT_FIELDS,
            prefix=f"{fields.prefix}{where}.", file=fields.file,
        )  # fmt: skip
        found = _grant(one, per_mailbox=per_mailbox)
        if found is None:
            continue
        principal, grant = found
        if principal in first:
            fields.problem(
                where, f"{principal[0]} {principal[1]!r} repeats {key}[{first[principal]}]"
            )
            continue
        first[principal] = index
        grants.append(grant)
    return tuple(grants)


def _mailboxes(
    fields: Fields, check_address: Callable[[Any], str]
) -> dict[str, MailboxPermissions]:
    value = fields.data.get("mailboxes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        fields.problem(
            "mailboxes", f"expected a mapping of address to entries, got {describe(value)}"
        )
        return {}
    found: dict[str, MailboxPermissions] = {}
    written: dict[str, str] = {}
    for key, item in value.items():
        where = f"mailboxes.{key}"
        try:
            address = check_address(key)
        except Invalid as exc:
            fields.problem(where, str(exc))
            continue
        folded = address.casefold()
        if folded in written:
            fields.problem(where, f"repeats mailboxes.{written[folded]}")
            continue
        written[folded] = address
        if item is None:
            item = {}
        if not isinstance(item, dict):
            fields.problem(where, f"expected a mapping (default, grants), got {describe(item)}")
            continue
        entry = Fields(
            fields.report, fields.entry, item, MAILBOX_PERMISSION_FIELDS,
            prefix=f"{fields.prefix}{where}.", file=fields.file,
        )  # fmt: skip
        default = entry.get("default", as_level)
        found[folded] = MailboxPermissions(default, _grants(entry, "grants", per_mailbox=True))
    return found


def _from_file(report: Report, fields: Fields, base_dir: Path) -> tuple[Fields, str] | None:
    """The fields of the file `permissions.file` names (problems name that file)."""
    name = fields.get("file", as_text)
    if name is None:
        return None
    others = [str(k) for k in fields.data if k != "file"]
    if others:
        fields.problem("file", f"give the permissions here or in the file, not both ({others[0]})")
    path = resolve_path(name, base_dir)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fields.problem("file", f"cannot read {path!r}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        fields.problem("file", f"{path!r} is not UTF-8 text")
        return None
    if not text.strip():
        report.add(
            TOP, "", "empty file; expected a mapping (default, grants, mailboxes)", file=path
        )
        return None
    try:
        data, repeated = read_yaml(text, path)
    except SitemapError as exc:
        report.problems.extend(exc.problems)
        return None
    report.problems.extend(repeated)
    return Fields(report, TOP, data, FILE_FIELDS, file=path), path


def read_permissions(
    report: Report, top: Fields, base_dir: Path, check_address: Callable[[Any], str]
) -> Permissions:
    """The `permissions` section (or its file); the defaults when there is none."""
    fields = section(report, top, "permissions", PERMISSIONS_FIELDS)
    if fields is None:
        return Permissions()
    file: str | None = None
    if "file" in fields.data:
        found = _from_file(report, fields, base_dir)
        if found is None:
            return Permissions()
        fields, file = found
    default = fields.get("default", as_level)
    return Permissions(
        default=default or DEFAULT_LEVEL,
        anonymous=fields.get("anonymous", as_level),
        grants=_grants(fields, "grants", per_mailbox=False),
        mailboxes=MappingProxyType(_mailboxes(fields, check_address)),
        file=file,
    )


def settle_mailboxes(
    report: Report, permissions: Permissions, lookup: Callable[[str], Mailbox | None]
) -> Permissions:
    """With a directory known now (YAML or CSV): every mailbox entry names one of its mailboxes,
    and is kept under that mailbox's primary address (an alias may be written)."""
    entry = TOP if permissions.file else "permissions"
    settled: dict[str, MailboxPermissions] = {}
    named: dict[str, str] = {}
    for key, rules in permissions.mailboxes.items():
        mailbox = lookup(key)
        if mailbox is None:
            report.add(entry, f"mailboxes.{key}", "no such mailbox in the directory",
                       file=permissions.file)  # fmt: skip
            continue
        primary = mailbox.address.casefold()
        if primary in named:
            report.add(
                entry, f"mailboxes.{key}",
                f"the same mailbox as mailboxes.{named[primary]} ({mailbox.address})",
                file=permissions.file,
            )  # fmt: skip
            continue
        named[primary] = key
        settled[primary] = rules
    return replace(permissions, mailboxes=MappingProxyType(settled))


__all__ = [
    "FILE_FIELDS",
    "GRANT_FIELDS",
    "MAILBOX_PERMISSION_FIELDS",
    "PERMISSIONS_FIELDS",
    "as_level",
    "read_permissions",
    "settle_mailboxes",
]
