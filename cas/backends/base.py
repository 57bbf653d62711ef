"""The mailbox backend interface, and a fake of it for unit tests.

A backend answers "what is in this mailbox's calendar over this window?" with `MailboxData`.
It raises `cas.errors.BackendFailure` (and nothing else) when it cannot; the service turns that
into a per-mailbox `ErrorFreeBusyGenerationFailed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from cas.errors import BackendFailure
from cas.model.freebusy import MailboxData, Window, events_in_window
from sitemap.model import Mailbox


class MailboxBackend(Protocol):
    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        """Events of `mailbox` overlapping `window`, or raise `BackendFailure`."""
        ...

    async def aclose(self) -> None: ...


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
