"""What a node reads once at start from its settings: secrets, CA bundles, the site's store.

Each function names the setting in its `ConfigurationError`, so `cas serve` and `cas doctor`
can say exactly what is unusable (a missing secret file, a bad CA bundle, a bad Redis URL).
"""

from __future__ import annotations

import ssl

import httpx

from cas.breaker_board import BreakerBoard, BreakerPolicy
from cas.cache.store import CacheStore, open_store
from cas.errors import ConfigurationError
from cas.observability import Metrics
from cas.settings import Settings
from cas.trust import load_cluster_secret
from sitemap.model import Sitemap


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """How the breakers of backends, old servers and peer nodes behave."""
    return BreakerPolicy(
        failures=settings.breaker_failures,
        open_seconds=settings.breaker_open_seconds,
        max_open_seconds=max(settings.breaker_open_seconds, settings.breaker_max_open_seconds),
        slow_seconds=settings.breaker_slow_seconds,
    )


def site_store(
    settings: Settings,
    sitemap: Sitemap,
    site: str,
    metrics: Metrics,
    board: BreakerBoard | None = None,
) -> CacheStore:
    """The site's Redis, or an in-process store (with a warning) when none is configured.

    Redis's breaker sits on `board` (its transitions logged like every dependency's); it keeps
    its own pace: open after 3 failures, one probe every 5 s.
    """
    config = sitemap.site(site)
    password = config.redis_password.resolve() if config.redis_password is not None else None
    breaker = None
    if board is not None and config.redis:
        subject = f"Redis of site {site}"
        breaker = board.breaker(
            "redis", site, subject, failures=3, open_seconds=5.0, max_open_seconds=5.0
        )
    try:
        return open_store(
            config.redis,
            password=password,
            timeout_seconds=settings.redis_timeout_seconds,
            observer=metrics,
            breaker=breaker,
        )
    except ValueError as exc:
        raise ConfigurationError(f"site {site}: redis: {exc}") from None


def _token(path: str, setting: str) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConfigurationError(f"{setting}: {exc}") from None
    if len(token) < 16:
        raise ConfigurationError(f"{setting}: the token must be at least 16 characters")
    return token


def admin_token(settings: Settings) -> str | None:
    """The admin API's bearer token (`admin_token_file`), or None: no admin API."""
    return _token(settings.admin_token_file, "admin_token_file")


def change_token(settings: Settings) -> str | None:
    """The bearer token backends push changes with (`change_token_file`), or None."""
    return _token(settings.change_token_file, "change_token_file")


def peer_tls_context(settings: Settings) -> ssl.SSLContext:
    """How nodes verify each other: against `peer_ca_file`, else httpx's default CA bundle."""
    if not settings.peer_ca_file:
        return httpx.create_ssl_context(trust_env=False)
    try:
        return ssl.create_default_context(cafile=settings.peer_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"peer_ca_file {settings.peer_ca_file}: {exc}") from None


def peer_client(settings: Settings) -> httpx.AsyncClient:
    """The pooled keep-alive client nodes use to reach each other, verifying the cluster CA."""
    return httpx.AsyncClient(
        verify=peer_tls_context(settings),
        trust_env=False,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
    )


def cluster_secrets(settings: Settings) -> list[bytes]:
    if not settings.cluster_secret_file:
        return []
    try:
        return load_cluster_secret(settings.cluster_secret_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cluster_secret_file: {exc}") from None
