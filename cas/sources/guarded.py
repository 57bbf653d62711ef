"""A source behind a circuit breaker: a backend known to be failing is not waited for.

`GuardedSource(inner, breaker, slow_seconds=...)` is itself a source; `cas.wiring` puts it
around each of the site's own sources (the CalDAV backend, the old server), *inside* the cache
wrapper, so that while the breaker is open the cache serves its stale entries (marked stale)
and a mailbox without one gets its error at once.

Theory of operation
-------------------
A batch goes to the inner source only when the breaker allows it (closed, or the one probe of
half-open). Its outcome is counted by mailbox, like Envoy counts requests:

* any mailbox answered with data, or with "no such calendar", means the backend works: success;
* every mailbox failed: that many failures (the batch's last error is the reason);
* no answer within `slow_seconds`: every mailbox of the batch counts as failed (a timeout),
  and the batch is still waited for, until its deadline or until the breaker opens.

When the breaker opens, every batch still waiting on that backend is answered at once with
the breaker's error (and its read cancelled): nobody waits for a deadline already known to be
missed. The breaker's error is `ErrorFreeBusyGenerationFailed` naming the site and the backend
(a plain reason, shown to clients); why it fails is in the breaker's log line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from cas.breaker import CircuitBreaker
from cas.errors import MailboxError
from cas.model.ask import Ask
from cas.sources.base import Answers, PathOwned, Source, Versioned, blame, key_of
from sitemap.model import Mailbox

__all__ = ["GuardedSource"]

GENERATION_FAILED = "ErrorFreeBusyGenerationFailed"


class GuardedSource:
    """`inner` behind `breaker` (see the module docstring); itself a source."""

    def __init__(self, inner: Source, breaker: CircuitBreaker, *, slow_seconds: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.site = inner.site
        self.breaker = breaker
        self.slow_seconds = slow_seconds
        self._waiting: set[asyncio.Future[None]] = set()  # batches waiting past slow_seconds
        breaker.add_listener(self._on_change)

    def unanswered(self, ask: Ask) -> MailboxError:
        return self.inner.unanswered(ask)

    async def forget(self, mailbox: Mailbox) -> int:
        return await self.inner.forget(mailbox)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def reads_versions(self) -> bool:
        return isinstance(self.inner, Versioned) and self.inner.reads_versions

    def mailbox_for(self, path: str, mailboxes: Iterable[Mailbox]) -> Mailbox | None:
        """The inner source's owner of a changed path (asked even while the breaker is open:
        it reads no backend)."""
        if isinstance(self.inner, PathOwned):
            return self.inner.mailbox_for(path, mailboxes)
        return None

    async def versions(self, mailboxes: Sequence[Mailbox], ask: Ask) -> dict[str, str | None]:
        """The inner source's change tags, when it has them and the breaker lets it be asked
        (None: unknown); bounded by `slow_seconds`, which counts as a failure."""
        unknown: dict[str, str | None] = {key_of(m): None for m in mailboxes}
        if not mailboxes or not isinstance(self.inner, Versioned) or not self.breaker.available:
            return unknown
        try:
            async with asyncio.timeout(min(self.slow_seconds, ask.left())):
                return await self.inner.versions(mailboxes, ask)
        except TimeoutError:
            reason = f"change tags not read within {self.slow_seconds:g}s"
            self.breaker.record_failure(reason, weight=len(mailboxes))
            return unknown

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        if not mailboxes:
            return {}
        if not self.breaker.allow():
            return self.refused(mailboxes)
        call = asyncio.ensure_future(self.inner.fetch(mailboxes, ask))
        try:
            return await self._outcome(call, mailboxes, ask)
        except asyncio.CancelledError:
            self.breaker.release_trial()
            raise
        finally:
            if not call.done():
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)

    def refused(self, mailboxes: Sequence[Mailbox]) -> Answers:
        """Every mailbox's error while the breaker keeps the backend from being asked."""
        # Plain, so the client reads it: the site and the kind of backend, nothing internal.
        # Why it is failing (URLs, transport errors) is in the breaker's log line.
        detail = (
            f"{blame(self.name, self.site)}: not asked, it is failing; it is tried again in "
            f"{self.breaker.probe_in():.0f}s."
        )
        error = MailboxError.of(GENERATION_FAILED, detail, self.site, plain=True)
        return {key_of(m): error for m in mailboxes}

    # --- internals -----------------------------------------------------------------------------

    async def _outcome(
        self, call: asyncio.Future[Answers], mailboxes: Sequence[Mailbox], ask: Ask
    ) -> Answers:
        done, _ = await asyncio.wait({call}, timeout=min(self.slow_seconds, ask.left()))
        if done:
            results = call.result()
            self._record(results)
            return results
        self.breaker.record_failure(
            f"no answer within {self.slow_seconds:g}s", weight=len(mailboxes)
        )
        if self.breaker.state != "closed":
            return self.refused(mailboxes)
        opened = asyncio.get_running_loop().create_future()
        self._waiting.add(opened)
        try:
            done, _ = await asyncio.wait(
                {call, opened}, timeout=ask.left(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._waiting.discard(opened)
            opened.cancel()
        if call in done:
            return call.result()  # late but whole; already counted as a timeout
        if self.breaker.state != "closed":
            return self.refused(mailboxes)
        late = self.inner.unanswered(ask)
        return {key_of(m): late for m in mailboxes}

    def _record(self, results: Answers) -> None:
        """Data or "no such calendar" for any mailbox: the backend works; else each failed."""
        errors = [r for r in results.values() if isinstance(r, MailboxError) and not r.missing]
        if len(errors) < len(results):
            self.breaker.record_success()
        elif errors:
            reason = errors[-1].detail.removeprefix(blame(self.name, self.site) + ": ")
            self.breaker.record_failure(reason, weight=len(errors))

    def _on_change(self, state: str) -> None:
        if state != "open":
            return
        for waiter in list(self._waiting):
            if not waiter.done():
                waiter.set_result(None)
