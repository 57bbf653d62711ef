"""A bound on the calls one node makes to one backend at once, that says how it is used.

`Gate(limit, name)` is an asyncio semaphore that counts: `in_flight` calls hold it, `waiting`
calls queue for it (first come, first served). Each source that talks to a server (the site's
CalDAV backend, its old server) passes every call through its gate, so a burst of requests
cannot open more than `limit` connections' worth of work on that server, however many
mailboxes they ask for; the rest wait within their request's deadline. The limits are settings
(`backend_concurrency`, `oldserver_concurrency`) and the counts are metrics
(`cas_source_in_flight`, `cas_source_waiting`, `cas_source_limit`).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Gate:
    """At most `limit` calls at once through `async with gate:`; see the module docstring."""

    def __init__(self, limit: int, name: str) -> None:
        if limit < 1:
            raise ValueError(f"a gate lets at least one call through, not {limit}")
        self.limit = limit
        self.name = name  # the source's name, for metrics: "caldav", "oldserver"
        self.in_flight = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(limit)

    async def __aenter__(self) -> Gate:
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.in_flight -= 1
        self._semaphore.release()

    def __repr__(self) -> str:
        return f"Gate({self.name}: {self.in_flight}/{self.limit}, {self.waiting} waiting)"
