"""The legacy mailbox backend: merged free/busy from an old server's `/public/?cmd=freebusy`.

`LegacyBackend.fetch_many(mailboxes, window, interval)` is what the service uses: **one** GET per
old server for all its mailboxes of a request (`u=SMTP:...` repeated, at most 100 per GET, larger
sets split into parallel GETs), with the request's own window and interval, so each user's
`fbdata` *is* the merged string the client asked for. Results are per mailbox, as values:
`MailboxData(merged=..., merged_only=True, coverage=...)` or a `BackendFailure`.

`fetch(mailbox, window)` keeps the `MailboxBackend` protocol working: calls for the same window
that arrive within `batch_delay` seconds (default 2 ms, i.e. the same burst of concurrent
fetches) join one `fetch_many` at `default_interval` (15 minutes, DavMail's granularity). The
protocol has no interval, so its merged string is at 15 minutes; `coverage` marks the slots that
are not `4`. A caller that needs another granularity uses `fetch_many`.

Digits are kept as the old server sent them; `4` stays "no data" (and outside `coverage`). An
unknown user is answered by the old server with all `4`s (see `caslab.oldserver.server`), so it reads
as no data, never free; a user missing from the answer, or with malformed `fbdata`, gets a
`BackendFailure` of its own. Every httpx, HTTP and parsing failure becomes one `BackendFailure`
naming the URL, in one place (`_edge`), and is given to every mailbox of that GET.
"""

from __future__ import annotations

import asyncio
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
from cas.errors import BackendFailure
from cas.model.freebusy import (
    MAX_INTERVAL_MINUTES,
    MIN_INTERVAL_MINUTES,
    MailboxData,
    Window,
)
from cas.sources.base import http_edge
from sitemap.model import LegacyServerConfig, Mailbox, Site

DEFAULT_FETCH_INTERVAL = 15
DEFAULT_BATCH_DELAY = 0.002
MAX_PARALLEL_REQUESTS = 4  # old servers were small; do not hammer one

Result = MailboxData | BackendFailure


class LegacyBackend:
    """A `MailboxBackend` over one old server's public virtual directory (`config.url`)."""

    def __init__(
        self,
        config: LegacyServerConfig,
        *,
        client: httpx.AsyncClient | None = None,
        default_interval: int = DEFAULT_FETCH_INTERVAL,
        batch_delay: float = DEFAULT_BATCH_DELAY,
    ) -> None:
        self.config = config
        self.url = config.url if config.url.endswith("/") else config.url + "/"
        self.default_interval = default_interval
        self.batch_delay = batch_delay
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_seconds), trust_env=False)
        )
        self._gate = asyncio.Semaphore(MAX_PARALLEL_REQUESTS)
        self._pending: dict[Window, list[tuple[Mailbox, asyncio.Future[Result]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    @classmethod
    def for_site(cls, site: Site, *, client: httpx.AsyncClient | None = None) -> LegacyBackend:
        if site.legacy is None:
            raise ValueError(f"site {site.name!r} has no legacy server")
        return cls(site.legacy, client=client)

    # --- the batch call ----------------------------------------------------------------------

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
            async with self._gate:
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

    # --- the MailboxBackend protocol, batched --------------------------------------------------

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        """Merged data at `default_interval`; concurrent calls for one window share a GET."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        batch = self._pending.get(window)
        if batch is None:
            batch = self._pending[window] = []
            task = loop.create_task(self._flush(window))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        batch.append((mailbox, future))
        result = await future
        if isinstance(result, BackendFailure):
            raise BackendFailure(str(result)) from result
        return result

    async def _flush(self, window: Window) -> None:
        live: list[tuple[Mailbox, asyncio.Future[Result]]] = []
        try:
            await asyncio.sleep(self.batch_delay)
            live = [(m, f) for m, f in self._pending.pop(window, []) if not f.done()]
            if not live:
                return
            results = await self.fetch_many([m for m, _ in live], window, self.default_interval)
        except BaseException as exc:
            for _, future in live or self._pending.pop(window, []):
                if not future.done():
                    future.set_result(BackendFailure(f"legacy fetch at {self.url} failed: {exc!r}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for mailbox, future in live:
            if not future.done():
                future.set_result(results[mailbox.address.casefold()])

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

    async def aclose(self) -> None:
        for task in list(self._flushes):
            task.cancel()
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> LegacyBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["DEFAULT_FETCH_INTERVAL", "LegacyBackend"]
