"""Where mailbox data comes from: the one batch interface every source has, and its helpers.

Theory of operation
-------------------
A **source** answers a batch: `fetch(mailboxes, ask)` returns one result per mailbox, keyed by
`key_of(mailbox)` (the casefolded primary address), each `MailboxData` or a `MailboxError`.
A source never raises for a mailbox's trouble; its errors are values that name the code and
the site. The sources are the site's CalDAV backend (`cas.sources.caldav`), its old server
(`cas.sources.oldserver`) and every other site, reached through its nodes
(`cas.sources.peers`). Caching is one wrapper around any of them (`cas.cache.cached`).

Calendar servers are read one mailbox at a time: such a **reader** (`MailboxReader`, with
`FakeBackend` beside it for tests) sits behind `ReaderSource`, which runs the reads of a batch
in parallel under a bound and turns each failure into that mailbox's error, in one place.
A reader raises `BackendFailure` (`CalendarNotFound` for a calendar that does not exist) and
nothing else; anything else is a bug, logged, and costs only its own mailbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Protocol, runtime_checkable

import httpx

from cas.errors import BackendFailure, CalendarNotFound, MailboxError
from cas.model.ask import Ask
from cas.model.availability import MailboxResult
from cas.model.freebusy import Freshness, MailboxData, Window, events_in_window
from cas.sources.gate import Gate
from sitemap.model import Mailbox, SecretUnavailable

log = logging.getLogger(__name__)

Answers = dict[str, MailboxResult]


def key_of(mailbox: Mailbox) -> str:
    """How a batch's results are keyed: the mailbox's primary address, casefolded."""
    return mailbox.address.casefold()


class Source(Protocol):
    """A batch of mailboxes in, one result per mailbox out (see the module docstring)."""

    name: str  # for logs and metrics: "caldav", "oldserver", "site:us"
    site: str  # the site whose data this is

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers: ...

    def unanswered(self, ask: Ask) -> MailboxError:
        """The error of a mailbox this source did not answer by the deadline."""
        ...

    async def forget(self, mailbox: Mailbox) -> int:
        """Drop whatever this source keeps of `mailbox` (a cache's entries); how many."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Versioned(Protocol):
    """A source that can tell cheaply whether a mailbox changed (a calendar's ctag).
    `reads_versions`: its answers already carry the version they were read at."""

    @property
    def reads_versions(self) -> bool: ...

    async def versions(self, mailboxes: Sequence[Mailbox], ask: Ask) -> dict[str, str | None]: ...


@runtime_checkable
class PathOwned(Protocol):
    """A source whose data lives at paths (a CalDAV server's calendars): which mailbox a
    changed path belongs to, as a storage hook reports it."""

    def mailbox_for(self, path: str, mailboxes: Iterable[Mailbox]) -> Mailbox | None: ...


class MailboxReader(Protocol):
    """Reads one mailbox: events over `window`, or raise `BackendFailure`."""

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData: ...

    async def aclose(self) -> None: ...


# What a source is called in messages, by its name (other names: "<name> backend").
SOURCE_LABELS = {"caldav": "CalDAV backend", "oldserver": "old server"}


def source_label(name: str) -> str:
    """A source in words: "CalDAV backend", "old server"."""
    return SOURCE_LABELS.get(name, f"{name} backend")


def blame(name: str, site: str) -> str:
    """Who failed, at the head of a per-mailbox error: "Site 'eu', CalDAV backend"."""
    return f"Site {site!r}, {source_label(name)}"


def failed_all(mailboxes: Sequence[Mailbox], code: str, detail: str, site: str | None) -> Answers:
    error = MailboxError.of(code, detail, site)
    return {key_of(m): error for m in mailboxes}


class ReaderSource:
    """A per-mailbox reader as a source: a batch read in parallel, at most `concurrency` reads
    at once across every request of the node (its `gate`)."""

    unanswered_detail = "{blame}: no answer within {seconds:g}s."

    def __init__(self, reader: MailboxReader, *, name: str, site: str, concurrency: int) -> None:
        self.reader = reader
        self.name = name
        self.site = site
        self.gate = Gate(concurrency, name)

    async def fetch(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Answers:
        """Every read of the batch at once; a mailbox not read by the deadline gets its error,
        and the others come back complete."""
        tasks = {key_of(m): asyncio.create_task(self._one(m, ask.window)) for m in mailboxes}
        try:
            _, late = await asyncio.wait(tasks.values(), timeout=ask.left())
        finally:  # late reads, or every read when this call is cancelled: none left behind
            for task in tasks.values():
                if not task.done():
                    task.cancel()
        return {
            key: task.result() if task not in late else self.unanswered(ask)
            for key, task in tasks.items()
        }

    async def _one(self, mailbox: Mailbox, window: Window) -> MailboxResult:
        async with self.gate:
            try:
                data = await self.reader.fetch(mailbox, window)
                version_of = getattr(self.reader, "version_of", None)
                version = version_of(mailbox) if version_of is not None else None
                if version is None:
                    return data
                return replace(
                    data, freshness=Freshness("backend", 0.0, self.site, version=version)
                )
            except CalendarNotFound as exc:
                detail = f"{blame(self.name, self.site)}: {exc}"
                return MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.site, True)
            except BackendFailure as exc:
                # The backend's breaker (cas.sources.guarded) tells the story once, not per mailbox.
                log.debug("backend failed for %s: %s", mailbox.address, exc)
                detail = f"{blame(self.name, self.site)}: {exc}"
                return MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.site)
            except Exception:
                # A bug in an adapter costs its own mailbox, never the whole request.
                log.exception("unexpected error reading %s", mailbox.address)
                return MailboxError.of(
                    "ErrorFreeBusyGenerationFailed",
                    "An internal error occurred; it has been logged.",
                    self.site,
                )

    @property
    def reads_versions(self) -> bool:
        return hasattr(self.reader, "version_of")

    def mailbox_for(self, path: str, mailboxes: Iterable[Mailbox]) -> Mailbox | None:
        owner_of = getattr(self.reader, "mailbox_for", None)
        found: Mailbox | None = owner_of(path, mailboxes) if owner_of is not None else None
        return found

    async def versions(self, mailboxes: Sequence[Mailbox], ask: Ask) -> dict[str, str | None]:
        """Each mailbox's change tag, where the reader has them (None: unknown)."""
        tag_of = getattr(self.reader, "ctag", None)
        if tag_of is None:
            return {key_of(m): None for m in mailboxes}

        async def one(mailbox: Mailbox) -> str | None:
            async with self.gate:
                try:
                    tag: str | None = await tag_of(mailbox)
                    return tag
                except BackendFailure:
                    return None

        tags = await asyncio.gather(*(one(m) for m in mailboxes))
        return {key_of(m): t for m, t in zip(mailboxes, tags)}

    def unanswered(self, ask: Ask) -> MailboxError:
        # Plain: names the site and the kind of backend, nothing internal (no URL).
        detail = self.unanswered_detail.format(
            blame=blame(self.name, self.site), seconds=ask.timeout_seconds
        )
        return MailboxError.of("ErrorFreeBusyGenerationFailed", detail, self.site, plain=True)

    async def forget(self, mailbox: Mailbox) -> int:
        return 0

    async def aclose(self) -> None:
        await self.reader.aclose()


