"""Options of `cas lookup`: the command line checked, with a lab manifest filling the gaps.

This module owns what the user may say and what it means: the addresses, the window (default:
today 00:00 to +1 day in `--tz`, itself defaulting to the local zone or UTC), the slot length and
view, where EWS or DNS is, the CA and the credentials. Every problem is a `LookupFailed` with
one clear message naming the option, printed by the CLI with exit status 2.

A lab manifest (docs/contract.md, `--manifest`) supplies `dns.host`/`dns.port`, `ca_cert`,
`client.username`/`client.password` and the nodes of `sites[]`, used for whatever the command
line leaves open; `--user NAME` logs in as one of its `requesters` (logins with different
permission levels) with the password the manifest gives.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cas.codecs.ews.tzdb import zone
from cas.errors import CasError
from cas.model.availability import FreeBusyView
from cas.model.freebusy import MAX_INTERVAL_MINUTES, MIN_INTERVAL_MINUTES, Window

AUTODISCOVER_PATH = "/autodiscover/autodiscover.svc"
EWS_PATH = "/EWS/Exchange.asmx"
DEFAULT_TIMEOUT_SECONDS = 15.0


class LookupFailed(CasError):
    """A usage, discovery or connection problem: printed as one message, exit status 2."""


@dataclass(frozen=True, slots=True)
class LookupOptions:
    """Everything one lookup needs, already checked."""

    addresses: tuple[str, ...]
    window: Window
    interval_minutes: int
    view: FreeBusyView
    tz: tzinfo
    tz_name: str
    ews_url: str | None = None  # --url: skip discovery
    dns: tuple[str, int] | None = None  # where SRV names are resolved (None: the system's)
    manifest_nodes: tuple[str, ...] = ()  # Autodiscover candidates when there is no DNS server
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    as_json: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class Manifest:
    """What `cas lookup` takes from a lab manifest (docs/contract.md)."""

    dns: tuple[str, int] | None = None
    ca_cert: str | None = None
    username: str | None = None
    password: str | None = None
    nodes: tuple[str, ...] = ()
    requesters: Mapping[str, str] = field(default_factory=dict)  # user name -> password


def _requesters(data: Mapping[str, Any], path: str) -> dict[str, str]:
    """The manifest's `requesters` (logins with different permission levels), by name."""
    found: dict[str, str] = {}
    listed = data.get("requesters", [])
    for i, item in enumerate(listed if isinstance(listed, list) else [None]):
        name = item.get("username") if isinstance(item, dict) else None
        password = item.get("password") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(password, str):
            raise LookupFailed(
                f"--manifest {path}: requesters[{i}] must have a username and a password"
            )
        found[name] = password
    return found


def _pick(data: Mapping[str, Any], dotted: str, kind: type, path: str) -> Any:
    value: Any = data
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise LookupFailed(f"--manifest {path}: {dotted} must be a {kind.__name__}, got {value!r}")
    return value


