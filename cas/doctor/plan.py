"""Planning a doctor run: every check a sitemap calls for, and what those checks share.

`Doctor(sitemap, settings)` prepares, before any traffic, what the checks share, built the
way `cas.app` builds it for a node: the peer TLS context and HTTP client (`peer_ca_file`),
the cluster secret (`cluster_secret_file`), one `SrvResolver` for the sitemap's `dns`
section, and an HTTP client per CalDAV backend (`verify_tls`). A setting that points at
something unusable raises `ConfigurationError`, as it stops `cas serve`.

`plan(site)` lists the checks of one site, or of all, in the order they are reported::

    for each site:  each static node (tls, ready, version, trust), the SRV name (dns, then
                    the nodes it gives), caldav, legacy, redis
    then:           the Autodiscover SRV name of each domain (dns), for the whole sitemap,
                    and the directory server (ldap: bind, and each base it reads)

`diagnose(...)` plans, runs everything under one deadline and closes what it opened.
"""

from __future__ import annotations

import ssl

import httpx

from cas.config import cluster_secrets, peer_client, peer_tls_context
from cas.doctor.directory import ldap_check
from cas.doctor.names import autodiscover_check, srv_check
from cas.doctor.nodes import NodeProbes, NodeTarget
from cas.doctor.run import Check, CheckResult, Outcome, failed, run_checks
from cas.doctor.services import backend_client, caldav_check, legacy_check, redis_check
from cas.errors import ConfigurationError
from cas.settings import Settings
from sitemap.discovery import SiteNodes, SrvResolver
from sitemap.model import Site, Sitemap

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "Doctor", "diagnose"]

DEFAULT_TIMEOUT_SECONDS = 10.0


def _no_secret() -> Check:
    async def probe() -> Outcome:
        return failed(
            "not set: nodes cannot sign forwarded requests, so mailboxes of other sites "
            "cannot be answered"
        )

    return Check(None, "trust", "cluster_secret_file", probe)


class Doctor:
    """The checks of one sitemap and the clients they share; `aclose()` when done."""

    def __init__(self, sitemap: Sitemap, settings: Settings) -> None:
        self.sitemap = sitemap
        self.settings = settings
        secrets = cluster_secrets(settings)
        self.secret = secrets[0] if secrets else None
        tls = peer_tls_context(settings)
        any_name = peer_tls_context(settings)
        any_name.check_hostname = False
        self.backends = {  # first: the one step here that may still fail
            site.name: self._backend_client(site) for site in sitemap.sites if site.caldav
        }
        self.peer = peer_client(settings)
        self.peer.timeout = httpx.Timeout(None)  # the run's one deadline bounds every call
        self.plain = httpx.AsyncClient(trust_env=False, timeout=None)
        self.resolver = SrvResolver(sitemap.dns)
        self.site_nodes = SiteNodes(sitemap, self.resolver)
        self.nodes = NodeProbes(
            self.peer,
            tls,
            any_name,
            ca_file=settings.peer_ca_file or None,
            secret=self.secret,
            sitemap_sites=tuple(site.name for site in sitemap.sites),
        )

    @staticmethod
    def _backend_client(site: Site) -> httpx.AsyncClient:
        assert site.caldav is not None
        try:
            return backend_client(site.caldav)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"site {site.name}: caldav.verify_tls {site.caldav.verify_tls}: {exc}"
            ) from None

    def site_checks(self, site: Site) -> list[Check]:
        checks: list[Check] = []
        for url in site.nodes:
            checks += self.nodes.checks(NodeTarget(site.name, url))
        if site.srv is not None:
            checks.append(srv_check(site, self.resolver, self.site_nodes, self.nodes.checks))
        if site.caldav is not None:
            checks.append(caldav_check(site, self.sitemap.mailboxes, self.backends[site.name]))
        if site.legacy is not None:
            checks.append(legacy_check(site, self.sitemap.mailboxes, self.plain))
        if site.redis is not None:
            checks.append(redis_check(site, self.settings.redis_timeout_seconds))
        return checks

    def plan(self, site: str | None = None) -> list[Check]:
        """The checks of `site` (KeyError if unknown), or of the whole sitemap."""
        sites = (self.sitemap.site(site),) if site is not None else self.sitemap.sites
        checks = [check for one in sites for check in self.site_checks(one)]
        if self.secret is None and len(self.sitemap.sites) > 1:
            checks.append(_no_secret())
        if site is None and self.sitemap.dns is not None:
            checks += [autodiscover_check(d, self.resolver) for d in self.sitemap.domains]
        if site is None and self.sitemap.ldap is not None:
            checks.append(ldap_check(self.sitemap))
        return checks

    async def aclose(self) -> None:
        for client in (self.peer, self.plain, *self.backends.values()):
            await client.aclose()


async def diagnose(
    sitemap: Sitemap,
    settings: Settings,
    *,
    site: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[CheckResult]:
    """Check everything `sitemap` names (or only `site`) within `timeout` seconds in all."""
    doctor = Doctor(sitemap, settings)
    try:
        return await run_checks(doctor.plan(site), timeout)
    finally:
        await doctor.aclose()
