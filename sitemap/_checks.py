"""Checks shared by the site-map loader: the problem type and typed reads of a mapping.

`Fields` reads one YAML mapping of one entry with the converters of `sitemap._values` (each
turns a raw YAML value into a checked one or raises `Invalid`), and reports a failure as a
`Problem(file, entry, field, message)`. Nothing here knows the site-map layout; that lives in
`sitemap.load` and `sitemap._sites`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sitemap._values import Invalid, as_env_name, as_text, describe, resolve_path
from sitemap.model import SecretRef

T = TypeVar("T")

TOP = "(top level)"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a site map: where (file, entry, field) and what."""

    file: str
    entry: str
    field: str
    message: str

    def __str__(self) -> str:
        return ": ".join([p for p in (self.file, self.entry, self.field) if p] + [self.message])


class SitemapError(Exception):
    """The site map cannot be loaded; `problems` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --- typed reads of one entry ------------------------------------------------------------------


class Report:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, entry: str, field: str, message: str, *, file: str | None = None) -> None:
        self.problems.append(Problem(file or self.file, entry, field, message))


class Fields:
    """Typed reads of one mapping; each bad value is reported with its entry and field."""

    def __init__(
        self,
        report: Report,
        entry: str,
        data: Mapping[Any, Any],
        allowed: Sequence[str],
        *,
        prefix: str = "",
        file: str | None = None,
    ) -> None:
        self.report, self.entry, self.data = report, entry, data
        self.prefix, self.file = prefix, file
        for key in data:
            name = str(key)
            if name.casefold() == "password":
                continue  # reported once, wherever it is, by _scan_secrets
            if not isinstance(key, str) or key not in allowed:
                hint = difflib.get_close_matches(name, allowed, n=1)
                more = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.problem(name, f"unknown field '{name}'{more}")

    def problem(self, key: str, message: str) -> None:
        self.report.add(self.entry, self.prefix + key, message, file=self.file)

    def get(self, key: str, convert: Callable[[Any], T], *, required: bool = False) -> T | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "required field missing")
            return None
        try:
            return convert(value)
        except Invalid as exc:
            self.problem(key, str(exc))
            return None

    def items(self, key: str, convert: Callable[[Any], T]) -> list[tuple[int, T]]:
        """The converted items of a list field, with their positions; bad items are reported."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"expected a list, got {describe(value)}")
            return []
        good: list[tuple[int, T]] = []
        for index, item in enumerate(value):
            try:
                good.append((index, convert(item)))
            except Invalid as exc:
                self.problem(f"{key}[{index}]", str(exc))
        return good

    def sub(self, key: str, allowed: Sequence[str]) -> Fields | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(key, f"expected a mapping, got {describe(value)}")
            return None
        return Fields(
            self.report, self.entry, value, allowed, prefix=f"{self.prefix}{key}.", file=self.file
        )

    def secret(self, base_dir: Path, *, required: bool) -> SecretRef | None:
        env = self.get("password_env", as_env_name)
        file = self.get("password_file", as_text)
        if env is not None and file is not None:
            self.problem("password_env", "give password_env or password_file, not both")
        if env is not None:
            return SecretRef(env=env)
        if file is not None:
            return SecretRef(file=resolve_path(file, base_dir))
        if required and "password_env" not in self.data and "password_file" not in self.data:
            self.problem("password_env", "required field missing (or give password_file)")
        return None


def section(report: Report, top: Fields, key: str, allowed: Sequence[str]) -> Fields | None:
    """The top-level mapping `key` as its own entry (problems read `key: field: ...`)."""
    value = top.data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        top.problem(key, f"expected a mapping, got {describe(value)}")
        return None
    return Fields(report, key, value, allowed)


def entry_label(section: str, index: int, item: object) -> str:
    """`sites[1] (us)`: a list entry, named by its `name`/`address`/`username` when it has one."""
    if isinstance(item, dict):
        for key in ("name", "address", "username"):
            if isinstance(item.get(key), str):
                return f"{section}[{index}] ({item[key]})"
    return f"{section}[{index}]"


def no_repeats(fields: Fields, key: str, values: list[tuple[int, str]]) -> None:
    first: dict[str, int] = {}
    for index, value in values:
        folded = value.rstrip("/").casefold()
        if folded in first:
            fields.problem(f"{key}[{index}]", f"{value!r} repeats {key}[{first[folded]}]")
        first.setdefault(folded, index)
