"""Building one configuration generation of a node from a sitemap: sources, caches, services.

`runtime_builder(...)` returns the function `RuntimeHolder` calls at start and on every
reload. It assembles, for the node's site:

* the site's own sources from the table of built-in kinds (`cas.sources.registry`), or the
  readers a test injects, each behind its breaker (`GuardedSource`, with the breaker from the
  node's `BreakerBoard`, which outlives reloads) and wrapped in the cache with day pieces;
* one source per other site (`PeerSite`, through the `Forwarder`, whose nodes have their own
  breakers on the board) when the node has the cluster secret, each wrapped in the cache
  with exact answers per requester (unless `remote_cache_seconds` is 0);
* the availability service over them, with the permission policy of the site map
  (`cas.model.permissions`), Autodiscover, and the authenticator.

The site's own sources (connection pools) are carried over while the site's backend
configuration is unchanged, and so is the DNS resolver (with its cache) while the `dns`
section is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from cas.autodiscover import AutodiscoverService
from cas.breaker_board import BreakerBoard
from cas.cache.cached import CachedSource, CachePolicy
from cas.cache.keys import DayPieces, ExactAnswers
from cas.cache.store import CacheStore
from cas.changes import ChangeFeed
from cas.identity import build_authenticator
from cas.model.permissions import PermissionPolicy
from cas.observability import Metrics
from cas.routing import local_target, site_target
from cas.runtime import Runtime
from cas.service import AvailabilityService
from cas.settings import Settings
from cas.sources.base import MailboxReader, ReaderSource, Source, source_label
from cas.sources.gate import Gate
from cas.sources.guarded import GuardedSource
from cas.sources.peers import Forwarder, PeerSite
from cas.sources.registry import local_sources
from cas.sources.signed import SiteCaller
from sitemap.discovery import SiteNodes, SrvResolver
from sitemap.ldapdir import LdapDirectory
from sitemap.model import Site, Sitemap


def local_rules(settings: Settings, kind: str = "modern") -> CachePolicy:
    """The Calendar Connector's rules for the site's own sources: confirmed by change tag every
    `cache_validate_seconds`; an old server (no change tag) read every
    `oldserver_refresh_seconds`."""
    refresh = settings.cache_refresh_seconds
    if kind == "legacy":
        refresh = min(refresh, settings.oldserver_refresh_seconds)
    return CachePolicy(
        refresh_seconds=refresh,
        validate_seconds=settings.cache_validate_seconds,
        query_window_seconds=settings.cache_query_window_seconds,
        max_stale_seconds=settings.cache_max_stale_seconds,
        negative_ttl_seconds=settings.cache_negative_seconds,
        fetch_timeout_seconds=settings.request_timeout_seconds,
        local_seconds=settings.cache_local_seconds,
    )


def remote_rules(settings: Settings) -> CachePolicy:
    """Copies of other sites' answers: kept `remote_cache_seconds`, confirmed against the
    owner's version every `cache_validate_seconds`, never served stale, read by each node on
    its own (the other site has its own single flight)."""
    return CachePolicy(
        refresh_seconds=settings.remote_cache_seconds,
        validate_seconds=settings.cache_validate_seconds,
        query_window_seconds=settings.cache_query_window_seconds,
        max_stale_seconds=0.0,
        fetch_timeout_seconds=settings.request_timeout_seconds,
        local_seconds=0.0,
        shared_flight=False,
    )


def start_directory(sitemap: Sitemap) -> None:
    """Read an LDAP directory before the node serves from it (or from its cache file), and keep
    refreshing it; `DirectoryUnavailable` (a ValueError: a reload keeps the running one)."""
    if isinstance(sitemap.directory, LdapDirectory):
        sitemap.directory.load()
        sitemap.directory.start()


def stop_directory(sitemap: Sitemap, keep: Sitemap | None = None) -> None:
    """Stop refreshing `sitemap`'s LDAP directory, unless `keep` uses the same one. Requests
    still holding the old generation keep its last content."""
    directory = sitemap.directory
    if isinstance(directory, LdapDirectory) and (keep is None or keep.directory is not directory):
        directory.stop()


def _same_backends(old: Site, new: Site) -> bool:
    return (old.caldav, old.legacy) == (new.caldav, new.legacy)


def runtime_builder(
    settings: Settings,
    site: str,
    injected: Mapping[str, MailboxReader] | None,
    *,
    secrets: list[bytes],
    client: httpx.AsyncClient,
    metrics: Metrics,
    store: CacheStore,
    board: BreakerBoard,
    cache_injected: bool = False,
) -> Callable[[Sitemap, Runtime | None], Runtime]:
    """A function that builds one configuration generation from a sitemap (see above)."""

    def guarded(source: Source) -> Source:
        subject = f"{source_label(source.name)} of site {site}"
        breaker = board.breaker(source.name, site, subject)
        return GuardedSource(source, breaker, slow_seconds=settings.breaker_slow_seconds)

    def cached(kind: str, source: Source) -> Source:
        keys = DayPieces(site)
        inner = guarded(watched(source))
        return CachedSource(inner, store, keys, local_rules(settings, kind), metrics=metrics)

    def watched(source: Source) -> Source:
        """The source, with the calls at its backend shown in metrics (its `Gate`)."""
        gate = getattr(source, "gate", None)
        if isinstance(gate, Gate):
            metrics.watch_gate(gate)
        return source

    def local(sitemap: Sitemap, previous: Runtime | None) -> dict[str, Source]:
        config = sitemap.site(site)
        if injected is not None:
            made: dict[str, Source] = {
                kind: watched(
                    ReaderSource(
                        reader, name=kind, site=site, concurrency=settings.backend_concurrency
                    )
                )
                for kind, reader in injected.items()
            }
            if cache_injected:
                return {kind: cached(kind, s) for kind, s in made.items()}
            return {kind: guarded(s) for kind, s in made.items()}
        if previous is not None and _same_backends(previous.sitemap.site(site), config):
            return previous.local
        return {kind: cached(kind, s) for kind, s in local_sources(config, settings).items()}

    def remote(
        sitemap: Sitemap,
        resolver: SrvResolver,
        caller: SiteCaller | None,
        permissions: PermissionPolicy,
    ) -> dict[str, Source]:
        if not secrets:
            return {}
        forwarder = Forwarder(
            site,
            SiteNodes(sitemap, resolver, local_site=site),
            client,
            secrets,
            metrics=metrics,
            breakers=board,
            attempts=settings.forward_attempts,
            max_response_bytes=settings.max_peer_response_bytes,
            vouch_groups=permissions.relevant_groups,
        )
        found: dict[str, Source] = {}
        for other in sitemap.sites:
            if other.name == site:
                continue
            source: Source = PeerSite(other.name, forwarder, caller)
            if settings.remote_cache_seconds > 0:
                keys = ExactAnswers(site)
                source = CachedSource(source, store, keys, remote_rules(settings), metrics=metrics)
            found[other.name] = source
        return found

    def build(sitemap: Sitemap, previous: Runtime | None) -> Runtime:
        start_directory(sitemap)
        if previous is not None and previous.sitemap.dns == sitemap.dns:
            resolver = previous.autodiscover.nodes.resolver
        else:
            resolver = SrvResolver(sitemap.dns)
        caller = None
        if secrets:
            caller = SiteCaller(
                site, SiteNodes(sitemap, resolver, local_site=site), client, secrets[0]
            )
        permissions = PermissionPolicy(sitemap.permissions)
        mine = local(sitemap, previous)
        others = remote(sitemap, resolver, caller, permissions)
        sources = {local_target(kind): s for kind, s in mine.items()}
        sources.update({site_target(name): s for name, s in others.items()})
        if previous is not None:
            stop_directory(previous.sitemap, keep=sitemap)
        service = AvailabilityService(
            sitemap,
            site,
            sources,
            timeout_seconds=settings.request_timeout_seconds,
            hop_limit=settings.hop_limit,
            metrics=metrics,
            permissions=permissions,
        )
        feed = ChangeFeed(site, list(others), service.forget, caller)
        for source in mine.values():
            if isinstance(source, CachedSource):
                source.on_change = feed.announce  # a change found by validation is told too
        return Runtime(
            sitemap=sitemap,
            authenticator=build_authenticator(
                sitemap, previous.authenticator if previous else None
            ),
            availability=service,
            changes=feed,
            autodiscover=AutodiscoverService(
                sitemap, SiteNodes(sitemap, resolver, local_site=site)
            ),
            local=mine,
            remote=others,
        )

    return build
