"""Value checks of the site-map loader: each converter (`as_...`) turns one raw YAML value into
a checked one or raises `Invalid` with a message saying what was expected.

They know nothing of where a value sits; `sitemap._checks.Fields` reports a failure with its
file, entry and field.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

SECRET_INLINED = "secret inlined; use password_env or password_file"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PLACEHOLDERS = ("address", "local")
REDIS_SCHEMES = ("redis", "rediss", "unix")
REDIS_MULTI_SCHEMES = ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")

_SITE_NAME = re.compile(r"[a-z0-9-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_SRV_NAME = re.compile(rf"_[A-Za-z0-9-]{{1,62}}\._[A-Za-z0-9-]{{1,62}}\.{_LABEL}(\.{_LABEL})*\.?")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


class Invalid(Exception):
    """A value has the wrong type or form; the message says what was expected."""


def describe(value: object) -> str:
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


def as_text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {describe(value)}")
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def as_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value)}")
    return value


def as_positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a whole number, got {describe(value)}")
    if value <= 0:
        raise Invalid(f"must be positive, got {value}")
    return value


def as_non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a whole number, got {describe(value)}")
    if value < 0:
        raise Invalid(f"must not be negative, got {value}")
    return value


def as_port(value: Any) -> int:
    port = as_positive_int(value)
    if port > 65535:
        raise Invalid(f"not a port number (1..65535): {port}")
    return port


def as_positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {describe(value)}")
    if not value > 0 or value == float("inf"):
        raise Invalid(f"must be positive, got {value}")
    return float(value)


def as_env_name(value: Any) -> str:
    name = as_text(value)
    if not _ENV_NAME.fullmatch(name):
        raise Invalid(f"not an environment variable name: {name!r}")
    return name


def as_url(value: Any, *, base: bool = True) -> str:
    link = as_text(value)
    try:
        parts = urlsplit(link)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise Invalid(f"not an http(s) URL: {link!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or link != link.strip()
        or any(c.isspace() for c in link)
    ):
        raise Invalid(f"not an http(s) URL: {link!r}")
    if base and (parts.query or parts.fragment):
        raise Invalid(f"a base URL takes no query or fragment: {link!r}")
    if parts.password is not None:
        raise Invalid(f"{SECRET_INLINED} (a password is written in the URL)")
    return link


def as_zone(value: Any) -> str:
    name = as_text(value)
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise Invalid(
            f"unknown time zone {name!r} (expected an IANA name such as Europe/Amsterdam)"
        ) from None
    return name


def as_domain(value: Any) -> str:
    name = as_text(value)
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise Invalid(f"not a domain name: {name!r}")
    return name


def as_srv_name(value: Any) -> str:
    """A DNS SRV owner name, `_service._proto.domain` (RFC 2782), e.g. `_cas._tcp.eu.contoso.test`."""
    name = as_text(value)
    if len(name.rstrip(".")) > 253 or not _SRV_NAME.fullmatch(name):
        raise Invalid(
            f"not a DNS SRV name (_service._proto.domain, e.g. _cas._tcp.eu.example.com): {name!r}"
        )
    return name


def as_ip(value: Any) -> str:
    """An IPv4 or IPv6 address, written in its canonical form."""
    name = as_text(value)
    try:
        return str(ipaddress.ip_address(name.strip()))
    except ValueError:
        raise Invalid(f"not an IP address: {name!r}") from None


def _as_multi_host_redis_url(link: str, scheme: str) -> str:
    """`redis+sentinel://h:p,h:p/service[/db]` or `redis+cluster://h:p[,h:p]` (and rediss+)."""
    rest = link[len(scheme) + 3 :]
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise Invalid(f"{SECRET_INLINED} (credentials are written in the URL)")
    hosts = netloc.split(",")
    for host in hosts:
        name, sep, port = host.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise Invalid(f"a {scheme} URL lists host:port pairs separated by commas: {link!r}")
    parts = [p for p in path.split("/") if p]
    if scheme.endswith("sentinel"):
        if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise Invalid(f"a Sentinel URL ends with /<service name>[/<db>]: {link!r}")
    elif parts:
        raise Invalid(f"a Cluster URL has no path (Cluster has no databases): {link!r}")
    return link


def as_redis_url(value: Any) -> str:
    """`redis://host[:port][/db]`, `rediss://...` (TLS), `unix:///path/to/socket[?db=N]`,
    `redis+sentinel://h:p,h:p/service[/db]` or `redis+cluster://h:p[,h:p]`."""
    link = as_text(value)
    scheme = link.partition("://")[0]
    if scheme in REDIS_MULTI_SCHEMES:
        return _as_multi_host_redis_url(link, scheme)
    bad = Invalid(
        f"not a Redis URL (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://): "
        f"{link!r}"
    )
    try:
        parts = urlsplit(link)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise bad from None
    if parts.scheme not in REDIS_SCHEMES or any(c.isspace() for c in link):
        raise bad
    if parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.hostname:
            raise bad
    elif not parts.hostname:
        raise bad
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise Invalid(f"the path of a Redis URL is a database number, as in /0: {link!r}")
    if parts.password is not None:
        raise Invalid(f"{SECRET_INLINED} (a password is written in the URL)")
    return link


def as_site_name(value: Any) -> str:
    name = as_text(value)
    if not _SITE_NAME.fullmatch(name):
        raise Invalid(f"site names use only a-z, 0-9 and '-': {name!r}")
    return name


def as_weekday(value: Any) -> str:
    name = as_text(value)
    for day in WEEKDAYS:
        if day.casefold() == name.strip().casefold():
            return day
    raise Invalid(f"not a weekday name: {name!r} (expected Monday .. Sunday)")


def as_clock(value: Any, *, end: bool = False) -> int:
    """Minutes after midnight of an "HH:MM" time; "24:00" is allowed as an end."""
    if not isinstance(value, str):
        raise Invalid(f'expected a time as "HH:MM" text, got {describe(value)}')
    match = _CLOCK.fullmatch(value.strip())
    if match:
        hours, minutes = int(match[1]), int(match[2])
        if (hours < 24 and minutes < 60) or (end and hours == 24 and minutes == 0):
            return hours * 60 + minutes
    raise Invalid(f'not a time of day "HH:MM": {value!r}')


def as_template(value: Any) -> str:
    path = as_text(value)
    try:
        fields = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise Invalid(f"bad template {path!r}: {exc}") from None
    for _, name, spec, conversion in fields:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            raise Invalid(
                f"unknown placeholder {{{name}}} in {path!r}; only {{address}} and "
                "{local} are allowed"
            )
    return path


def resolve_path(value: str, base_dir: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def address_checker(domains: Iterable[str]) -> Callable[[Any], str]:
    allowed = {d.casefold() for d in domains}

    def convert(value: Any) -> str:
        name = as_text(value)
        local, at, host = name.partition("@")
        if not at or not local or not host or "@" in host or any(c.isspace() for c in name):
            raise Invalid(f"not a mail address (local@domain): {name!r}")
        if allowed and host.casefold() not in allowed:
            raise Invalid(f"domain of {name!r} is not in domains ({', '.join(sorted(allowed))})")
        return name

    return convert
