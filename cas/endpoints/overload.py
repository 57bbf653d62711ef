"""What a node does with more work than it takes: the cap on requests in flight, and one log
line per overload, not one per refused request.

`InFlightLimit` is plain ASGI middleware: past `limit` requests being served, a new one is
answered at once with `ServerBusy` (503 and `Retry-After`, in the door's own form: a SOAP fault
for EWS, which other nodes retry elsewhere), without reading its body. Health probes and
metrics are never refused, so an overloaded node stays observable and is not restarted for it.

`Overload` tells an operator about one limit: a WARNING when it starts refusing, an INFO when
it has refused nothing for `quiet_seconds`, with how many were refused in between. The
connection cap of `cas.connections` reports through one too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cas.endpoints.errors import response_for
from cas.errors import ServerBusy

__all__ = ["EXEMPT_PATHS", "InFlightLimit", "Overload"]

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_SECONDS = 1


class Overload:
    """One overload episode of one limit at a time (see the module docstring)."""

    def __init__(
        self,
        what: str,
        unit: str,
        limit: int,
        *,
        quiet_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what  # "requests in flight", "open connections"
        self.unit = unit  # what is refused: "requests", "connections"
        self.limit = limit
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self.since: float | None = None
        self.refusals = 0
        self._last_refusal = 0.0

    def refused(self) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
            log.warning(
                "overloaded: %d %s (the limit); answering 503 until it eases", self.limit, self.what
            )
        self.refusals += 1
        self._last_refusal = now

    def admitted(self) -> None:
        if self.since is None or self.clock() - self._last_refusal < self.quiet_seconds:
            return
        log.info(
            "overload over: %d %s refused with 503 in %.0fs (limit: %d %s)",
            self.refusals, self.unit, self._last_refusal - self.since, self.limit, self.what,
        )  # fmt: skip
        self.since = None
        self.refusals = 0


class InFlightLimit:
    """At most `limit` requests served at once; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        on_change: Callable[[int], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self.overload = Overload("requests in flight", "requests", limit)
        self.on_change = on_change
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await self._refuse(scope, receive, send)
            return
        self.overload.admitted()
        self._count(+1)
        try:
            await self.app(scope, receive, send)
        finally:
            self._count(-1)

    def _count(self, step: int) -> None:
        self.in_flight += step
        if self.on_change is not None:
            self.on_change(self.in_flight)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.overload.refused()
        if self.on_refused is not None:
            self.on_refused()
        fault = ServerBusy(
            f"The node is serving {self.limit} requests, as many as it takes; try again in "
            f"{RETRY_AFTER_SECONDS}s."
        )

        async def with_retry_after(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    (b"retry-after", b"%d" % RETRY_AFTER_SECONDS),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await response_for(Request(scope), fault)(scope, receive, with_retry_after)
