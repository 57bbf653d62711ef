"""Other sites as sources: their mailboxes answered by a node of their site, over HTTPS.

Theory of operation
-------------------
`PeerSite(site, forwarder)` is the source for one other site. Its batch is one `SiteCall`: the
mailboxes are grouped by the node the replica rule picks first for each (`sitemap.replica`),
and each group becomes one EWS `GetUserAvailability` to that node, all groups in flight at
once. A call is retried (tenacity, with jitter) only for transient trouble: transport errors,
HTTP 503 and `ErrorServerBusy` (honouring its `BackOffMilliseconds`). A node that still fails
is marked failed for this call and its mailboxes move on to *their* next node in replica
order, regrouped. Whatever is not answered when the nodes run out, or when the deadline comes,
gets `ErrorProxyRequestProcessingFailed` naming the site and the last problem seen: every
mailbox of the batch gets exactly one answer.

Each node has a circuit breaker (on the node's `BreakerBoard`): a node that failed
`breaker_failures` calls in a row is skipped, its mailboxes going straight to their next node,
until one probe finds it back; a site whose every node is open fails at once.

Every call carries a signed `X-CAS-Forwarded` token (`cas.trust`) with the requester's identity
(the name, and the groups `vouch_groups` picks: those the permissions name), the hop count and
the request id, and `X-CAS-Budget-Ms`: the time left less a margin for the way back
(`Ask.next_hop_budget`), so that the peer's answer, partial if its own sources are late, is
sent before this node's deadline, and this node waits for it until that deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
)

from cas.breaker import CircuitBreaker
from cas.breaker_board import BreakerBoard
from cas.codecs.ews.client import (
    render_get_user_availability_request,
)
from cas.errors import MailboxError
from cas.model.ask import Ask
from cas.model.availability import MailboxQuery
from cas.model.projection import Requester
from cas.observability import Metrics
from cas.sources.base import Answers, key_of
from cas.sources.peer_post import (
    MIN_CALL_SECONDS,
    FinalPeerError,
    PeerFailure,
    PeerSkipped,
    TransientPeerError,
    post_group,
)
from cas.sources.signed import SiteCaller, SiteUnreachable
from sitemap.discovery import DiscoveryError, SiteNodes
from sitemap.model import Mailbox
from sitemap.replica import Candidate, choose_node, replica_key

log = logging.getLogger(__name__)

PROXY_FAILED = "ErrorProxyRequestProcessingFailed"


class Forwarder:
    """What every call to another site shares: this site, the nodes, the client, the secret."""

    def __init__(
        self,
        local_site: str,
        nodes: SiteNodes,
        client: httpx.AsyncClient,
        secrets: Sequence[bytes],
        *,
        metrics: Metrics | None = None,
        breakers: BreakerBoard | None = None,
        attempts: int = 3,
        max_response_bytes: int = 16 * 1024 * 1024,
        rng: random.Random | None = None,
        vouch_groups: Callable[[Requester], frozenset[str]] | None = None,
    ) -> None:
        if not secrets:
            raise ValueError("forwarding needs the cluster secret")
        self.local_site = local_site
        self.nodes = nodes
        self.client = client
        self.secret = secrets[0]
        self.metrics = metrics
        self.breakers = breakers
        self.attempts = attempts
        self.max_response_bytes = max_response_bytes
        self.rng = rng or random.Random()
        # which of a requester's groups a token carries (default: all; see `cas.trust`)
        self.vouch_groups = vouch_groups or (lambda requester: requester.groups)

    async def ask_site(self, site: str, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        """One answer per mailbox of `site`, within the ask's deadline."""
        return await SiteCall(self, site, list(mailboxes), ask).run()

    def breaker(self, site: str, url: str) -> CircuitBreaker | None:
        """The breaker of the node at `url` of `site` (None without a board)."""
        if self.breakers is None:
            return None
        return self.breakers.breaker("peer", url, f"node {url} of site {site}")

    # --- metrics (optional) -------------------------------------------------------------------

    def count(self, what: str, site: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, f"forward_{what}").labels(site=site).inc()

    def count_error(self, site: str, code: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.forward_errors.labels(site=site, code=code).inc(n)

    def observe(self, site: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.forward_latency.labels(site=site).observe(seconds)


VERSIONS_PATH = "/api/v1/internal/versions"
VERSIONS_TIMEOUT_SECONDS = 2.0


class PeerSite:
    """The source for the mailboxes of one other site. Its answers carry the owner's version of
    each mailbox, and `versions` asks the owner for the current ones (one small signed call),
    so this site's copies can be confirmed without asking again for the data."""

    reads_versions = True

    def __init__(self, site: str, forwarder: Forwarder, caller: SiteCaller | None = None) -> None:
        self.site = site
        self.name = f"site:{site}"
        self.forwarder = forwarder
        self.caller = caller

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        return await self.forwarder.ask_site(self.site, mailboxes, ask)

    async def versions(self, mailboxes: Sequence[Mailbox], ask: Ask) -> dict[str, str | None]:
        """The owner's current version of each mailbox; empty when the site cannot be asked."""
        if self.caller is None or not mailboxes:
            return {}
        try:
            answer = await self.caller.post(
                self.site,
                VERSIONS_PATH,
                {
                    "addresses": [m.address for m in mailboxes],
                    "start": ask.window.start.isoformat(),
                    "end": ask.window.end.isoformat(),
                },
                timeout=min(VERSIONS_TIMEOUT_SECONDS, max(ask.left(), 0.05)),
                key=replica_key(mailboxes[0]),
                request_id=ask.request_id,
            )
        except SiteUnreachable as exc:
            log.info("versions of site %r unavailable: %s", self.site, exc)
            return {}
        found = answer.get("versions")
        if not isinstance(found, dict):
            return {}
        return {
            key_of(m): v if isinstance(v := found.get(m.address), str) else None for m in mailboxes
        }

    def unanswered(self, ask: Ask) -> MailboxError:
        detail = f"Site {self.site!r} did not answer within {ask.timeout_seconds:g}s."
        return MailboxError.of(PROXY_FAILED, detail, self.site, plain=True)

    async def forget(self, mailbox: Mailbox) -> int:
        return 0

    async def aclose(self) -> None:
        return None


@dataclass
class SiteCall:
    """One batch for one site: node groups, retries, failover, and the fill at the end."""

    forwarder: Forwarder
    site: str
    mailboxes: list[Mailbox]
    ask: Ask
    answers: Answers = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    last_problem: str = "it has no nodes."

    async def run(self) -> Answers:
        try:
            candidates = await self.forwarder.nodes.nodes(self.site)
        except DiscoveryError as exc:
            return self._fill(self.mailboxes, f"no node could be discovered ({exc}).")
        names = {c.url: c.name for c in candidates}
        pending = list(self.mailboxes)
        while pending:
            if self.ask.deadline - time.monotonic() < MIN_CALL_SECONDS:
                self.last_problem = "no node answered within the request's time budget."
                break
            groups = self._group(pending, candidates)
            if not groups:
                self._all_skipped(candidates)
                break
            if self.failed:
                self.forwarder.count("failovers", self.site)
            outcomes = await asyncio.gather(
                *(self._call(url, names.get(url), group) for url, group in groups.items())
            )
            pending = []
            for (url, group), outcome in zip(groups.items(), outcomes):
                if isinstance(outcome, PeerSkipped):
                    self.failed.add(url)
                    pending.extend(group)
                elif isinstance(outcome, PeerFailure):
                    self.failed.add(url)
                    self.last_problem = f"node {url} failed: {outcome}"
                    # Each node's breaker logs when it goes down and comes back; this is detail.
                    log.info("forwarding to %s failed, failing over: %s", url, outcome)
                    pending.extend(group)
                else:
                    self.answers.update(outcome)
        missing = [m for m in self.mailboxes if key_of(m) not in self.answers]
        self.answers.update(self._fill(missing, self.last_problem))
        return self.answers

    def _fill(self, mailboxes: Sequence[Mailbox], reason: str) -> Answers:
        if not mailboxes:
            return {}
        self.forwarder.count_error(self.site, PROXY_FAILED, len(mailboxes))
        error = MailboxError.of(PROXY_FAILED, f"Site {self.site!r}: {reason}", self.site)
        return {key_of(m): error for m in mailboxes}

    def _group(
        self, pending: list[Mailbox], candidates: list[Candidate]
    ) -> dict[str, list[Mailbox]]:
        """Each mailbox to the first node in its replica order that has not failed in this
        call and whose breaker would let a call through."""
        skipped = {c.url for c in candidates if not self._available(c.url)}
        groups: dict[str, list[Mailbox]] = {}
        for mailbox in pending:
            node = choose_node(replica_key(mailbox), candidates, failed=self.failed | skipped)
            if node is not None:
                groups.setdefault(node.url, []).append(mailbox)
        return groups

    def _available(self, url: str) -> bool:
        breaker = self.forwarder.breaker(self.site, url)
        return breaker is None or breaker.available

    def _all_skipped(self, candidates: list[Candidate]) -> None:
        """Say why no node is left: the ones this call did not try are all failing."""
        open_ = [c.url for c in candidates if c.url not in self.failed]
        if open_:
            self.last_problem = (
                f"not asked: every node is failing (breakers open for {', '.join(open_)})."
            )

    async def _call(
        self, url: str, name: str | None, group: list[Mailbox]
    ) -> Answers | PeerFailure:
        """One node's answers for `group`, its breaker told the outcome."""
        breaker = self.forwarder.breaker(self.site, url)
        if breaker is not None and not breaker.allow():
            return PeerSkipped("its breaker is open")
        try:
            outcome = await self._attempts(url, name, group)
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.release_trial()
            raise
        if breaker is not None:
            if isinstance(outcome, PeerFailure):
                breaker.record_failure(str(outcome))
            else:
                breaker.record_success()
        return outcome

    async def _attempts(
        self, url: str, name: str | None, group: list[Mailbox]
    ) -> Answers | PeerFailure:
        sub = self.ask.request_for([MailboxQuery(m.address) for m in group])
        body = render_get_user_availability_request(sub)
        started = time.monotonic()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.forwarder.attempts),
                retry=retry_if_exception_type(TransientPeerError),
                wait=self._wait,
                reraise=False,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.forwarder.count("retries", self.site)
                    results = await post_group(
                        self.forwarder, self.site, self.ask, url, name, body, sub
                    )
        except RetryError as exc:
            return PeerFailure(str(exc.last_attempt.exception()))
        except PeerFailure as exc:
            return exc
        except FinalPeerError as exc:
            self.forwarder.count_error(self.site, PROXY_FAILED, len(group))
            error = MailboxError.of(
                PROXY_FAILED, f"Site {self.site!r}, node {url}: {exc}", self.site
            )
            return {key_of(m): error for m in group}
        finally:
            self.forwarder.observe(self.site, time.monotonic() - started)
        for result in results:
            if isinstance(result, MailboxError):
                self.forwarder.count_error(self.site, result.code, 1)
        return {key_of(m): result for m, result in zip(group, results)}

    def _wait(self, retry_state: RetryCallState) -> float:
        """Jittered exponential back-off, or the peer's BackOffMilliseconds, within the deadline."""
        error = retry_state.outcome.exception() if retry_state.outcome else None
        base = 0.05 * (2 ** (retry_state.attempt_number - 1))
        pause: float = base * (0.5 + self.forwarder.rng.random())
        if isinstance(error, TransientPeerError) and error.back_off:
            pause = max(pause, error.back_off)
        left = self.ask.next_hop_budget() - MIN_CALL_SECONDS
        if pause > left:
            raise PeerFailure(f"{error}; no time left to retry")
        return pause
