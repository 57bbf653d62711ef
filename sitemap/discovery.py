"""Node discovery: a site's nodes from DNS SRV records (RFC 2782), as a headless Service gives.

`SrvResolver.resolve(name)` asks dnspython's async resolver for the SRV records of `name` and the
A/AAAA records of their targets, and returns one `NodeAddress` per reachable address in RFC 2782
order. Answers are kept for their smallest TTL; when a refresh fails (timeout, SERVFAIL,
NXDOMAIN, ...) the last good answer is returned and a warning is logged, and only with no good
answer yet does `resolve` raise `DiscoveryError`. `SiteNodes` joins a site's static URLs and its
SRV answer into replica-rule `Candidate`s with costs seen from the local site.

dnspython's exceptions are translated into `DiscoveryError` in one place, `_dns_errors`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from sitemap.model import DnsConfig, Site, Sitemap
from sitemap.replica import Candidate

__all__ = [
    "DiscoveryError", "NodeAddress", "SiteNodes", "SrvResolver", "make_resolver", "srv_order",
]  # fmt: skip

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
"""After a failed refresh, how long the last good answer is served before DNS is asked again."""


class DiscoveryError(Exception):
    """A DNS name could not be resolved and there is no earlier good answer to fall back on."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """One node found through SRV: its URL, the SRV fields, and the TTL of the answer.

    `target` is the SRV target host name (no trailing dot); `address` is the IP the URL uses,
    or None when the target had no A/AAAA record and the URL names the target itself.
    """

    url: str
    priority: int
    weight: int
    port: int
    target: str
    ttl: int
    address: str | None = None


@dataclass(frozen=True, slots=True)
class _SrvTarget:
    priority: int
    weight: int
    port: int
    target: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Answer:
    records: tuple[_SrvTarget, ...]
    ttl: int  # the smallest TTL of the SRV and address record sets


class _Weighted(Protocol):
    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...


W = TypeVar("W", bound=_Weighted)


def srv_order(records: Sequence[W], rng: random.Random) -> list[W]:
    """`records` in the order RFC 2782 says to try them.

    Lowest priority first. Within one priority, repeatedly: put the records not yet chosen with
    weight 0 first (the rest in a random order), draw a whole number r uniformly from
    0..(sum of their weights), and choose the first record whose running sum of weights is
    >= r. A weight-0 record is thus chosen early only when r is 0 (rarely, if others weigh
    more), and when all weigh 0 the order is random.
    """
    ordered: list[W] = []
    for priority in sorted({r.priority for r in records}):
        pending = [r for r in records if r.priority == priority]
        rng.shuffle(pending)
        pending.sort(key=lambda r: r.weight != 0)  # stable: weight 0 first, else shuffled
        while pending:
            draw = rng.randint(0, sum(r.weight for r in pending))
            running = 0
            for index, record in enumerate(pending):
                running += record.weight
                if running >= draw:
                    ordered.append(pending.pop(index))
                    break
    return ordered


def make_resolver(config: DnsConfig | None) -> dns.asyncresolver.Resolver:
    """A dnspython resolver for `config`: its name servers, or the system's when none are given."""
    if config is None or not config.nameservers:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise DiscoveryError("(resolver)", f"no system DNS configuration: {exc}") from None
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(config.nameservers)
    if config is not None:
        resolver.port = config.port
        resolver.timeout = resolver.lifetime = config.timeout_seconds
    return resolver