def read_manifest(path: str) -> Manifest:
    """The parts of the lab manifest at `path` a client needs; `LookupFailed` if unusable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LookupFailed(f"--manifest {path}: cannot read it: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LookupFailed(f"--manifest {path}: not a JSON document: {exc}") from None
    if not isinstance(data, dict):
        raise LookupFailed(f"--manifest {path}: expected a JSON object")
    host, port = _pick(data, "dns.host", str, path), _pick(data, "dns.port", int, path)
    ca = _pick(data, "ca_cert", str, path)
    if ca and not Path(ca).is_absolute():
        ca = str(Path(path).resolve().parent / ca)
    nodes: list[str] = []
    sites = data.get("sites", [])
    for i, site in enumerate(sites if isinstance(sites, list) else [None]):
        urls = site.get("nodes", []) if isinstance(site, dict) else None
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise LookupFailed(f"--manifest {path}: sites[{i}].nodes must be a list of URLs")
        nodes += urls
    return Manifest(
        dns=(host, port) if host and port else None,
        ca_cert=ca,
        username=_pick(data, "client.username", str, path),
        password=_pick(data, "client.password", str, path),
        nodes=tuple(nodes),
        requesters=_requesters(data, path),
    )


def _time_zone(name: str | None) -> tuple[str, tzinfo]:
    if name:
        try:
            return name, zone(name)
        except ValueError:
            raise LookupFailed(f"--tz {name}: unknown time zone; use an IANA name such as "
                               "Europe/Berlin") from None  # fmt: skip
    try:
        import tzlocal

        local = tzlocal.get_localzone_name()
        if local:
            return local, zone(local)
    except Exception:
        pass
    return "UTC", UTC


def _moment(text: str, option: str, tz: tzinfo) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LookupFailed(f"{option} {text!r}: not an ISO date or date-time "
                           "(e.g. 2024-03-04 or 2024-03-04T09:00)") from None  # fmt: skip
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def resolve_window(
    start: str | None, end: str | None, days: int | None, tz: tzinfo, now: datetime
) -> Window:
    """The window from --start/--end/--days; by default today 00:00 to +1 day in `tz`."""
    if days is not None and days < 1:
        raise LookupFailed(f"--days {days}: must be at least 1")
    if end is not None and days is not None:
        raise LookupFailed("--end and --days exclude each other")
    if end is not None and start is None:
        raise LookupFailed("--end needs --start")
    if start is not None:
        first = _moment(start, "--start", tz)
    else:
        first = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    # wall-clock days in `tz`, so a DST change does not shift the end
    last = _moment(end, "--end", tz) if end else first.astimezone(tz) + timedelta(days=days or 1)
    try:
        return Window(first, last)
    except ValueError:
        raise LookupFailed(f"--start {start} is not before --end {end}") from None


def _dns_server(text: str) -> tuple[str, int]:
    host, port = text.strip(), 53
    if host.startswith("["):  # [::1]:5353
        host, _, rest = host[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif host.count(":") == 1:
        host, _, rest = host.partition(":")
        port = _port(rest, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError as exc:
            raise LookupFailed(f"--dns {text}: cannot resolve {host!r}: {exc}") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise LookupFailed(f"--dns {whole}: expected HOST:PORT with a port 1..65535")
    return int(text)


def _ews_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LookupFailed(f"--url {text}: expected https://HOST:PORT (or the full EWS URL)")
    if parts.path.lower().endswith(".asmx"):
        return text.strip()
    return text.strip().rstrip("/") + EWS_PATH


def _credentials(
    args: argparse.Namespace, manifest: Manifest, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    username = args.user or manifest.username
    if args.password_env:
        password = environ.get(args.password_env)
        if password is None:
            raise LookupFailed(f"--password-env {args.password_env}: the variable is not set")
    elif args.user and args.user in manifest.requesters and args.user != manifest.username:
        password = manifest.requesters[args.user]  # a requester of the lab, by name
    elif args.user and args.user != manifest.username:
        raise LookupFailed("--user needs --password-env VAR (passwords are not taken on the "
                           "command line), or a requester the --manifest names")  # fmt: skip
    else:
        password = manifest.password
    if password is not None and not username:
        raise LookupFailed("--password-env needs --user")
    return username, password


def _is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and local and "." in domain.strip(".") and not any(c.isspace() for c in text))


def options_from_args(
    args: argparse.Namespace,
    *,
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> LookupOptions:
    """Checked options from the command line; the manifest fills only what it leaves open."""
    manifest = read_manifest(args.manifest) if args.manifest else Manifest()
    addresses = tuple(a.strip() for a in args.addresses)
    for address in addresses:
        if not _is_address(address):
            raise LookupFailed(f"{address!r} is not an email address")
    tz_name, tz = _time_zone(args.tz)
    window = resolve_window(args.start, args.end, args.days, tz, now or datetime.now(UTC))
    interval = args.interval
    if not MIN_INTERVAL_MINUTES <= interval <= MAX_INTERVAL_MINUTES:
        raise LookupFailed(f"--interval {interval}: must be {MIN_INTERVAL_MINUTES}.."
                           f"{MAX_INTERVAL_MINUTES} minutes")  # fmt: skip
    if timedelta(minutes=interval) > window.duration:
        raise LookupFailed(f"--interval {interval}: longer than the window")
    ca = args.ca or manifest.ca_cert
    if ca and not Path(ca).is_file():
        raise LookupFailed(f"--ca {ca}: no such file")
    if args.timeout <= 0:
        raise LookupFailed(f"--timeout {args.timeout:g}: must be positive")
    username, password = _credentials(args, manifest, os.environ if environ is None else environ)
    return LookupOptions(
        addresses=addresses,
        window=window,
        interval_minutes=interval,
        view=FreeBusyView(args.view),
        tz=tz,
        tz_name=tz_name,
        ews_url=_ews_url(args.url) if args.url else None,
        dns=_dns_server(args.dns) if args.dns else manifest.dns,
        manifest_nodes=manifest.nodes,
        ca_file=ca,
        username=username,
        password=password,
        as_json=args.json,
        timeout_seconds=args.timeout,
    )


__all__ = [
    "AUTODISCOVER_PATH",
    "DEFAULT_TIMEOUT_SECONDS",
    "EWS_PATH",
    "LookupFailed",
    "LookupOptions",
    "Manifest",
    "options_from_args",
    "read_manifest",
    "resolve_window",
]