@contextmanager
def http_edge(what: str, url: str, timeout_seconds: float) -> Iterator[None]:
    """Translate failures of talking HTTP to a backend (`what` at `url`) into BackendFailure.

    Each adapter wraps this with the translation of its own data errors.
    """
    try:
        yield
    except BackendFailure:
        raise
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise BackendFailure(f"{what} at {url} did not answer within {timeout_seconds}s") from exc
    except httpx.ConnectError as exc:
        raise BackendFailure(f"cannot connect to {what} at {url}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise BackendFailure(f"HTTP failure talking to {url}: {type(exc).__name__}: {exc}") from exc
    except SecretUnavailable as exc:
        raise BackendFailure(f"credentials for {url} unavailable: {exc}") from exc


class FakeBackend:
    """An in-memory reader: a fixed `MailboxData` per address; addresses in `failing` fail."""

    def __init__(
        self,
        data: Mapping[str, MailboxData],
        failing: set[str] | None = None,
        on_fetch: Callable[[Mailbox, Window], None] | None = None,
    ) -> None:
        self._data = dict(data)
        self._failing = failing or set()
        self._on_fetch = on_fetch
        self.calls: list[tuple[str, Window]] = []

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        self.calls.append((mailbox.address, window))
        if self._on_fetch is not None:
            self._on_fetch(mailbox, window)
        if mailbox.address in self._failing:
            raise BackendFailure(f"fake backend refuses {mailbox.address}")
        data = self._data.get(mailbox.address, MailboxData())
        return MailboxData(
            events=events_in_window(data.events, window),
            working_hours=data.working_hours,
            coverage=data.coverage,
            merged=data.merged,
            merged_only=data.merged_only,
        )

    async def aclose(self) -> None:
        return None
