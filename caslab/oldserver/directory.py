"""The legacy emulator's directory: which SMTP address is which legacy DN and display name.

`cas legacy-server --directory FILE` reads one of these formats (chosen by the file's suffix):

* **CSV** (`.csv`): a header row naming at least `address` and `legacy_dn`; `display_name` is
  optional (default: the address). Other columns are ignored and, when a `kind` column exists, only
  rows whose kind is `legacy` are read, so the sitemap's own directory CSV
  (`address,site,kind,legacy_dn,aliases,display_name,timezone`) works as is.
* **JSON** (`.json`) or **YAML** (`.yaml`, `.yml`): either a list of objects with the same keys,
  or an object mapping each address to `{"legacy_dn": ..., "display_name": ...}` or straight
  to its legacy DN string.

Addresses are matched case-insensitively. Problems are reported as `DirectoryFileError` naming
the file and the row or entry.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from caslab.oldserver.store import LegacyDnError, message_subject
from sitemap.model import Mailbox


class DirectoryEntry(NamedTuple):
    legacy_dn: str
    display_name: str


Directory = Mapping[str, DirectoryEntry]


class DirectoryFileError(ValueError):
    """A directory file that cannot be read; the message names the file and the entry."""


def _entry(
    where: str, address: Any, legacy_dn: Any, display_name: Any
) -> tuple[str, DirectoryEntry]:
    if not isinstance(address, str) or "@" not in address.strip():
        raise DirectoryFileError(f"{where}: address {address!r} is not an e-mail address")
    if not isinstance(legacy_dn, str) or not legacy_dn.strip():
        raise DirectoryFileError(f"{where}: {address} has no legacy_dn")
    try:
        message_subject(legacy_dn)
    except LegacyDnError as exc:
        raise DirectoryFileError(f"{where}: {exc}") from None
    name = display_name.strip() if isinstance(display_name, str) and display_name.strip() else None
    address = address.strip()
    return address.casefold(), DirectoryEntry(legacy_dn.strip(), name or address)


def _add(out: dict[str, DirectoryEntry], where: str, item: tuple[str, DirectoryEntry]) -> None:
    key, entry = item
    if key in out:
        raise DirectoryFileError(f"{where}: address {key} is listed twice")
    out[key] = entry


def _from_csv(path: Path) -> dict[str, DirectoryEntry]:
    out: dict[str, DirectoryEntry] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip() for c in reader.fieldnames or ()}
        missing = {"address", "legacy_dn"} - columns
        if missing:
            raise DirectoryFileError(f"{path}: header lacks column(s) {', '.join(sorted(missing))}")
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
            if not any(row.values()):
                continue
            if "kind" in columns and row.get("kind", "").casefold() != "legacy":
                continue
            where = f"{path}: line {reader.line_num}"
            _add(
                out,
                where,
                _entry(where, row.get("address"), row.get("legacy_dn"), row.get("display_name")),
            )
    return out


def _from_data(path: Path, data: Any) -> dict[str, DirectoryEntry]:
    out: dict[str, DirectoryEntry] = {}
    if isinstance(data, list):
        for index, item in enumerate(data):
            where = f"{path}: entry {index + 1}"
            if not isinstance(item, Mapping):
                raise DirectoryFileError(f"{where}: expected an object with address and legacy_dn")
            _add(
                out,
                where,
                _entry(where, item.get("address"), item.get("legacy_dn"), item.get("display_name")),
            )
    elif isinstance(data, Mapping):
        for address, value in data.items():
            where = f"{path}: entry {address!r}"
            if isinstance(value, str):
                value = {"legacy_dn": value}
            if not isinstance(value, Mapping):
                raise DirectoryFileError(f"{where}: expected a legacy DN or an object")
            _add(
                out,
                where,
                _entry(where, address, value.get("legacy_dn"), value.get("display_name")),
            )
    else:
        raise DirectoryFileError(f"{path}: expected a list or an object at the top level")
    return out


def load_directory(path: str | Path) -> dict[str, DirectoryEntry]:
    """The directory in `path` (CSV, JSON or YAML by suffix), keyed by casefolded address."""
    path = Path(path)
    suffix = path.suffix.casefold()
    try:
        if suffix == ".csv":
            return _from_csv(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DirectoryFileError(f"{path}: {exc}") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DirectoryFileError(f"{path}: not JSON: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DirectoryFileError(f"{path}: not YAML: {exc}") from None
    else:
        raise DirectoryFileError(f"{path}: unknown directory format (use .csv, .json or .yaml)")
    return _from_data(path, data if data is not None else [])


def directory_from_mailboxes(mailboxes: Iterable[Mailbox]) -> dict[str, DirectoryEntry]:
    """The directory of the `legacy` mailboxes of a sitemap (the lab's way to build one).

    Aliases are listed too, pointing at the same legacy DN (an old client may ask by alias).
    """
    out: dict[str, DirectoryEntry] = {}
    for mailbox in mailboxes:
        if mailbox.kind == "legacy" and mailbox.legacy_dn:
            entry = DirectoryEntry(mailbox.legacy_dn, mailbox.display_name or mailbox.address)
            for address in (mailbox.address, *mailbox.aliases):
                out.setdefault(address.casefold(), entry)
    return out


def write_directory_json(path: str | Path, directory: Directory) -> Path:
    """Write `directory` as the JSON list format `load_directory` reads."""
    path = Path(path)
    rows = [
        {"address": address, "legacy_dn": entry[0], "display_name": entry[1]}
        for address, entry in directory.items()
    ]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


__all__ = [
    "Directory",
    "DirectoryEntry",
    "DirectoryFileError",
    "directory_from_mailboxes",
    "load_directory",
    "write_directory_json",
]
