"""The Autodiscover answer: which node's EWS URL a client should use for an address.

The address is looked up in the directory; the answer names a node **of the mailbox's own site**,
chosen by the replica rule (`sitemap.replica`) among the site's static and DNS-discovered nodes,
so the same mailbox is always sent to the same node while the node set is unchanged. The three
front doors (SOAP, POX, JSON) render the same `Answer` in their own protocol.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlsplit

from cas.codecs.autodiscover import Answer, NotFound, Redirect, ServerFailure, UserSettings
from sitemap.discovery import DiscoveryError, SiteNodes
from sitemap.model import Mailbox, Sitemap
from sitemap.replica import replica_key, replica_order

log = logging.getLogger(__name__)

EWS_PATH = "/EWS/Exchange.asmx"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].casefold()


class AutodiscoverService:
    def __init__(self, sitemap: Sitemap, nodes: SiteNodes) -> None:
        self.sitemap = sitemap
        self.nodes = nodes
        # One id per organisation, stable across nodes and restarts.
        self.deployment_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, ",".join(sitemap.domains) or "cas"))

    def serves_domain(self, address: str) -> bool:
        domains = {d.casefold() for d in self.sitemap.domains}
        return not domains or _domain(address) in domains

    async def answer(self, address: str) -> Answer:
        """The answer for an SMTP address (or alias)."""
        if "@" not in address or not self.serves_domain(address):
            return NotFound(address)
        mailbox = self.sitemap.lookup(address)
        if mailbox is None:
            return NotFound(address)
        if address.casefold() != mailbox.address.casefold() and _domain(address) != _domain(
            mailbox.address
        ):
            # An alias under another domain: the client must start again with the primary
            # address, as Exchange does. The primary never redirects, so this cannot loop.
            return Redirect(mailbox.address)
        return await self._settings(mailbox)

    async def answer_legacy_dn(self, legacy_dn: str) -> Answer:
        mailbox = self.sitemap.directory.by_legacy_dn(legacy_dn)
        if mailbox is None:
            return NotFound(legacy_dn)
        return await self._settings(mailbox)

    async def node_for(self, mailbox: Mailbox) -> str | None:
        """The base URL of the node the replica rule picks first for `mailbox`."""
        candidates = await self.nodes.nodes(mailbox.site)
        first = next(replica_order(replica_key(mailbox), candidates), None)
        return first.url if first is not None else None

    async def _settings(self, mailbox: Mailbox) -> Answer:
        try:
            node = await self.node_for(mailbox)
        except DiscoveryError as exc:
            log.warning("autodiscover for %s: %s", mailbox.address, exc)
            return ServerFailure(f"No node of site {mailbox.site!r} could be discovered.")
        if node is None:
            return ServerFailure(f"Site {mailbox.site!r} has no nodes.")
        return UserSettings(
            address=mailbox.address,
            ews_url=node.rstrip("/") + EWS_PATH,
            display_name=mailbox.display_name,
            legacy_dn=mailbox.legacy_dn,
            deployment_id=self.deployment_id,
            server=urlsplit(node).hostname,
        )
