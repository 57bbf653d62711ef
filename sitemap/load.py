"""Read a site map (YAML, plus an optional CSV directory) into validated `sitemap.model` values.

Every problem is collected, not just the first: `SitemapError.problems` lists each one as a
`Problem(file, entry, field, message)`, and `str(error)` prints them one per line, e.g.
``sitemap.yaml: sites[1] (us): caldav.url: not an http(s) URL: 'ftp://x'``.
The full reference of the format is `docs/sitemap.md`; in short::

    domains: [contoso.test]                 # domains served; mailbox addresses must use one
    auth: {anonymous: false, users: [{username: scheduler, password_env: CAS_CLIENT_PASSWORD}]}
    settings: {window_max_days: 62}         # node settings, passed through (str keys)
    sites:                                  # required, at least one
      - name: eu                            # [a-z0-9-]+, unique
        timezone: Europe/Amsterdam          # IANA name, default UTC
        nodes: [https://127.0.0.1:8443]     # static node base URLs, default []
        working_hours: {days: [Monday, Friday], start: "08:00", end: "17:00"}
        caldav: {url: http://127.0.0.1:5232/, username: cas, password_env: CAS_EU_CALDAV_PASSWORD,
                 calendar_path: "{address}/calendar/", max_connections: 10,
                 timeout_seconds: 10, verify_tls: true}
    mailboxes:                              # inline directory, default []
      - {address: ann@contoso.test, site: eu, kind: modern, legacy_dn: ..., aliases: [...],
         display_name: Ann, timezone: ..., calendar_url: ..., working_hours: {...}}
    mailboxes_csv: directory.csv            # relative to this file; columns address, site,
                                            # kind, legacy_dn, aliases (;-separated),
                                            # display_name, timezone

Secrets are referenced (`password_env` / `password_file`), never inlined: a `password` key anywhere
is an error. Defaults are applied here, so every loaded `Mailbox` has its `legacy_dn`, `timezone`
and `working_hours` filled in. Relative `password_file`, `verify_tls` and `mailboxes_csv` paths are
taken relative to the YAML file's directory. Top-level keys starting with ``x-`` are ignored, to
hold YAML anchors (``x-hours: &hours {...}`` then ``working_hours: *hours``). Unquoted times
such as ``17:00`` stay text (YAML 1.1 base-60 numbers are off), and a repeated key is an error.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml

from sitemap.model import (
    CalDavBackendConfig,
    ClientAuth,
    ClientUser,
    Mailbox,
    SecretRef,
    Site,
    Sitemap,
    WorkingHoursSpec,
)

__all__ = ["Problem", "SitemapError", "load_sitemap", "parse_sitemap"]

T = TypeVar("T")

TOP = "(top level)"
SECRET_INLINED = "secret inlined; use password_env or password_file"
TOP_FIELDS = ("domains", "auth", "settings", "sites", "mailboxes", "mailboxes_csv")
AUTH_FIELDS = ("anonymous", "users")
USER_FIELDS = ("username", "password_env", "password_file")
SITE_FIELDS = ("name", "timezone", "nodes", "working_hours", "caldav")
HOURS_FIELDS = ("days", "start", "end")
CALDAV_FIELDS = (
    "url", "username", "password_env", "password_file", "calendar_path",
    "max_connections", "timeout_seconds", "verify_tls",
)  # fmt: skip
MAILBOX_FIELDS = (
    "address", "site", "kind", "legacy_dn", "aliases", "display_name", "timezone",
    "calendar_url", "working_hours",
)  # fmt: skip
CSV_COLUMNS = ("address", "site", "kind", "legacy_dn", "aliases", "display_name", "timezone")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PLACEHOLDERS = ("address", "local")

_SITE_NAME = re.compile(r"[a-z0-9-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOMAIN = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


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


# --- YAML reading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML without base-60 numbers (so `17:00` stays text), noting repeated keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[tuple[str, int, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    mark = key_node.start_mark
                    self.repeated.append((key_node.value, mark.line + 1, mark.column + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _read_yaml(text: str, source: str) -> tuple[dict[Any, Any], list[Problem]]:
    """The top-level mapping and repeated-key problems; raises `SitemapError` if unreadable."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise SitemapError(
            [
                Problem(
                    source,
                    f"line {line}, column {column}",
                    "",
                    f"YAML syntax error: character {exc.character:#06x} is not allowed",
                )
            ]
        ) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "unreadable"
        if exc.context and context and context is not mark:
            what += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
        raise SitemapError([Problem(source, where, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise SitemapError([Problem(source, "", "", f"YAML syntax error: {exc}")]) from None
    finally:
        loader.dispose()
    if data is None:
        raise SitemapError(
            [
                Problem(
                    source,
                    "line 1, column 1",
                    "",
                    "empty file; expected a mapping with at least 'sites'",
                )
            ]
        )
    if not isinstance(data, dict):
        mark = node.start_mark
        raise SitemapError(
            [
                Problem(
                    source,
                    f"line {mark.line + 1}, column {mark.column + 1}",
                    "",
                    f"expected a mapping at the top level, got {_kind(data)}",
                )
            ]
        )
    repeated = [
        Problem(source, f"line {line}, column {col}", key, f"duplicate key '{key}' in one mapping")
        for key, line, col in loader.repeated
    ]
    return data, repeated


# --- typed reads of one entry ------------------------------------------------------------------


class _Invalid(Exception):
    """A value has the wrong type or form; the message says what was expected."""


class _Report:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, entry: str, field: str, message: str, *, file: str | None = None) -> None:
        self.problems.append(Problem(file or self.file, entry, field, message))


class _Fields:
    """Typed reads of one mapping; each bad value is reported with its entry and field."""

    def __init__(
        self,
        report: _Report,
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
        except _Invalid as exc:
            self.problem(key, str(exc))
            return None

    def items(self, key: str, convert: Callable[[Any], T]) -> list[tuple[int, T]]:
        """The converted items of a list field, with their positions; bad items are reported."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"expected a list, got {_kind(value)}")
            return []
        good: list[tuple[int, T]] = []
        for index, item in enumerate(value):
            try:
                good.append((index, convert(item)))
            except _Invalid as exc:
                self.problem(f"{key}[{index}]", str(exc))
        return good

    def sub(self, key: str, allowed: Sequence[str]) -> _Fields | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(key, f"expected a mapping, got {_kind(value)}")
            return None
        return _Fields(
            self.report, self.entry, value, allowed, prefix=f"{self.prefix}{key}.", file=self.file
        )

    def secret(self, base_dir: Path, *, required: bool) -> SecretRef | None:
        env = self.get("password_env", _env_name)
        file = self.get("password_file", _text)
        if env is not None and file is not None:
            self.problem("password_env", "give password_env or password_file, not both")
        if env is not None:
            return SecretRef(env=env)
        if file is not None:
            return SecretRef(file=_path(file, base_dir))
        if required and "password_env" not in self.data and "password_file" not in self.data:
            self.problem("password_env", "required field missing (or give password_file)")
        return None


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"the flag {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected text, got {_kind(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_kind(value)}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected a whole number, got {_kind(value)}")
    if value <= 0:
        raise _Invalid(f"must be positive, got {value}")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number, got {_kind(value)}")
    if not value > 0 or value == float("inf"):
        raise _Invalid(f"must be positive, got {value}")
    return float(value)


def _env_name(value: Any) -> str:
    name = _text(value)
    if not _ENV_NAME.fullmatch(name):
        raise _Invalid(f"not an environment variable name: {name!r}")
    return name


def _url(value: Any, *, base: bool = True) -> str:
    link = _text(value)
    try:
        parts = urlsplit(link)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _Invalid(f"not an http(s) URL: {link!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or link != link.strip()
        or any(c.isspace() for c in link)
    ):
        raise _Invalid(f"not an http(s) URL: {link!r}")
    if base and (parts.query or parts.fragment):
        raise _Invalid(f"a base URL takes no query or fragment: {link!r}")
    return link


def _zone(value: Any) -> str:
    name = _text(value)
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise _Invalid(
            f"unknown time zone {name!r} (expected an IANA name such as Europe/Amsterdam)"
        ) from None
    return name


def _domain(value: Any) -> str:
    name = _text(value)
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise _Invalid(f"not a domain name: {name!r}")
    return name


def _site_name(value: Any) -> str:
    name = _text(value)
    if not _SITE_NAME.fullmatch(name):
        raise _Invalid(f"site names use only a-z, 0-9 and '-': {name!r}")
    return name


def _weekday(value: Any) -> str:
    name = _text(value)
    for day in WEEKDAYS:
        if day.casefold() == name.strip().casefold():
            return day
    raise _Invalid(f"not a weekday name: {name!r} (expected Monday .. Sunday)")


def _clock(value: Any, *, end: bool = False) -> int:
    """Minutes after midnight of an "HH:MM" time; "24:00" is allowed as an end."""
    if not isinstance(value, str):
        raise _Invalid(f'expected a time as "HH:MM" text, got {_kind(value)}')
    match = _CLOCK.fullmatch(value.strip())
    if match:
        hours, minutes = int(match[1]), int(match[2])
        if (hours < 24 and minutes < 60) or (end and hours == 24 and minutes == 0):
            return hours * 60 + minutes
    raise _Invalid(f'not a time of day "HH:MM": {value!r}')


def _template(value: Any) -> str:
    path = _text(value)
    try:
        fields = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise _Invalid(f"bad template {path!r}: {exc}") from None
    for _, name, spec, conversion in fields:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            raise _Invalid(
                f"unknown placeholder {{{name}}} in {path!r}; only {{address}} and "
                "{local} are allowed"
            )
    return path


def _path(value: str, base_dir: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def _checked_address(domains: Iterable[str]) -> Callable[[Any], str]:
    allowed = {d.casefold() for d in domains}

    def convert(value: Any) -> str:
        name = _text(value)
        local, at, host = name.partition("@")
        if not at or not local or not host or "@" in host or any(c.isspace() for c in name):
            raise _Invalid(f"not a mail address (local@domain): {name!r}")
        if allowed and host.casefold() not in allowed:
            raise _Invalid(f"domain of {name!r} is not in domains ({', '.join(sorted(allowed))})")
        return name

    return convert


def _entry(section: str, index: int, item: object) -> str:
    """`sites[1] (us)`: a list entry, named by its `name`/`address`/`username` when it has one."""
    if isinstance(item, dict):
        for key in ("name", "address", "username"):
            if isinstance(item.get(key), str):
                return f"{section}[{index}] ({item[key]})"
    return f"{section}[{index}]"


# --- sections ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    """What mailbox entries are checked against."""

    domains: tuple[str, ...]
    site_names: tuple[str, ...]  # every name written, valid or not, so one typo reports once
    sites: Mapping[str, Site]
    base_dir: Path


def _scan_secrets(data: Mapping[Any, Any], report: _Report) -> None:
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
                walk(item, _entry(key, index, item), "")
        else:
            walk(value, str(key), "")


def _entries(report: _Report, top: _Fields, key: str) -> list[tuple[str, dict[Any, Any]]]:
    """The mapping items of a top-level list, each with its entry label; others are reported."""
    value = top.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        top.problem(key, f"expected a list, got {_kind(value)}")
        return []
    found = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            found.append((_entry(key, index, item), item))
        else:
            report.add(_entry(key, index, item), "", f"expected a mapping, got {_kind(item)}")
    return found


def _no_repeats(fields: _Fields, key: str, values: list[tuple[int, str]]) -> None:
    first: dict[str, int] = {}
    for index, value in values:
        folded = value.rstrip("/").casefold()
        if folded in first:
            fields.problem(f"{key}[{index}]", f"{value!r} repeats {key}[{first[folded]}]")
        first.setdefault(folded, index)


def _auth(report: _Report, top: _Fields, base_dir: Path) -> ClientAuth:
    value = top.data.get("auth")
    if value is None:
        return ClientAuth()
    if not isinstance(value, dict):
        top.problem("auth", f"expected a mapping, got {_kind(value)}")
        return ClientAuth()
    fields = _Fields(report, "auth", value, AUTH_FIELDS)
    anonymous = fields.get("anonymous", _flag) or False
    users: list[ClientUser] = []
    names: list[tuple[int, str]] = []
    listed = fields.items("users", lambda item: item)
    for index, item in listed:
        if not isinstance(item, dict):
            fields.problem(f"users[{index}]", f"expected a mapping, got {_kind(item)}")
            continue
        user = _Fields(report, "auth", item, USER_FIELDS, prefix=f"users[{index}].")
        name = user.get("username", _text, required=True)
        if name is not None and ":" in name:
            user.problem("username", f"a user name cannot contain ':': {name!r}")
        secret = user.secret(base_dir, required=True)
        if name is not None:
            names.append((index, name))
            if secret is not None:
                users.append(ClientUser(username=name, password=secret))
    first: dict[str, int] = {}
    for index, name in names:
        if name in first:
            fields.problem(
                f"users[{index}].username", f"duplicate user {name!r} (also users[{first[name]}])"
            )
        first.setdefault(name, index)
    return ClientAuth(users=tuple(users), anonymous=anonymous)


def _settings(report: _Report, top: _Fields) -> Mapping[str, object]:
    value = top.data.get("settings")
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        top.problem("settings", f"expected a mapping, got {_kind(value)}")
        return MappingProxyType({})
    for key in value:
        if not isinstance(key, str):
            report.add("settings", str(key), f"setting names are text, got {_kind(key)}")
    return MappingProxyType(dict(value))


def _working_hours(parent: _Fields, key: str) -> WorkingHoursSpec | None:
    fields = parent.sub(key, HOURS_FIELDS)
    if fields is None:
        return None
    before = len(fields.report.problems)
    default = WorkingHoursSpec()
    days = fields.items("days", _weekday)
    if fields.data.get("days") == []:
        fields.problem("days", "no working days; list at least one")
    _no_repeats(fields, "days", days)
    start = fields.get("start", _clock)
    end = fields.get("end", lambda v: _clock(v, end=True))
    spec = WorkingHoursSpec(
        days=tuple(day for _, day in days) if "days" in fields.data else default.days,
        start_minute=default.start_minute if start is None else start,
        end_minute=default.end_minute if end is None else end,
    )
    if len(fields.report.problems) == before and spec.start_minute >= spec.end_minute:
        fields.problem("end", "must be later than start")
    return spec


def _caldav(fields: _Fields | None, base_dir: Path) -> CalDavBackendConfig | None:
    if fields is None:
        return None
    default = CalDavBackendConfig(url="")
    link = fields.get("url", _url, required=True)
    username = fields.get("username", _text)
    password = fields.secret(base_dir, required=False)
    path = fields.get("calendar_path", _template)
    connections = fields.get("max_connections", _positive_int)
    timeout = fields.get("timeout_seconds", _positive_number)
    verify = fields.get("verify_tls", lambda v: _verify_tls(v, base_dir))
    if link is None:
        return None
    return CalDavBackendConfig(
        url=link,
        username=username,
        password=password,
        calendar_path=default.calendar_path if path is None else path,
        max_connections=default.max_connections if connections is None else connections,
        timeout_seconds=default.timeout_seconds if timeout is None else timeout,
        verify_tls=default.verify_tls if verify is None else verify,
    )


def _verify_tls(value: Any, base_dir: Path) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return _path(value, base_dir)
    raise _Invalid(f"expected true, false or a CA bundle path, got {_kind(value)}")


def _site(report: _Report, entry: str, raw: dict[Any, Any], base_dir: Path) -> Site | None:
    fields = _Fields(report, entry, raw, SITE_FIELDS)
    name = fields.get("name", _site_name, required=True)
    timezone = fields.get("timezone", _zone)
    nodes = fields.items("nodes", _url)
    _no_repeats(fields, "nodes", nodes)
    hours = _working_hours(fields, "working_hours")
    caldav = _caldav(fields.sub("caldav", CALDAV_FIELDS), base_dir)
    if name is None:
        return None
    return Site(
        name=name,
        nodes=tuple(node for _, node in nodes),
        timezone=timezone or "UTC",
        caldav=caldav,
        working_hours=hours or WorkingHoursSpec(),
    )


def _kind_of_mailbox(value: Any) -> str:
    kind = _text(value)
    if kind not in ("modern", "legacy"):
        raise _Invalid(f"expected modern or legacy, got {kind!r}")
    return kind


def _legacy_dn(value: Any) -> str:
    dn = _text(value)
    if not dn.casefold().startswith("/o="):
        raise _Invalid(f"a legacy DN starts with '/o=': {dn!r}")
    return dn


def _default_dn(ctx: _Context, address: str, site: str) -> str:
    """`/o=<first label of the first domain>/ou=<site>/cn=Recipients/cn=<local part>`."""
    local, _, host = address.partition("@")
    org = (ctx.domains[0] if ctx.domains else host).split(".")[0]
    return f"/o={org}/ou={site}/cn=Recipients/cn={local}"


def _mailbox(
    report: _Report,
    entry: str,
    raw: Mapping[Any, Any],
    ctx: _Context,
    *,
    file: str | None = None,
    allowed: Sequence[str] = MAILBOX_FIELDS,
) -> Mailbox | None:
    fields = _Fields(report, entry, raw, allowed, file=file)
    check = _checked_address(ctx.domains)
    address = fields.get("address", check, required=True)
    site_name = fields.get("site", _text, required=True)
    if site_name is not None and site_name not in ctx.site_names:
        known = ", ".join(ctx.site_names) or "none defined"
        fields.problem("site", f"no site named {site_name!r} (sites: {known})")
    kind = fields.get("kind", _kind_of_mailbox) or "modern"
    legacy_dn = fields.get("legacy_dn", _legacy_dn)
    aliases = fields.items("aliases", check)
    display_name = fields.get("display_name", _text)
    timezone = fields.get("timezone", _zone)
    calendar_url = fields.get("calendar_url", lambda v: _url(v, base=False))
    hours = _working_hours(fields, "working_hours")
    if address is None or site_name is None:
        return None
    site = ctx.sites.get(site_name)
    if legacy_dn is None:
        legacy_dn = _default_dn(ctx, address, site_name)
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


def _csv_mailboxes(
    report: _Report, top: _Fields, ctx: _Context
) -> list[tuple[str, str, Mailbox | None]]:
    """(file, entry, mailbox) for each data row of `mailboxes_csv`; problems name the CSV file."""
    name = top.get("mailboxes_csv", _text)
    if name is None:
        return []
    path = Path(_path(name, ctx.base_dir))
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
            (shown, entry, _mailbox(report, entry, raw, ctx, file=shown, allowed=CSV_COLUMNS))
        )
    return found


def _unique(report: _Report, claims: list[tuple[str, str, str, str, str]]) -> set[tuple[str, str]]:
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


# --- entry points ------------------------------------------------------------------------------


def parse_sitemap(text: str, source: str, *, base_dir: str | Path | None = None) -> Sitemap:
    """Validate site-map YAML `text`; `source` names it in problems. Raises `SitemapError`.

    Relative paths (`mailboxes_csv`, `password_file`, `verify_tls`) are taken from `base_dir`,
    by default the directory of `source`.
    """
    data, repeated = _read_yaml(text, source)
    report = _Report(source)
    report.problems.extend(repeated)
    base = Path(base_dir) if base_dir is not None else Path(source).parent
    _scan_secrets(data, report)
    extensions = tuple(k for k in data if isinstance(k, str) and k.startswith("x-"))
    top = _Fields(report, TOP, data, TOP_FIELDS + extensions)  # x-...: room for YAML anchors
    domains = top.items("domains", _domain)
    _no_repeats(top, "domains", domains)
    auth = _auth(report, top, base)
    settings = _settings(report, top)

    site_entries = _entries(report, top, "sites")
    if not site_entries and top.data.get("sites") in (None, []):
        top.problem("sites", "required field missing; list at least one site")
    sites: dict[str, Site] = {}
    written: dict[str, str] = {}
    for entry, raw in site_entries:
        site = _site(report, entry, raw, base)
        name = raw.get("name")
        if isinstance(name, str) and name in written:
            report.add(entry, "name", f"duplicate site name {name!r} (also {written[name]})")
        elif isinstance(name, str):
            written[name] = entry
            if site is not None:
                sites[name] = site

    ctx = _Context(tuple(d for _, d in domains), tuple(written), sites, base)
    listed: list[tuple[str, str, Mailbox | None]] = [
        (source, entry, _mailbox(report, entry, raw, ctx))
        for entry, raw in _entries(report, top, "mailboxes")
    ]
    listed += _csv_mailboxes(report, top, ctx)
    mailboxes = [(file, entry, m) for file, entry, m in listed if m is not None]
    names = [
        (file, entry, field, name, "address")
        for file, entry, m in mailboxes
        for field, name in [("address", m.address)]
        + [(f"aliases[{i}]", alias) for i, alias in enumerate(m.aliases)]
    ]
    clashed = _unique(report, names)
    dns = [
        (file, entry, "legacy_dn", dn, "default legacy DN" if dn == default else "legacy DN")
        for file, entry, m in mailboxes
        if (file, entry) not in clashed  # its default DN clashes too; say it once
        for dn, default in [(m.legacy_dn or "", _default_dn(ctx, m.address, m.site))]
    ]
    _unique(report, dns)

    if report.problems:
        raise SitemapError(report.problems)
    return Sitemap(
        source=source,
        sites=tuple(sites.values()),
        mailboxes=tuple(m for _, _, m in mailboxes),
        domains=ctx.domains,
        auth=auth,
        settings=settings,
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
