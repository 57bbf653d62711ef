"""Doctor checks of DNS names: a site's SRV name (and the nodes it gives), Autodiscover's.

Resolution goes through `sitemap.discovery` exactly as a node does: the `SrvResolver` built
from the sitemap's `dns` section (the system's resolver without one), and `SiteNodes` to turn
the answer into the site's nodes. A site's SRV check reports the records it got and hands
back the checks of every node they name, which then run under the same deadline.

`_autodiscover._tcp.<domain>` is checked for each domain when the sitemap has a `dns`
section, i.e. when it says which name servers clients are expected to ask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cas.doctor.nodes import NodeTarget
from cas.doctor.run import Check, Outcome, failed, passed
from sitemap.discovery import DiscoveryError, NodeAddress, SiteNodes, SrvResolver
from sitemap.model import Site

__all__ = ["autodiscover_check", "describe_records", "srv_check"]

NodeChecks = Callable[[NodeTarget], Sequence[Check]]


def describe_records(found: Sequence[NodeAddress]) -> str:
    """The records, in a stable order: "2 records: a.contoso.test:8443 → 10.0.0.1; ..."."""
    records: dict[tuple[int, str, int, int], list[str]] = {}
    for node in found:
        key = (node.priority, node.target, node.port, node.weight)
        records.setdefault(key, []).append(node.address or "no address record")
    lines = [
        f"{target}:{port} → {', '.join(addresses)}"
        + (f" (priority {priority}, weight {weight})" if priority or weight else "")
        for (priority, target, port, weight), addresses in sorted(records.items())
    ]
    count = f"{len(records)} record{'s' if len(records) != 1 else ''}"
    return f"{count}: {'; '.join(lines)}"


def srv_check(
    site: Site, resolver: SrvResolver, site_nodes: SiteNodes, node_checks: NodeChecks
) -> Check:
    """Resolve the site's SRV name; its nodes' checks follow."""
    assert site.srv is not None
    name = site.srv

    async def probe() -> Outcome:
        try:
            found = await resolver.resolve(name, scheme=site.node_scheme)
            candidates = await site_nodes.nodes(site)
        except DiscoveryError as exc:
            return failed(exc.reason)
        if not found:
            return failed("no node: every record's target is '.' (service not offered)")
        found_nodes = sorted(  # the static nodes are checked on their own; a stable order
            (c.name, c.url) for c in candidates if c.name is not None
        )
        follow_ups = [
            check
            for name, url in found_nodes
            for check in node_checks(NodeTarget(site.name, url, name))
        ]
        return passed(describe_records(found), follow_ups)

    return Check(site.name, "dns", name, probe)


def autodiscover_check(domain: str, resolver: SrvResolver) -> Check:
    """Resolve `_autodiscover._tcp.<domain>`, where clients look for Autodiscover."""
    name = f"_autodiscover._tcp.{domain}"

    async def probe() -> Outcome:
        try:
            found = await resolver.resolve(name)
        except DiscoveryError as exc:
            return failed(exc.reason)
        if not found:
            return failed("no target: every record's target is '.' (service not offered)")
        return passed(describe_records(found))

    return Check(None, "dns", name, probe)
