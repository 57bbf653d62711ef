"""Mailbox entries of the site map: one YAML entry or one CSV row checked into a `Mailbox`, the
default legacy DN, and the check that no address, alias or legacy DN is claimed twice.

Problems name the file, the entry (a list position or a CSV line) and the field.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitemap._checks import Fields, Report
from sitemap._sites import read_working_hours
from sitemap._values import (
    SECRET_INLINED,
    Invalid,
    address_checker,
    as_text,
    as_url,
    as_zone,
    resolve_path,
)
from sitemap.model import Mailbox, Site, WorkingHoursSpec

MAILBOX_FIELDS = (
    "address", "site", "kind", "legacy_dn", "aliases", "display_name", "timezone",
    "calendar_url", "working_hours",
)  # fmt: skip
CSV_COLUMNS = ("address", "site", "kind", "legacy_dn", "aliases", "display_name", "timezone")


@dataclass(frozen=True, slots=True)
class MailboxContext:
    """What mailbox entries are checked against."""

    domains: tuple[str, ...]
    site_names: tuple[str, ...]  # every name written, valid or not, so one typo reports once
    sites: Mapping[str, Site]
    base_dir: Path


def _kind_of_mailbox(value: Any) -> str:
    kind = as_text(value)
    if kind not in ("modern", "legacy"):
        raise Invalid(f"expected modern or legacy, got {kind!r}")
    return kind


def _legacy_dn(value: Any) -> str:
    dn = as_text(value)
    if not dn.casefold().startswith("/o="):
        raise Invalid(f"a legacy DN starts with '/o=': {dn!r}")
    return dn


def default_dn(ctx: MailboxContext, address: str, site: str) -> str:
    """`/o=<first label of the first domain>/ou=<site>/cn=Recipients/cn=<local part>`."""
    local, _, host = address.partition("@")
    org = (ctx.domains[0] if ctx.domains else host).split(".")[0]
    return f"/o={org}/ou={site}/cn=Recipients/cn={local}"


def read_mailbox(
    report: Report,
    entry: str,
    raw: Mapping[Any, Any],
    ctx: MailboxContext,
    *,
    file: str | None = None,
    allowed: Sequence[str] = MAILBOX_FIELDS,
) -> Mailbox | None:
    fields = Fields(report, entry, raw, allowed, file=file)
    check = address_checker(ctx.domains)
    address = fields.get("address", check, required=True)
    site_name = fields.get("site", as_text, required=True)
    if site_name is not None and site_name not in ctx.site_names:
        known = ", ".join(ctx.site_names) or "none defined"
        fields.problem("site", f"no site named {site_name!r} (sites: {known})")
    kind = fields.get("kind", _kind_of_mailbox) or "modern"
    legacy_dn = fields.get("legacy_dn", _legacy_dn)
    aliases = fields.items("aliases", check)
    display_name = fields.get("display_name", as_text)
    timezone = fields.get("timezone", as_zone)
    calendar_url = fields.get("calendar_url", lambda v: as_url(v, base=False))
    hours = read_working_hours(fields, "working_hours")
    if address is None or site_name is None:
        return None
    site = ctx.sites.get(site_name)
    if legacy_dn is None:
        legacy_dn = default_dn(ctx, address, site_name)
    return Mailbox(
        address=address,
        site=site_name,
        kind="legacy" if kind == "legacy" else "modern",
        legacy_dn=legacy_dn,
        aliases=tuple(alias for _, alias in aliases),
        display_name=display_name,
        timezone=timezone or (site.timezone if site else "UTC"),
        calendar_url=calendar_url,
        working_hours=hours or (site.working_hours if site else WorkingHoursSpec()),
    )


def csv_mailboxes(
    report: Report, top: Fields, ctx: MailboxContext
) -> list[tuple[str, str, Mailbox | None]]:
    """(file, entry, mailbox) for each data row of `mailboxes_csv`; problems name the CSV file."""
    name = top.get("mailboxes_csv", as_text)
    if name is None:
        return []
    path = Path(resolve_path(name, ctx.base_dir))
    shown = str(path)
    try:
        rows = list(enumerate(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))), 1))
    except OSError as exc:
        top.problem("mailboxes_csv", f"cannot read {shown!r}: {exc.strerror or exc}")
        return []
    except UnicodeDecodeError:
        top.problem("mailboxes_csv", f"{shown!r} is not UTF-8 text")
        return []
    except csv.Error as exc:
        top.problem("mailboxes_csv", f"{shown!r} is not valid CSV: {exc}")
        return []
    rows = [(number, row) for number, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        report.add("line 1 (header)", "", "empty file; expected a header row", file=shown)
        return []
    header = [cell.strip() for cell in rows[0][1]]
    for column in header:
        if column.casefold() == "password":
            report.add("line 1 (header)", column, SECRET_INLINED, file=shown)
        elif column not in CSV_COLUMNS:
            hint = difflib.get_close_matches(column, CSV_COLUMNS, n=1)
            more = f" (did you mean '{hint[0]}'?)" if hint else ""
            report.add("line 1 (header)", column, f"unknown column '{column}'{more}", file=shown)
    for column in {c for c in header if header.count(c) > 1}:
        report.add("line 1 (header)", column, "column appears more than once", file=shown)
    for column in ("address", "site"):
        if column not in header:
            report.add("line 1 (header)", column, "required column missing", file=shown)
    found: list[tuple[str, str, Mailbox | None]] = []
    for number, row in rows[1:]:
        cells = {
            col: cell.strip() for col, cell in zip(header, row, strict=False) if col in CSV_COLUMNS
        }
        raw: dict[str, Any] = {col: cell for col, cell in cells.items() if cell}
        if "aliases" in raw:
            raw["aliases"] = [a.strip() for a in raw["aliases"].split(";") if a.strip()]
        entry = f"line {number}" + (f" ({raw['address']})" if "address" in raw else "")
        if len(row) > len(header):
            report.add(entry, "", f"{len(row)} cells, but the header has {len(header)}", file=shown)
        found.append(
            (shown, entry, read_mailbox(report, entry, raw, ctx, file=shown, allowed=CSV_COLUMNS))
        )
    return found


def report_repeats(
    report: Report, claims: list[tuple[str, str, str, str, str]]
) -> set[tuple[str, str]]:
    """Report each (file, entry, field, value, what) whose value an earlier claim already holds
    (ignoring case); the (file, entry) pairs reported."""
    owners: dict[str, tuple[str, str, str]] = {}
    clashed: set[tuple[str, str]] = set()
    for file, entry, field, value, what in claims:
        key = value.casefold()
        if key not in owners:
            owners[key] = (file, entry, field)
            continue
        clashed.add((file, entry))
        other_file, other_entry, other_field = owners[key]
        if (other_file, other_entry) == (file, entry):
            message = f"{value!r} repeats this mailbox's {other_field}"
        else:
            where = other_entry if other_file == file else f"{other_file} {other_entry}"
            message = f"{what} {value!r} clashes with {other_field} of {where}"
        report.add(entry, field, message, file=file)
    return clashed
