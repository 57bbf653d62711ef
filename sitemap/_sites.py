"""Site-map sections about sites: a site and its nodes, costs, backends and working hours,
and the top-level `dns` section that says where SRV names are resolved.

Each function reads one section through `Fields`, reports what is wrong, and returns the typed
value from `sitemap.model` (or None when a required part is missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sitemap._checks import Fields, Report, no_repeats
from sitemap._values import (
    Invalid,
    as_clock,
    as_ip,
    as_non_negative_int,
    as_port,
    as_positive_int,
    as_positive_number,
    as_redis_url,
    as_site_name,
    as_srv_name,
    as_template,
    as_text,
    as_url,
    as_weekday,
    as_zone,
    describe,
    resolve_path,
)
from sitemap.model import (
    DISCOVERY_MODES,
    CalDavBackendConfig,
    DiscoveryMode,
    DnsConfig,
    LegacyServerConfig,
    SecretRef,
    Site,
    WorkingHoursSpec,
)

SITE_FIELDS = (
    "name", "timezone", "nodes", "srv", "node_scheme", "costs", "working_hours", "caldav",
    "legacy", "redis",
)  # fmt: skip
HOURS_FIELDS = ("days", "start", "end")
CALDAV_FIELDS = (
    "url", "username", "password_env", "password_file", "calendar_path",
    "max_connections", "timeout_seconds", "verify_tls", "discovery", "principal_path",
    "discovery_refresh_seconds",
)  # fmt: skip
LEGACY_FIELDS = ("url", "username", "password_env", "password_file", "timeout_seconds")
REDIS_FIELDS = ("url", "password_env", "password_file")
DNS_FIELDS = ("nameservers", "port", "timeout_seconds")
NODE_SCHEMES = ("https", "http")


def read_working_hours(parent: Fields, key: str) -> WorkingHoursSpec | None:
    fields = parent.sub(key, HOURS_FIELDS)
    if fields is None:
        return None
    before = len(fields.report.problems)
    default = WorkingHoursSpec()
    days = fields.items("days", as_weekday)
    if fields.data.get("days") == []:
        fields.problem("days", "no working days; list at least one")
    no_repeats(fields, "days", days)
    start = fields.get("start", as_clock)
    end = fields.get("end", lambda v: as_clock(v, end=True))
    spec = WorkingHoursSpec(
        days=tuple(day for _, day in days) if "days" in fields.data else default.days,
        start_minute=default.start_minute if start is None else start,
        end_minute=default.end_minute if end is None else end,
    )
    if len(fields.report.problems) == before and spec.start_minute >= spec.end_minute:
        fields.problem("end", "must be later than start")
    return spec


def _caldav(fields: Fields | None, base_dir: Path) -> CalDavBackendConfig | None:
    if fields is None:
        return None
    default = CalDavBackendConfig(url="")
    link = fields.get("url", as_url, required=True)
    username = fields.get("username", as_text)
    password = fields.secret(base_dir, required=False)
    path = fields.get("calendar_path", as_template)
    connections = fields.get("max_connections", as_positive_int)
    timeout = fields.get("timeout_seconds", as_positive_number)
    verify = fields.get("verify_tls", lambda v: _verify_tls(v, base_dir))
    mode = fields.get("discovery", _discovery_mode)
    principal = fields.get("principal_path", as_template)
    refresh = fields.get("discovery_refresh_seconds", as_positive_number)
    _check_discovery_fields(fields, mode or default.discovery)
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
        discovery=_MODES[mode] if mode is not None else default.discovery,
        principal_path=default.principal_path if principal is None else principal,
        discovery_refresh_seconds=(
            default.discovery_refresh_seconds if refresh is None else refresh
        ),
    )


_MODES: dict[str, DiscoveryMode] = {mode: mode for mode in DISCOVERY_MODES}


def _discovery_mode(value: Any) -> str:
    mode = as_text(value)
    if mode not in _MODES:
        raise Invalid(f"expected one of {', '.join(DISCOVERY_MODES)}, got {mode!r}")
    return mode


def _check_discovery_fields(fields: Fields, mode: str) -> None:
    """Each path belongs to one mode: a path the chosen mode never reads is a mistake."""
    if mode != "template" and "calendar_path" in fields.data:
        fields.problem(
            "calendar_path", f"only read with discovery: template (this site has {mode})"
        )
    if mode != "principal" and "principal_path" in fields.data:
        fields.problem(
            "principal_path", f"only read with discovery: principal (this site has {mode})"
        )
    if mode == "template" and "discovery_refresh_seconds" in fields.data:
        fields.problem("discovery_refresh_seconds", "only read with discovery: principal or search")


def _verify_tls(value: Any, base_dir: Path) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return resolve_path(value, base_dir)
    raise Invalid(f"expected true, false or a CA bundle path, got {describe(value)}")


def _legacy(fields: Fields | None, base_dir: Path) -> LegacyServerConfig | None:
    if fields is None:
        return None
    link = fields.get("url", as_url, required=True)
    username = fields.get("username", as_text)
    password = fields.secret(base_dir, required=False)
    timeout = fields.get("timeout_seconds", as_positive_number)
    if link is None:
        return None
    return LegacyServerConfig(
        url=link,
        username=username,
        password=password,
        timeout_seconds=LegacyServerConfig(url="").timeout_seconds if timeout is None else timeout,
    )


def _node_scheme(value: Any) -> str:
    scheme = as_text(value)
    if scheme not in NODE_SCHEMES:
        raise Invalid(f"expected https or http, got {scheme!r}")
    return scheme


def _costs(fields: Fields, own: str | None, site_names: Sequence[str]) -> Mapping[str, int]:
    """`costs: {other-site: n}`; every key a site of this file; the cost to itself only 0."""
    value = fields.data.get("costs")
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        fields.problem("costs", f"expected a mapping of site name to cost, got {describe(value)}")
        return MappingProxyType({})
    costs: dict[str, int] = {}
    for key, raw in value.items():
        name = str(key)
        if name.casefold() == "password":
            continue  # reported once, wherever it is, by the secret scan
        if not isinstance(key, str) or key not in site_names:
            known = ", ".join(site_names) or "none defined"
            fields.problem(f"costs.{name}", f"no site named {name!r} (sites: {known})")
            continue
        try:
            cost = as_non_negative_int(raw)
        except Invalid as exc:
            fields.problem(f"costs.{name}", str(exc))
            continue
        if key == own and cost != 0:
            fields.problem(f"costs.{name}", f"the cost of a site to itself is always 0, got {cost}")
        elif key != own:
            costs[key] = cost
    return MappingProxyType(costs)


def _redis(fields: Fields, raw: Any, base_dir: Path) -> tuple[str | None, SecretRef | None]:
    """`redis: URL` or `redis: {url: URL, password_env|password_file: ...}`."""
    if isinstance(raw, dict):
        sub = fields.sub("redis", REDIS_FIELDS)
        if sub is None:
            return None, None
        return sub.get("url", as_redis_url, required=True), sub.secret(base_dir, required=False)
    return fields.get("redis", as_redis_url), None


def read_site(
    report: Report, entry: str, raw: dict[Any, Any], base_dir: Path, site_names: Sequence[str]
) -> Site | None:
    """One `sites[]` entry; `site_names` are all names written, for checking `costs`."""
    fields = Fields(report, entry, raw, SITE_FIELDS)
    name = fields.get("name", as_site_name, required=True)
    timezone = fields.get("timezone", as_zone)
    nodes = fields.items("nodes", as_url)
    no_repeats(fields, "nodes", nodes)
    srv = fields.get("srv", as_srv_name)
    scheme = fields.get("node_scheme", _node_scheme)
    own = raw.get("name")
    costs = _costs(fields, own if isinstance(own, str) else None, site_names)
    hours = read_working_hours(fields, "working_hours")
    caldav = _caldav(fields.sub("caldav", CALDAV_FIELDS), base_dir)
    legacy = _legacy(fields.sub("legacy", LEGACY_FIELDS), base_dir)
    redis, redis_password = _redis(fields, raw.get("redis"), base_dir)
    if name is None:
        return None
    return Site(
        name=name,
        nodes=tuple(node for _, node in nodes),
        timezone=timezone or "UTC",
        caldav=caldav,
        working_hours=hours or WorkingHoursSpec(),
        srv=srv,
        node_scheme="http" if scheme == "http" else "https",
        costs=costs,
        legacy=legacy,
        redis=redis,
        redis_password=redis_password,
    )


def read_dns(report: Report, top: Fields) -> DnsConfig | None:
    """The top-level `dns` section, or None (the system's resolver) when it is absent."""
    value = top.data.get("dns")
    if value is None:
        return None
    if not isinstance(value, dict):
        top.problem("dns", f"expected a mapping, got {describe(value)}")
        return None
    fields = Fields(report, "dns", value, DNS_FIELDS)
    default = DnsConfig()
    servers = fields.items("nameservers", as_ip)
    if value.get("nameservers") == []:
        fields.problem("nameservers", "empty; list at least one, or leave it out for the system's")
    no_repeats(fields, "nameservers", servers)
    port = fields.get("port", as_port)
    timeout = fields.get("timeout_seconds", as_positive_number)
    return DnsConfig(
        nameservers=tuple(server for _, server in servers),
        port=default.port if port is None else port,
        timeout_seconds=default.timeout_seconds if timeout is None else timeout,
    )
