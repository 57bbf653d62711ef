"""Forwarding: answering other sites' mailboxes by asking a node of their site over HTTPS.

Theory of operation
-------------------
For each target site the mailboxes are grouped by the node the replica rule picks first for
each of them (`sitemap.replica`), and each group becomes one EWS `GetUserAvailability` to that
node, all groups and sites in flight at once. A call is retried (tenacity, with jitter) only
for transient trouble: transport errors, HTTP 503 and `ErrorServerBusy` (honouring its
`BackOffMilliseconds`). A node that still fails is marked failed for this request and its
mailboxes move on to *their* next node in replica order, regrouped. Whatever is not answered
when the nodes run out, or when the request's deadline comes, gets
`ErrorProxyRequestProcessingFailed` naming the site and the last problem seen.

Every call carries a signed `X-CAS-Forwarded` token (`cas.trust`) with the requester's identity,
the hop count and the request id, and `X-CAS-Budget-Ms`, the time left, so the peer never
works past what the entry node will wait for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets as secrets_module
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import httpx
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt

from cas.codecs.ews.client import (
    EwsFaultError,
    EwsProtocolError,
    parse_get_user_availability_response,
    render_get_user_availability_request,
)
from cas.errors import MailboxError
from cas.model.availability import AvailabilityRequest, MailboxQuery, MailboxResult
from cas.model.projection import Requester
from cas.observability import Metrics
from cas.trust import ForwardClaims, sign_request
from sitemap.discovery import DiscoveryError, SiteNodes
from sitemap.model import Mailbox
from sitemap.replica import Candidate, choose_node, replica_key

log = logging.getLogger(__name__)

EWS_PATH = "/EWS/Exchange.asmx"
FORWARD_HEADER = "X-CAS-Forwarded"
BUDGET_HEADER = "X-CAS-Budget-Ms"
REQUEST_ID_HEADER = "X-Request-Id"
# Time kept back from each hop for the entry node to assemble and send its answer.
HOP_MARGIN_SECONDS = 0.15
MIN_CALL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ForwardItem:
    """One requested position that another site must answer."""

    position: int
    query: MailboxQuery
    mailbox: Mailbox


class TransientPeerError(Exception):
    """Worth trying the same node again soon (transport error, 503, ErrorServerBusy)."""

    def __init__(self, message: str, back_off: float = 0.0) -> None:
        super().__init__(message)
        self.back_off = back_off


class PeerFailure(Exception):
    """This node cannot answer now (after retries): try the mailboxes' next node."""


class FinalPeerError(Exception):
    """The peer answered, but with a refusal another node of the site would repeat."""


