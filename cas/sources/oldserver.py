"""The old-server source: merged free/busy from an old server's `/public/?cmd=freebusy`.

`OldServerSource.fetch(mailboxes, ask)` sends **one** GET per old server for all the batch's
mailboxes (`u=SMTP:...` repeated, at most 100 per GET, larger sets split into parallel GETs)
over the ask's window, at `resolution` minutes per digit (5 by default: the finest grid, so that
any interval on it gives exactly the old server's digits). Each mailbox's answer is
`MailboxData(merged_only=True, coverage=...)` (see `fbdata_to_mailbox_data`) or its
`MailboxError`. `fetch_many(mailboxes, window, interval)` is the same read at any interval.

Digits are kept as the old server sent them; `4` stays "no data" (and outside `coverage`). An
unknown user is answered by the old server with all `4`s, so it reads as no data, never free;
a user missing from the answer, or with malformed `fbdata`, gets an error of its own. Every
httpx, HTTP and parsing failure becomes one `BackendFailure` naming the URL, in one place
(`_edge`), and is given to every mailbox of that GET.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

import httpx

from cas.codecs.public_freebusy import (
    MAX_USERS,
    LegacyItemError,
    LegacyQuery,
    LegacyResponseError,
    fbdata_to_mailbox_data,
    freebusy_query_params,
    parse_freebusy_response,
)
from cas.errors import BackendFailure, MailboxError
from cas.model.ask import Ask
from cas.model.freebusy import (
    MAX_INTERVAL_MINUTES,
    MIN_INTERVAL_MINUTES,
    MailboxData,
    Window,
)
from cas.sources.base import Answers, blame, http_edge, key_of
from cas.sources.gate import Gate
from sitemap.model import LegacyServerConfig, Mailbox, Site

RESOLUTION = 5  # minutes per digit read from the old server
MAX_PARALLEL_REQUESTS = 4  # old servers were small; do not hammer one (`oldserver_concurrency`)

Result = MailboxData | BackendFailure
log = logging.getLogger(__name__)


class OldServerSource:
    """A source over one old server's public virtual directory (`config.url`) for `site`."""

    name = "oldserver"

    def __init__(
        self,
        config: LegacyServerConfig,
        *,
        site: str = "",
        client: httpx.AsyncClient | None = None,
        resolution: int = RESOLUTION,
        concurrency: int = MAX_PARALLEL_REQUESTS,
    ) -> None:
        self.config = config
        self.site = site
        self.url = config.url if config.url.endswith("/") else config.url + "/"
        self.resolution = resolution
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_seconds), trust_env=False)
        )
        self.gate = Gate(concurrency, self.name)

    @classmethod
    def for_site(
        cls,
        site: Site,
        *,
        client: httpx.AsyncClient | None = None,
        concurrency: int = MAX_PARALLEL_REQUESTS,
    ) -> OldServerSource:
        if site.legacy is None:
            raise ValueError(f"site {site.name!r} has no legacy server")
        return cls(site.legacy, site=site.name, client=client, concurrency=concurrency)

    # --- the batch call ----------------------------------------------------------------------

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        try:
            async with asyncio.timeout(ask.left()):
                results = await self.fetch_many(mailboxes, ask.window, self.resolution)
        except TimeoutError:
            return {key_of(m): self.unanswered(ask) for m in mailboxes}
        answers: Answers = {}
        for mailbox in mailboxes:
            result = results[mailbox.address.casefold()]
            if isinstance(result, BackendFailure):
                # The old server's breaker (cas.sources.guarded) tells the story once.
                log.debug("old server failed for %s: %s", mailbox.address, result)
                detail = f"{blame(self.name, self.site)}: {result}"
                error = MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.site)
                answers[key_of(mailbox)] = error
            else:
                answers[key_of(mailbox)] = result
        return answers

    def unanswered(self, ask: Ask) -> MailboxError:
        # Plain: names the site and the old server, nothing internal (no URL).
        detail = f"{blame(self.name, self.site)}: no answer within {ask.timeout_seconds:g}s."
        return MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.site, plain=True)

    async def fetch_many(
        self, mailboxes: Iterable[Mailbox], window: Window, interval: int
    ) -> dict[str, Result]:
        """Each mailbox's merged data (or failure) by casefolded address; one GET per 100."""
        if not MIN_INTERVAL_MINUTES <= interval <= MAX_INTERVAL_MINUTES:
            raise ValueError(f"interval {interval} is outside 5..1440 minutes")
        unique: dict[str, Mailbox] = {}
        for mailbox in mailboxes:
            unique.setdefault(mailbox.address.casefold(), mailbox)
        boxes = list(unique.values())
        chunks = [boxes[i : i + MAX_USERS] for i in range(0, len(boxes), MAX_USERS)]
        results: dict[str, Result] = {}
        for part in await asyncio.gather(*(self._ask(c, window, interval) for c in chunks)):
            results.update(part)
        return results

    async def _ask(
        self, mailboxes: Sequence[Mailbox], window: Window, interval: int
    ) -> dict[str, Result]:
        addresses = [m.address for m in mailboxes]
        query = LegacyQuery(window.start, window.end, interval, tuple(addresses))
        try:
            async with self.gate:
                with self._edge():
                    async with asyncio.timeout(self.config.timeout_seconds):
                        response = await self._client.get(
                            self.url,
                            params=freebusy_query_params(window, interval, addresses),
                            headers={"Accept": "text/xml"},
                            auth=self._auth(),
                        )
                    if response.status_code != 200:
                        raise BackendFailure(
                            f"old server at {self.url} answered HTTP {response.status_code} "
                            f"(expected 200): {response.text.strip()[:200]}"
                        )
                    answers = parse_freebusy_response(response.content, query)
        except BackendFailure as failure:
            return {a.casefold(): failure for a in addresses}
        results: dict[str, Result] = {}
        for address in addresses:
            answer = answers.get(address.casefold())
            if answer is None:
                results[address.casefold()] = BackendFailure(
                    f"old server at {self.url} has no free/busy for {address}"
                )
            elif isinstance(answer, LegacyItemError):
                results[address.casefold()] = BackendFailure(
                    f"old server at {self.url}: {answer.message}"
                )
            else:
                results[address.casefold()] = fbdata_to_mailbox_data(answer, window, interval)
        return results

    # --- the edge ----------------------------------------------------------------------------

    def _auth(self) -> httpx.BasicAuth | None:
        if self.config.username is None:
            return None
        password = self.config.password.resolve() if self.config.password is not None else ""
        return httpx.BasicAuth(self.config.username, password)

    @contextmanager
    def _edge(self) -> Iterator[None]:
        """Translate every failure of talking to the old server into `BackendFailure`."""
        url = self.url
        try:
            with http_edge("old server", url, self.config.timeout_seconds):
                yield
        except LegacyResponseError as exc:
            raise BackendFailure(f"unusable answer from old server at {url}: {exc}") from exc

    async def forget(self, mailbox: Mailbox) -> int:
        return 0

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> OldServerSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["RESOLUTION", "OldServerSource"]
