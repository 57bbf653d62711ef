"""Node settings: each declared once, as a typed field with its kind, default and one line of help.

Values come, lowest to highest precedence, from the defaults here, the sitemap's `settings:`
mapping, `CAS_<NAME>` environment variables, and `--set NAME=VALUE` on the command line. A
wrong value is reported with where it came from (file and key, variable, or option), what was
given and what the setting allows. `cas serve --print-config` prints the table with each
value's source (`format_table`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from cas.errors import CasError


class SettingsError(CasError):
    """A setting has a wrong name or value; the message says where it came from."""


@dataclass(frozen=True, slots=True)
class Kind:
    """How a setting's raw value (YAML, environment text) becomes its typed value."""

    allowed: str  # in words, for messages: "a whole number of at least 1"
    convert: Callable[[Any], Any]


def _number(value: Any, cast: Callable[[Any], Any], noun: str) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {noun}")
    try:
        return cast(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not {noun}") from None


def _at_least(cast: Callable[[Any], Any], noun: str, low: float, strict: bool) -> Kind:
    bound = f"more than {low:g}" if strict else f"at least {low:g}"

    def convert(value: Any) -> Any:
        number = _number(value, cast, noun)
        if number < low or (strict and number == low):
            raise ValueError(f"{number!r} is too small")
        return number

    return Kind(f"{noun} {bound}", convert)


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a file path")
    return value.strip()


def _choice(*choices: str) -> Kind:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of them")
        return text

    return Kind(f"one of {', '.join(choices)}", convert)


POSITIVE_INT = _at_least(int, "a whole number", 1, strict=False)
POSITIVE_SECONDS = _at_least(float, "a number of seconds", 0, strict=True)
SECONDS = _at_least(float, "a number of seconds", 0, strict=False)
RATE = _at_least(float, "a number", 0, strict=False)
PATH = Kind("a file path, or empty", _path)
LOG_LEVEL = _choice("debug", "info", "warning", "error")


def setting(default: Any, kind: Kind, help: str) -> Any:
    """A settings field: its default, its kind and its one line of help, declared together."""
    return field(default=default, metadata={"kind": kind, "help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    max_mailboxes: int = setting(100, POSITIVE_INT, "Most mailboxes one request may name.")
    window_max_days: int = setting(62, POSITIVE_INT, "Longest time window, in whole days.")
    max_body_bytes: int = setting(512 * 1024, POSITIVE_INT, "Largest request body accepted.")
    request_timeout_seconds: float = setting(
        10.0,
        POSITIVE_SECONDS,
        "Time budget of one request; mailboxes not answered by then get an error.",
    )
    backend_concurrency: int = setting(
        32,
        POSITIVE_INT,
        "Most calls one node makes to the site's CalDAV backend at once; the rest wait their turn.",
    )
    oldserver_concurrency: int = setting(
        4,
        POSITIVE_INT,
        "Most requests one node sends the site's old server at once; the rest wait their turn.",
    )
    throttle_rate: float = setting(
        50.0,
        RATE,
        "Mailbox lookups per second each requester may make, across the site's nodes; 0: no limit.",
    )
    throttle_burst: int = setting(
        500,
        POSITIVE_INT,
        "Most lookups a requester may make at once (a request costs one per mailbox, at most this).",
    )
    reload_check_seconds: float = setting(
        2.0,
        POSITIVE_SECONDS,
        "How often the sitemap file is checked for changes (SIGHUP reloads at once).",
    )
    cluster_secret_file: str = setting(
        "",
        PATH,
        "File with the cluster secret(s) nodes sign forwarded requests with; empty: no forwarding.",
    )
    peer_ca_file: str = setting(
        "",
        PATH,
        "CA bundle that other nodes' certificates are verified against; empty: the system's.",
    )
    hop_limit: int = setting(1, POSITIVE_INT, "How many node-to-node hops a request may take.")
    forward_attempts: int = setting(
        3,
        POSITIVE_INT,
        "Tries per node for transient errors (transport, 503, ErrorServerBusy) before failover.",
    )
    max_peer_response_bytes: int = setting(
        16 * 1024 * 1024,
        POSITIVE_INT,
        "Largest answer read from another node; a larger one counts as that node failing.",
    )
    cache_refresh_seconds: float = setting(
        900.0,
        POSITIVE_SECONDS,
        "Cached data younger than this is served without asking the backend (refresh interval).",
    )
    cache_validate_seconds: float = setting(
        5.0,
        SECONDS,
        "How often cached data is confirmed unchanged with the backend's change tag (one cheap "
        "request per mailbox per interval, across the site); 0: rely on pushed changes.",
    )
    oldserver_refresh_seconds: float = setting(
        60.0,
        POSITIVE_SECONDS,
        "How often an old server's free/busy is read again (it has no change tag; clients "
        "publish it every 15 minutes).",
    )
    change_token_file: str = setting(
        "",
        PATH,
        "File with the bearer token a backend's storage hook sends changes with "
        "(POST /api/v1/changes); empty: the admin token only.",
    )
    cache_query_window_seconds: float = setting(
        2.0,
        POSITIVE_SECONDS,
        "How long to wait for a backend before serving stale cached data instead.",
    )
    cache_max_stale_seconds: float = setting(
        86400.0,
        POSITIVE_SECONDS,
        "Oldest cached data that may still be served (marked stale) when a backend is slow or down.",
    )
    cache_negative_seconds: float = setting(
        60.0,
        POSITIVE_SECONDS,
        "How long a calendar the backend says does not exist is remembered as missing.",
    )
    cache_local_seconds: float = setting(
        1.0,
        SECONDS,
        "How long a node keeps its own copy of cached pieces in front of Redis; 0 disables.",
    )
    remote_cache_seconds: float = setting(
        60.0, SECONDS, "How long the entry node keeps other sites' answers; 0 disables."
    )
    redis_timeout_seconds: float = setting(
        0.25,
        POSITIVE_SECONDS,
        "Bound on every Redis call; past it the cache counts as unavailable.",
    )
    breaker_failures: int = setting(
        5,
        POSITIVE_INT,
        "Failures or timeouts in a row (each mailbox of a failed batch counts) that open the "
        "breaker of a backend, old server or other site's node.",
    )
    breaker_open_seconds: float = setting(
        5.0,
        POSITIVE_SECONDS,
        "How long an open breaker answers at once before one probe; each failed probe adds "
        "this much again.",
    )
    breaker_max_open_seconds: float = setting(
        60.0,
        POSITIVE_SECONDS,
        "Longest wait between probes of a dependency that stays down.",
    )
    breaker_slow_seconds: float = setting(
        3.0,
        POSITIVE_SECONDS,
        "A backend or old-server call unanswered after this counts as failed for its breaker "
        "(the answer is still awaited until the deadline).",
    )
    http_idle_timeout_seconds: float = setting(
        10.0,
        POSITIVE_SECONDS,
        "A client connection that sends no request within this (TLS handshake included) is closed.",
    )
    http_keepalive_seconds: float = setting(
        5.0, POSITIVE_SECONDS, "An idle kept-alive connection is closed after this."
    )
    http_header_timeout_seconds: float = setting(
        10.0,
        POSITIVE_SECONDS,
        "A request's line and headers must arrive within this of its first byte, or the "
        "connection is closed.",
    )
    http_body_timeout_seconds: float = setting(
        30.0,
        POSITIVE_SECONDS,
        "A request body must arrive within this, or the request is answered 408.",
    )
    max_connections: int = setting(
        1000,
        POSITIVE_INT,
        "Most client connections open at once; one more is answered 503 and closed.",
    )
    max_requests_in_flight: int = setting(
        200,
        POSITIVE_INT,
        "Most requests served at once; past it, 503 with Retry-After (health probes and "
        "metrics excepted).",
    )
    admin_token_file: str = setting(
        "",
        PATH,
        "File with the bearer token of the admin API (cache invalidation); empty: no admin API.",
    )
    shutdown_drain_seconds: float = setting(
        5.0,
        SECONDS,
        "After SIGTERM, how long the node keeps serving while /readyz says it is leaving.",
    )
    shutdown_grace_seconds: float = setting(
        30.0,
        POSITIVE_SECONDS,
        "Then, how long requests in flight may take to finish before the node exits.",
    )
    log_level: str = setting("info", LOG_LEVEL, "Logging threshold.")
    # Presence (docs/presence.md)
    presence_slots: int = setting(
        128, POSITIVE_INT, "Presence: how many slots ahead the calendar-state digits cover."
    )
    presence_slot_minutes: int = setting(
        15, POSITIVE_INT, "Presence: the length of one calendar-state slot, in minutes."
    )
    presence_max_streams: int = setting(
        5000, POSITIVE_INT, "Presence: most streams one node holds; past it 503 + Retry-After."
    )
    presence_max_addresses: int = setting(
        100, POSITIVE_INT, "Presence: most addresses one stream or one batch request may name."
    )
    presence_heartbeat_seconds: float = setting(
        15.0, POSITIVE_SECONDS, "Presence: a comment line on an idle stream this often."
    )
    presence_reask_seconds: float = setting(
        30.0,
        POSITIVE_SECONDS,
        "Presence: how often watched mailboxes are read again (one batched ask per requester), "
        "so a stopped backend shows as Unknown.",
    )
    presence_max_unconfirmed_seconds: float = setting(
        0.0,
        SECONDS,
        "Presence: data its source last vouched for longer ago than this shows as Unknown; "
        "0: as long as the cache itself serves it unconfirmed, plus a re-ask and a timeout.",
    )
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def table(self) -> list[tuple[str, Any, str, str]]:
        """(name, value, source, help) per setting, in declaration order."""
        return [
            (o.name, getattr(self, o.name), self.sources.get(o.name, "default"), o.help)
            for o in OPTIONS
        ]


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    kind: Kind
    default: Any
    help: str

    def convert(self, raw: Any) -> Any:
        return self.kind.convert(raw)


OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, f.metadata["kind"], f.default, f.metadata["help"])
    for f in fields(Settings)
    if "kind" in f.metadata
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def unknown_setting(where: str) -> SettingsError:
    return SettingsError(f"{where}: unknown setting (known: {', '.join(OPTIONS_BY_NAME)})")


def _convert(option: Option, raw: Any, where: str) -> Any:
    try:
        return option.convert(raw)
    except ValueError as exc:
        raise SettingsError(
            f"{where}: {exc}; {option.name} takes {option.kind.allowed} "
            f"(default {option.default!r})"
        ) from None


def load_settings(
    file_values: Mapping[str, object] | None = None,
    *,
    file_source: str = "sitemap",
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge defaults, the sitemap's `settings:`, `CAS_*` variables and `--set` overrides."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[Callable[[str], str], Mapping[str, object]]] = []
    for name in file_values or {}:
        if name not in OPTIONS_BY_NAME:
            raise unknown_setting(f"{file_source}: settings.{name}")
    for name in overrides or {}:
        if name not in OPTIONS_BY_NAME:
            raise unknown_setting(f"--set {name}")
    layers.append((lambda name: f"{file_source}: settings.{name}", file_values or {}))
    env = {
        o.name: environ[f"CAS_{o.name.upper()}"]
        for o in OPTIONS
        if f"CAS_{o.name.upper()}" in environ
    }
    layers.append((lambda name: f"CAS_{name.upper()}", env))
    layers.append((lambda name: f"--set {name}", overrides or {}))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for where, layer in layers:
        for name, raw in layer.items():
            values[name] = _convert(OPTIONS_BY_NAME[name], raw, f"{where(name)}={raw}")
            sources[name] = where(name)
    return replace(Settings(), **values, sources=sources)


def format_table(settings: Settings) -> str:
    """The settings as aligned text columns with a header: what `--print-config` prints."""
    rows = [("SETTING", "VALUE", "SOURCE", "HELP")]
    rows += [(n, str(v) if v != "" else "(empty)", s, h) for n, v, s, h in settings.table()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
        for row in rows
    )
