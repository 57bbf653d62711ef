"""The mailbox backend interface, and a fake of it for unit tests.

A backend answers "what is in this mailbox's calendar over this window?" with `MailboxData`.
It raises `cas.errors.BackendFailure` (and nothing else) when it cannot; the service turns that
into a per-mailbox `ErrorFreeBusyGenerationFailed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import httpx

from cas.errors import BackendFailure
from cas.model.freebusy import MailboxData, Window, events_in_window
from sitemap.model import Mailbox, SecretUnavailable


class MailboxBackend(Protocol):
    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        """Events of `mailbox` overlapping `window`, or raise `BackendFailure`."""
        ...

    async def aclose(self) -> None: ...


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
    """An in-memory backend: a fixed `MailboxData` per address; addresses in `failing` fail."""

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
