"""One forwarded batch to one node of another site: the signed HTTPS exchange and its outcome.

`post_group(forwarder, site, ask, url, name, body, sub)` sends one EWS `GetUserAvailability`
(already rendered: `body`, for the mailboxes of `sub`) to the node at `url`, signed with the
cluster secret and carrying the budget the node may spend (`Ask.next_hop_budget`: the time
left less the way back), waits for the answer until this node's own deadline, and reads at most
`max_response_bytes`. What went wrong is told by the exception's type, which `SiteCall`
(`cas.sources.peers`) turns into retries, failover and breaker outcomes:

* `TransientPeerError`: worth trying the same node again (transport error, 503, ErrorServerBusy);
* `PeerFailure`: this node cannot answer now (no time, no answer, unreadable answer);
* `FinalPeerError`: a refusal every node of the site would repeat (credentials, a SOAP fault).
"""

from __future__ import annotations

import asyncio
import secrets as secrets_module
import time
from typing import TYPE_CHECKING

import httpx

from cas.codecs.ews.client import (
    EwsFaultError,
    EwsProtocolError,
    parse_get_user_availability_response,
)
from cas.errors import CasError
from cas.model.ask import Ask
from cas.model.availability import AvailabilityRequest, MailboxResult
from cas.sources.signed import is_address
from cas.trust import (
    BUDGET_HEADER,
    EWS_PATH,
    HEADER,
    REQUEST_ID_HEADER,
    ForwardClaims,
    TooManyGroups,
    sign_request,
)

if TYPE_CHECKING:
    from cas.sources.peers import Forwarder

__all__ = [
    "MIN_CALL_SECONDS",
    "FinalPeerError",
    "PeerError",
    "PeerFailure",
    "PeerSkipped",
    "TransientPeerError",
    "post_group",
]

MIN_CALL_SECONDS = 0.05


class PeerError(CasError):
    """Talking to another site's node went wrong (how is told by the subclass)."""


class TransientPeerError(PeerError):
    """Worth trying the same node again soon (transport error, 503, ErrorServerBusy)."""

    def __init__(self, message: str, back_off: float = 0.0) -> None:
        super().__init__(message)
        self.back_off = back_off


class PeerFailure(PeerError):
    """This node cannot answer now (after retries): try the mailboxes' next node."""


class FinalPeerError(PeerError):
    """The peer answered, but with a refusal another node of the site would repeat."""


class PeerSkipped(PeerFailure):
    """The node's breaker is open: it was not asked."""


async def post_group(
    forwarder: Forwarder,
    site: str,
    ask: Ask,
    url: str,
    name: str | None,
    body: bytes,
    sub: AvailabilityRequest,
) -> list[MailboxResult]:
    """The node's answers for `sub` (see the module docstring for what it raises)."""
    left, budget = ask.left(), ask.next_hop_budget()
    if budget < MIN_CALL_SECONDS:
        raise PeerFailure("no time left for this node")
    try:
        claims = ForwardClaims(
            from_site=forwarder.local_site,
            to_site=site,
            requester=ask.requester.username,
            hop=ask.hop + 1,
            request_id=ask.request_id,
            issued_at=int(time.time()),
            nonce=secrets_module.token_urlsafe(12),
            groups=tuple(forwarder.vouch_groups(ask.requester)),
        )
    except TooManyGroups as exc:
        raise FinalPeerError(str(exc)) from exc
    token = sign_request(forwarder.secret, claims, method="POST", path=EWS_PATH, body=body)
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        HEADER: token,
        BUDGET_HEADER: str(int(budget * 1000)),
        REQUEST_ID_HEADER: ask.request_id,
    }
    target = url.rstrip("/") + EWS_PATH
    # A node found through SRV is dialled at its address but verified by its DNS name.
    extensions = {"sni_hostname": name} if name and is_address(url) else None
    try:
        # The peer answers by its budget; its answer is waited for until this node's own
        # deadline, the margin being the way back. httpx's timeout bounds each read, and
        # the whole exchange is bounded too: a peer trickling bytes must not outlast it.
        async with asyncio.timeout(left):
            async with forwarder.client.stream(
                "POST",
                target,
                content=body,
                headers=headers,
                timeout=left,
                extensions=extensions,
            ) as response:
                payload = await _read(response, forwarder.max_response_bytes)
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise PeerFailure(f"no answer within {left:.2f}s ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransientPeerError(f"{type(exc).__name__}: {exc}") from exc
    return _results(response.status_code, payload, sub)


def _results(status: int, payload: bytes, sub: AvailabilityRequest) -> list[MailboxResult]:
    if status == 503:
        raise TransientPeerError("HTTP 503")
    if status in (401, 403):
        raise FinalPeerError(
            f"the node refused this node's credentials (HTTP {status}); "
            "check that both sites share the cluster secret"
        )
    try:
        return list(parse_get_user_availability_response(payload, sub))
    except EwsFaultError as fault:
        if fault.code == "ErrorServerBusy":
            raise TransientPeerError("ErrorServerBusy", fault.back_off_ms / 1000) from fault
        raise FinalPeerError(f"{fault.code}: {fault.message}") from fault
    except EwsProtocolError as exc:
        raise PeerFailure(f"unreadable answer (HTTP {status}): {exc}") from exc


async def _read(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise PeerFailure(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
