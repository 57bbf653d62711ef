"""The lab's shape, as one pure description shared by `cas lab` and `compose.yaml`.

`lab_topology(sites, nodes_per_site)` says which parts a lab has and what they are called: the
sites (each with its nodes, its CalDAV server, its Redis and its SRV name), the one legacy
server, the DNS responder and the one-shot jobs. `cas lab` runs these parts as processes on
loopback; `compose.yaml` runs them as containers, one service per part, with the names given
here. `tests/unit/test_topology.py` checks that the compose file has exactly this shape, so the
two labs cannot drift apart. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DOMAIN",
    "JOBS",
    "NODE_PORT",
    "SITE_NAMES",
    "SITE_ZONES",
    "LabNode",
    "LabSite",
    "LabTopology",
    "lab_topology",
]

DOMAIN = "contoso.test"
SITE_NAMES = ("eu", "us", "ap", "sa", "af", "me", "ca", "oc")
SITE_ZONES = {
    "eu": "Europe/Amsterdam", "us": "America/New_York", "ap": "Asia/Tokyo",
    "sa": "America/Sao_Paulo", "af": "Africa/Johannesburg", "me": "Asia/Dubai",
    "ca": "America/Toronto", "oc": "Australia/Sydney",
}  # fmt: skip
NODE_PORT = 8443
"""Port a node listens on inside a container or pod (loopback labs pick free ports)."""
CALDAV_PORT = 5232
REDIS_PORT = 6379
LEGACY_PORT = 8080
DNS_PORT = 5353
SITE_COST = 10
"""Cost between any two lab sites."""
JOBS = ("tls", "seed")
"""One-shot jobs: make the cluster CA, node certificate and secrets; seed the calendars."""


@dataclass(frozen=True, slots=True)
class LabNode:
    """Node `index` (from 1) of `site`."""

    site: str
    index: int

    @property
    def name(self) -> str:
        """The part's name: compose service, log file stem (`cas-eu-1`)."""
        return f"cas-{self.site}-{self.index}"

    @property
    def host(self) -> str:
        """The DNS name the site's SRV record points at (`node-1.eu.contoso.test`)."""
        return f"node-{self.index}.{self.site}.{DOMAIN}"


@dataclass(frozen=True, slots=True)
class LabSite:
    name: str
    timezone: str
    nodes: tuple[LabNode, ...]
    costs: dict[str, int]

    @property
    def srv(self) -> str:
        return f"_cas._tcp.{self.name}.{DOMAIN}"

    @property
    def caldav(self) -> str:
        """The name of the site's CalDAV server (Radicale)."""
        return f"radicale-{self.name}"

    @property
    def redis(self) -> str:
        """The name of the site's Redis."""
        return f"redis-{self.name}"


@dataclass(frozen=True, slots=True)
class LabTopology:
    domain: str
    sites: tuple[LabSite, ...]
    legacy: str = "legacy"
    dns: str = "dns"
    jobs: tuple[str, ...] = JOBS

    @property
    def autodiscover_srv(self) -> str:
        return f"_autodiscover._tcp.{self.domain}"

    @property
    def nodes(self) -> tuple[LabNode, ...]:
        return tuple(node for site in self.sites for node in site.nodes)

    def site(self, name: str) -> LabSite:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)

    def services(self) -> set[str]:
        """Every part's name: what a compose file of this lab must define, no more, no less."""
        names = {self.legacy, self.dns, *self.jobs}
        for site in self.sites:
            names |= {site.caldav, site.redis, *(node.name for node in site.nodes)}
        return names

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form, e.g. for the lab manifest or a comparison in a test."""
        return {
            "domain": self.domain,
            "sites": [
                {
                    "name": site.name,
                    "timezone": site.timezone,
                    "srv": site.srv,
                    "nodes": [{"name": n.name, "host": n.host} for n in site.nodes],
                    "caldav": site.caldav,
                    "redis": site.redis,
                    "costs": dict(site.costs),
                }
                for site in self.sites
            ],
            "legacy": self.legacy,
            "dns": {"name": self.dns, "autodiscover_srv": self.autodiscover_srv},
            "jobs": list(self.jobs),
        }


def lab_topology(sites: int = 3, nodes_per_site: int = 2) -> LabTopology:
    """The lab with the first `sites` of `SITE_NAMES`, each with `nodes_per_site` nodes."""
    if not 1 <= sites <= len(SITE_NAMES):
        raise ValueError(f"sites must be 1..{len(SITE_NAMES)}, got {sites}")
    if nodes_per_site < 1:
        raise ValueError(f"nodes_per_site must be at least 1, got {nodes_per_site}")
    names = SITE_NAMES[:sites]
    return LabTopology(
        domain=DOMAIN,
        sites=tuple(
            LabSite(
                name=name,
                timezone=SITE_ZONES[name],
                nodes=tuple(LabNode(name, i) for i in range(1, nodes_per_site + 1)),
                costs={other: SITE_COST for other in names if other != name},
            )
            for name in names
        ),
    )
