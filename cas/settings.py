"""Node settings: each declared once with its type, default and one line of help.

Values come, lowest to highest precedence, from the defaults here, the sitemap's `settings:`
mapping, `CAS_<NAME>` environment variables, and the command line. A wrong value is reported
with where it came from (file and key, or variable name). `cas serve --print-config` prints the
table with each value's source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be positive, got {number}")
    return number


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be positive, got {number}")
    return number


def _non_negative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    number = float(value)
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def _path_or_empty(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a file path (or empty), got {value!r}")
    return value.strip()


def _log_level(value: Any) -> str:
    level = str(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"must be one of debug, info, warning, error; got {value!r}")
    return level


OPTIONS: tuple[Option, ...] = (
    Option("max_mailboxes", _positive_int, 100, "Most mailboxes one request may name."),
    Option("window_max_days", _positive_int, 62, "Longest time window, in whole days."),
    Option("max_body_bytes", _positive_int, 512 * 1024, "Largest request body accepted."),
    Option(
        "request_timeout_seconds",
        _positive_float,
        10.0,
        "Time budget of one request; mailboxes not answered by then get an error.",
    ),
    Option(
        "backend_concurrency",
        _positive_int,
        32,
        "Most backend calls one request runs at once (each backend has its own pool too).",
    ),
    Option(
        "reload_check_seconds",
        _positive_float,
        2.0,
        "How often the sitemap file is checked for changes (SIGHUP reloads at once).",
    ),
    Option(
        "cluster_secret_file",
        _path_or_empty,
        "",
        "File with the cluster secret(s) nodes sign forwarded requests with; empty: no forwarding.",
    ),
    Option(
        "peer_ca_file",
        _path_or_empty,
        "",
        "CA bundle that other nodes' certificates are verified against; empty: the system's.",
    ),
    Option("hop_limit", _positive_int, 1, "How many node-to-node hops a request may take."),
    Option(
        "forward_attempts",
        _positive_int,
        3,
        "Tries per node for transient errors (transport, 503, ErrorServerBusy) before failover.",
    ),
    Option(
        "max_peer_response_bytes",
        _positive_int,
        16 * 1024 * 1024,
        "Largest answer read from another node; a larger one counts as that node failing.",
    ),
    Option(
        "cache_refresh_seconds",
        _positive_float,
        900.0,
        "Cached data younger than this is served without asking the backend (refresh interval).",
    ),
    Option(
        "cache_query_window_seconds",
        _positive_float,
        2.0,
        "How long to wait for a backend before serving stale cached data instead.",
    ),
    Option(
        "cache_max_stale_seconds",
        _positive_float,
        86400.0,
        "Oldest cached data that may still be served (marked stale) when a backend is slow or down.",
    ),
    Option(
        "cache_negative_seconds",
        _positive_float,
        60.0,
        "How long a calendar the backend says does not exist is remembered as missing.",
    ),
    Option(
        "cache_local_seconds",
        _non_negative_float,
        1.0,
        "How long a node keeps its own copy of cached pieces in front of Redis; 0 disables.",
    ),
    Option(
        "remote_cache_seconds",
        _non_negative_float,
        60.0,
        "How long the entry node keeps other sites' answers; 0 disables.",
    ),
    Option(
        "redis_timeout_seconds",
        _positive_float,
        0.25,
        "Bound on every Redis call; past it the cache counts as unavailable.",
    ),
    Option(
        "admin_token_file",
        _path_or_empty,
        "",
        "File with the bearer token of the admin API (cache invalidation); empty: no admin API.",
    ),
    Option(
        "shutdown_drain_seconds",
        _non_negative_float,
        5.0,
        "After SIGTERM, how long the node keeps serving while /readyz says it is leaving.",
    ),
    Option(
        "shutdown_grace_seconds",
        _positive_float,
        30.0,
        "Then, how long requests in flight may take to finish before the node exits.",
    ),
    Option("log_level", _log_level, "info", "Logging threshold."),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


class SettingsError(Exception):
    """A setting has a wrong name or value; the message says where it came from."""


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def table(self) -> list[tuple[str, Any, str, str]]:
        return [
            (o.name, self.values[o.name], self.sources.get(o.name, "default"), o.help)
            for o in OPTIONS
        ]


def load_settings(
    file_values: Mapping[str, object] | None = None,
    *,
    file_source: str = "sitemap",
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge defaults, the sitemap's `settings:`, `CAS_*` variables and explicit overrides."""
    environ = os.environ if environ is None else environ
    values = {o.name: o.default for o in OPTIONS}
    sources: dict[str, str] = {}
    layers: list[tuple[str, Mapping[str, object]]] = []
    if file_values:
        unknown = sorted(set(file_values) - set(OPTIONS_BY_NAME))
        if unknown:
            known = ", ".join(OPTIONS_BY_NAME)
            raise SettingsError(
                f"{file_source}: settings.{unknown[0]}: unknown setting (known: {known})"
            )
        layers.append((f"{file_source}: settings", file_values))
    env_layer = {
        o.name: environ[f"CAS_{o.name.upper()}"]
        for o in OPTIONS
        if f"CAS_{o.name.upper()}" in environ
    }
    layers.append(("environment", env_layer))
    layers.append(("command line", overrides or {}))
    for origin, layer in layers:
        for name, raw in layer.items():
            option = OPTIONS_BY_NAME[name]
            where = f"CAS_{name.upper()}" if origin == "environment" else f"{origin}.{name}"
            try:
                values[name] = option.convert(raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{where}: {exc}") from None
            sources[name] = where
    return Settings(values, sources)