def _is_address(url: str) -> bool:
    host = httpx.URL(url).host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Forwarder:
    def __init__(
        self,
        local_site: str,
        nodes: SiteNodes,
        client: httpx.AsyncClient,
        secrets: Sequence[bytes],
        *,
        metrics: Metrics | None = None,
        attempts: int = 3,
        max_response_bytes: int = 16 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        if not secrets:
            raise ValueError("forwarding needs the cluster secret")
        self.local_site = local_site
        self.nodes = nodes
        self.client = client
        self.secret = secrets[0]
        self.metrics = metrics
        self.attempts = attempts
        self.max_response_bytes = max_response_bytes
        self.rng = rng or random.Random()

    async def forward(
        self,
        items: Sequence[ForwardItem],
        request: AvailabilityRequest,
        requester: Requester,
        *,
        deadline: float,
        hop: int,
        request_id: str,
    ) -> dict[int, MailboxResult]:
        """Answers for `items` by position; every item gets one, within `deadline`."""
        by_site: dict[str, list[ForwardItem]] = {}
        for item in items:
            by_site.setdefault(item.mailbox.site, []).append(item)
        answers: dict[int, MailboxResult] = {}
        outcomes = await asyncio.gather(
            *(
                self._site(site, group, request, requester, deadline, hop, request_id)
                for site, group in by_site.items()
            )
        )
        for outcome in outcomes:
            answers.update(outcome)
        return answers

    async def _site(
        self,
        site: str,
        items: list[ForwardItem],
        request: AvailabilityRequest,
        requester: Requester,
        deadline: float,
        hop: int,
        request_id: str,
    ) -> dict[int, MailboxResult]:
        def failed_all(reason: str) -> dict[int, MailboxResult]:
            self._count_error(site, "ErrorProxyRequestProcessingFailed", len(items))
            error = MailboxError.of(
                "ErrorProxyRequestProcessingFailed", f"Site {site!r}: {reason}", site
            )
            return {item.position: error for item in items}

        try:
            candidates = await self.nodes.nodes(site)
        except DiscoveryError as exc:
            return failed_all(f"no node could be discovered ({exc}).")
        answers: dict[int, MailboxResult] = {}
        failed: set[str] = set()
        pending = list(items)
        last_problem = "it has no nodes."
        while pending:
            if deadline - time.monotonic() < MIN_CALL_SECONDS:
                last_problem = "no node answered within the request's time budget."
                break
            groups = self._group(pending, candidates, failed)
            if not groups:
                break
            if failed:
                self._count("failovers", site)
            names = {c.url: c.name for c in candidates}
            calls = [
                self._call(site, url, names.get(url), group, request, requester, deadline, hop,
                           request_id)
                for url, group in groups.items()
            ]  # fmt: skip
            pending = []
            for (url, group), outcome in zip(groups.items(), await asyncio.gather(*calls)):
                if isinstance(outcome, PeerFailure):
                    failed.add(url)
                    last_problem = f"node {url} failed: {outcome}"
                    log.warning("forwarding to %s failed, failing over: %s", url, outcome)
                    pending.extend(group)
                else:
                    answers.update(outcome)
        if pending or len(answers) < len(items):
            missing = [i for i in items if i.position not in answers]
            rest = failed_all(last_problem)
            answers.update({i.position: rest[i.position] for i in missing})
        return answers

    @staticmethod
    def _group(
        pending: list[ForwardItem], candidates: list[Candidate], failed: set[str]
    ) -> dict[str, list[ForwardItem]]:
        groups: dict[str, list[ForwardItem]] = {}
        for item in pending:
            node = choose_node(replica_key(item.mailbox), candidates, failed=failed)
            if node is not None:
                groups.setdefault(node.url, []).append(item)
        return groups

    async def _call(
        self,
        site: str,
        url: str,
        name: str | None,
        group: list[ForwardItem],
        request: AvailabilityRequest,
        requester: Requester,
        deadline: float,
        hop: int,
        request_id: str,
    ) -> dict[int, MailboxResult] | PeerFailure:
        sub = replace(request, mailboxes=tuple(item.query for item in group))
        body = render_get_user_availability_request(sub)
        started = time.monotonic()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                retry=retry_if_exception_type(TransientPeerError),
                wait=self._wait(deadline),
                reraise=False,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self._count("retries", site)
                    results = await self._post(
                        site, url, name, body, sub, requester, deadline, hop, request_id
                    )
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            return PeerFailure(str(cause))
        except PeerFailure as exc:
            return exc
        except FinalPeerError as exc:
            code = "ErrorProxyRequestProcessingFailed"
            self._count_error(site, code, len(group))
            error = MailboxError.of(code, f"Site {site!r}, node {url}: {exc}", site)
            return {item.position: error for item in group}
        finally:
            self._observe(site, time.monotonic() - started)
        for result in results:
            if isinstance(result, MailboxError):
                self._count_error(site, result.code, 1)
        return {item.position: result for item, result in zip(group, results)}

    def _wait(self, deadline: float):  # type: ignore[no-untyped-def]
        """Jittered exponential back-off, or the peer's BackOffMilliseconds, within the deadline."""

        def wait(retry_state) -> float:  # type: ignore[no-untyped-def]
            error = retry_state.outcome.exception() if retry_state.outcome else None
            base = 0.05 * (2 ** (retry_state.attempt_number - 1))
            pause = base * (0.5 + self.rng.random())
            if isinstance(error, TransientPeerError) and error.back_off:
                pause = max(pause, error.back_off)
            left = deadline - time.monotonic() - HOP_MARGIN_SECONDS - MIN_CALL_SECONDS
            if pause > left:
                raise PeerFailure(f"{error}; no time left to retry")
            return pause

        return wait

    async def _post(
        self,
        site: str,
        url: str,
        name: str | None,
        body: bytes,
        sub: AvailabilityRequest,
        requester: Requester,
        deadline: float,
        hop: int,
        request_id: str,
    ) -> list[MailboxResult]:
        budget = deadline - time.monotonic() - HOP_MARGIN_SECONDS
        if budget < MIN_CALL_SECONDS:
            raise PeerFailure("no time left for this node")
        claims = ForwardClaims(
            from_site=self.local_site,
            to_site=site,
            requester=requester.username,
            hop=hop + 1,
            request_id=request_id,
            issued_at=int(time.time()),
            nonce=secrets_module.token_urlsafe(12),
        )
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            FORWARD_HEADER: sign_request(
                self.secret, claims, method="POST", path=EWS_PATH, body=body
            ),
            BUDGET_HEADER: str(int(budget * 1000)),
            REQUEST_ID_HEADER: request_id,
        }
        target = url.rstrip("/") + EWS_PATH
        # A node found through SRV is dialled at its address but verified by its DNS name.
        extensions = {"sni_hostname": name} if name and _is_address(url) else None
        try:
            # httpx's timeout bounds each read; a peer trickling bytes must not outlast the budget
            async with asyncio.timeout(budget):
                async with self.client.stream(
                    "POST",
                    target,
                    content=body,
                    headers=headers,
                    timeout=budget,
                    extensions=extensions,
                ) as response:
                    payload = await self._read(response, url)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise PeerFailure(f"no answer within {budget:.2f}s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientPeerError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 503:
            raise TransientPeerError("HTTP 503")
        if response.status_code in (401, 403):
            raise FinalPeerError(
                f"the node refused this node's credentials (HTTP {response.status_code}); "
                "check that both sites share the cluster secret"
            )
        try:
            return parse_get_user_availability_response(payload, sub)
        except EwsFaultError as fault:
            if fault.code == "ErrorServerBusy":
                raise TransientPeerError("ErrorServerBusy", fault.back_off_ms / 1000) from fault
            raise FinalPeerError(f"{fault.code}: {fault.message}") from fault
        except EwsProtocolError as exc:
            raise PeerFailure(f"unreadable answer (HTTP {response.status_code}): {exc}") from exc

    async def _read(self, response: httpx.Response, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise PeerFailure(f"answer larger than {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # --- metrics (optional) -------------------------------------------------------------------

    def _count(self, what: str, site: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, f"forward_{what}").labels(site=site).inc()

    def _count_error(self, site: str, code: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.forward_errors.labels(site=site, code=code).inc(n)

    def _observe(self, site: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.forward_latency.labels(site=site).observe(seconds)
