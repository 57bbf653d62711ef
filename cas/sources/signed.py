"""Small signed calls to another site: a JSON document to a node of that site, failing over.

The node-to-node channel already carries forwarded lookups (`cas.sources.peers`); the same
trust (a signed `X-CAS-Forwarded` token over the method, path and body, `cas.trust`) carries
the cluster's housekeeping: asking a site for the current versions of its mailboxes, and
telling it that mailboxes changed. `SiteCaller.post(site, path, document)` tries the site's
nodes in replica order for `key` until one answers 200 with JSON, within `timeout`; what it
cannot do raises `SiteUnreachable` naming the site and the last problem. No URL from an answer
is ever followed: targets come only from the sitemap and DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import httpx

from cas.errors import CasError
from cas.trust import HEADER, REQUEST_ID_HEADER, ForwardClaims, sign_request
from sitemap.discovery import DiscoveryError, SiteNodes
from sitemap.replica import replica_order

MAX_ANSWER_BYTES = 1024 * 1024


class SiteUnreachable(CasError):
    """No node of a site answered a signed call; the message names the site and why."""


class SiteCaller:
    def __init__(
        self, local_site: str, nodes: SiteNodes, client: httpx.AsyncClient, secret: bytes
    ) -> None:
        self.local_site = local_site
        self.nodes = nodes
        self.client = client
        self.secret = secret

    async def post(
        self,
        site: str,
        path: str,
        document: Mapping[str, Any],
        *,
        timeout: float,
        key: str = "",
        request_id: str = "-",
    ) -> dict[str, Any]:
        """The JSON answer of the first node of `site` (in replica order for `key`) that gives
        one; `SiteUnreachable` when none does within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        body = json.dumps(document, separators=(",", ":")).encode()
        try:
            candidates = await self.nodes.nodes(site)
        except DiscoveryError as exc:
            raise SiteUnreachable(f"site {site!r}: no node could be discovered ({exc})") from None
        problem = "it has no nodes"
        for node in replica_order(key, candidates):
            left = deadline - time.monotonic()
            if left <= 0:
                problem = f"no answer within {timeout:g}s"
                break
            try:
                async with asyncio.timeout(left):
                    return await self._call(node.url, node.name, site, path, body, request_id)
            except (httpx.HTTPError, TimeoutError, ValueError) as exc:
                problem = f"node {node.url}: {type(exc).__name__}: {exc}"
        raise SiteUnreachable(f"site {site!r}: {problem}")

    async def _call(
        self, url: str, name: str | None, site: str, path: str, body: bytes, request_id: str
    ) -> dict[str, Any]:
        claims = ForwardClaims(
            from_site=self.local_site,
            to_site=site,
            requester=None,
            hop=1,
            request_id=request_id,
            issued_at=int(time.time()),
            nonce=secrets.token_urlsafe(12),
        )
        headers = {
            "Content-Type": "application/json",
            HEADER: sign_request(self.secret, claims, method="POST", path=path, body=body),
            REQUEST_ID_HEADER: request_id,
        }
        extensions = {"sni_hostname": name} if name and is_address(url) else None
        response = await self.client.post(
            url.rstrip("/") + path, content=body, headers=headers, extensions=extensions
        )
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
        if len(response.content) > MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
        answer = json.loads(response.content)
        if not isinstance(answer, dict):
            raise ValueError("answer is not a JSON object")
        return answer


def is_address(url: str) -> bool:
    """Whether a node URL names an IP address (then its certificate is checked by name)."""
    host = httpx.URL(url).host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