@contextmanager
def _dns_errors(name: str, timeout: float) -> Iterator[None]:
    """Translate dnspython's failures for `name` into `DiscoveryError`."""
    try:
        yield
    except dns.resolver.NXDOMAIN:
        raise DiscoveryError(name, "no such name (NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        raise DiscoveryError(name, "the name has no SRV records") from None
    except dns.resolver.NoNameservers as exc:
        raise DiscoveryError(name, f"the name servers failed (SERVFAIL, refused): {exc}") from None
    except dns.exception.Timeout:
        raise DiscoveryError(name, f"no answer within {timeout:g} s") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(name, f"DNS error: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(name, f"network error: {exc}") from None


@dataclass(slots=True)
class _Entry:
    answer: _Answer
    refresh_at: float


class SrvResolver:
    """Resolves SRV names to nodes, caching each answer for its TTL and keeping the last good one.

    `rng` orders records of equal priority (inject a seeded `random.Random` in tests); `clock`
    gives seconds for the TTLs (monotonic by default); `resolver` replaces the dnspython
    resolver built from `config` (None: the system's configuration).
    """

    def __init__(
        self,
        config: DnsConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self._config, self._resolver = config, resolver
        self._rng = rng or random.Random()
        self._clock, self._retry_seconds = clock, retry_seconds
        self._cache: dict[dns.name.Name, _Entry] = {}
        self._locks: dict[dns.name.Name, asyncio.Lock] = {}

    async def resolve(self, name: str, *, scheme: str = "https") -> list[NodeAddress]:
        """The nodes `name` gives now, in RFC 2782 order, URLs as `scheme://ip:port`.

        Raises `DiscoveryError` when DNS fails and there is no earlier good answer."""
        with _dns_errors(name, self._timeout()):
            key = dns.name.from_text(name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._cache.get(key)
            if entry is None or self._clock() >= entry.refresh_at:
                entry = await self._refresh(name, key, entry)
        return self._expand(entry.answer, scheme)

    async def _refresh(self, name: str, key: dns.name.Name, old: _Entry | None) -> _Entry:
        try:
            answer = await self._lookup(name)
        except DiscoveryError as exc:
            if old is None:
                raise
            log.warning(
                "DNS SRV %s: refresh failed (%s); keeping the last good answer (%d records)",
                name,
                exc.reason,
                len(old.answer.records),
            )
            entry = _Entry(old.answer, self._clock() + self._retry_seconds)
        else:
            entry = _Entry(answer, self._clock() + answer.ttl)
        self._cache[key] = entry
        return entry

    def _timeout(self) -> float:
        return self._config.timeout_seconds if self._config else DnsConfig().timeout_seconds

    async def _lookup(self, name: str) -> _Answer:
        if self._resolver is None:
            self._resolver = make_resolver(self._config)
        with _dns_errors(name, self._timeout()):
            answer = await self._resolver.resolve(name, dns.rdatatype.SRV)
        assert answer.rrset is not None  # NoAnswer is raised otherwise
        ttls = [answer.rrset.ttl]
        srvs = [r for r in answer.rrset if r.target != dns.name.root]  # "." : no service here
        targets = sorted({r.target for r in srvs})
        try:
            found = await asyncio.gather(*(self._addresses(t) for t in targets))
        except DiscoveryError as exc:
            raise DiscoveryError(name, f"target {exc.name}: {exc.reason}") from None
        addresses: dict[dns.name.Name, tuple[str, ...]] = {}
        for target, (ips, ip_ttls) in zip(targets, found, strict=True):
            addresses[target] = ips
            ttls += ip_ttls
        records = [
            _SrvTarget(r.priority, r.weight, r.port, _host(r.target), addresses[r.target])
            for r in srvs
        ]
        records.sort(key=lambda r: (r.priority, r.target, r.port, r.weight))
        return _Answer(tuple(records), min(ttls))

    async def _addresses(self, target: dns.name.Name) -> tuple[tuple[str, ...], list[int]]:
        """IPv4 then IPv6 addresses of `target` (each sorted), and the TTLs of their sets."""
        assert self._resolver is not None
        ips: list[str] = []
        ttls: list[int] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            with _dns_errors(_host(target), self._timeout()):
                try:
                    answer = await self._resolver.resolve(target, rdtype, raise_on_no_answer=False)
                except dns.resolver.NXDOMAIN:
                    break  # the target has no address of any kind
            if answer.rrset is not None:
                ttls.append(answer.rrset.ttl)
                ips += sorted((r.address for r in answer.rrset), key=ipaddress.ip_address)
        return tuple(ips), ttls

    def _expand(self, answer: _Answer, scheme: str) -> list[NodeAddress]:
        nodes: list[NodeAddress] = []
        for record in srv_order(answer.records, self._rng):
            hosts: Sequence[str | None] = record.addresses or (None,)
            for ip in hosts:
                shown = record.target if ip is None else f"[{ip}]" if ":" in ip else ip
                nodes.append(
                    NodeAddress(
                        url=f"{scheme}://{shown}:{record.port}",
                        priority=record.priority,
                        weight=record.weight,
                        port=record.port,
                        target=record.target,
                        ttl=answer.ttl,
                        address=ip,
                    )
                )
        return nodes


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


class SiteNodes:
    """The replica-rule candidates of a site: its static URLs and what its SRV name gives now.

    Costs are seen from `local_site` (`Site.cost_to`; all 0 when None). An SRV record's priority
    is added to its cost, so lower priorities form the first group of the replica rule, as
    RFC 2782 wants; static nodes count as priority 0.
    """

    def __init__(
        self, sitemap: Sitemap, resolver: SrvResolver, *, local_site: str | None = None
    ) -> None:
        self._sitemap, self._resolver = sitemap, resolver
        self._local = sitemap.site(local_site) if local_site is not None else None

    @property
    def resolver(self) -> SrvResolver:
        return self._resolver

    async def nodes(self, site: str | Site) -> list[Candidate]:
        """Static nodes first, then SRV nodes in RFC 2782 order; duplicates are kept for the
        replica rule to merge. When DNS fails with no last good answer, the static nodes alone
        are returned (with a warning), or `DiscoveryError` raised if there are none."""
        target = self._sitemap.site(site) if isinstance(site, str) else site
        base = self._local.cost_to(target.name) if self._local is not None else 0
        candidates = [Candidate(url, base) for url in target.nodes]
        if target.srv is None:
            return candidates
        try:
            found = await self._resolver.resolve(target.srv, scheme=target.node_scheme)
        except DiscoveryError as exc:
            if not candidates:
                raise
            log.warning("site %s: %s; using its static nodes only", target.name, exc)
            return candidates
        return candidates + [
            Candidate(node.url, base + node.priority, name=node.target or None) for node in found
        ]
