"""Client connections with bounds: how long one may sit idle, and how many may be open.

uvicorn closes a kept-alive connection `timeout_keep_alive` seconds after its last answer, but
a connection that never sends a request, or sends its headers a byte at a time, is kept until
the client goes away: each costs a few hundred kilobytes, and enough of them exhaust the
node. `bounded_protocol(limits)` returns uvicorn's h11 protocol with three more rules:

* a connection must send a request's first byte within `idle_seconds` of being accepted, TLS
  handshake included (the handshake itself is bounded by the server, `cas.serving`);
* a request's line and headers must be complete within `header_seconds` of its first byte;
* past `max_connections` open at once, a new connection's request is answered 503 with
  `Connection: close` (the answer, not a reset, so clients and load balancers know why).

A connection closed for the first two reasons costs a debug line and a count in `on_drop`;
refusals are reported once per overload by an `Overload` (`cas.endpoints.overload`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from cas.endpoints.overload import Overload

__all__ = ["ConnectionLimits", "bounded_protocol"]

log = logging.getLogger(__name__)

_BUSY_BODY = b"Too many connections to this node; try again shortly.\n"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    idle_seconds: float = 10.0
    header_seconds: float = 10.0
    max_connections: int = 1000


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(_BUSY_BODY)),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_BODY})


def bounded_protocol(
    limits: ConnectionLimits, on_drop: Callable[[str], None] | None = None
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `limits` (see the module docstring); `on_drop(reason)` is
    told of each connection closed or refused: "idle", "headers" or "too-many"."""
    overload = Overload("open connections", "connections", limits.max_connections)

    def dropped(reason: str) -> None:
        if on_drop is not None:
            on_drop(reason)

    class BoundedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._accepted_at = self.loop.time()  # before the TLS handshake, if any
            self._timer: asyncio.TimerHandle | None = None
            self._waiting_for = ""  # what the timer waits for: "request", "headers"

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                overload.refused()
                dropped("too-many")
                self.app = _too_many_connections  # its request gets the 503, then a close
            else:
                overload.admitted()
            spent = self.loop.time() - self._accepted_at
            self._arm(max(0.0, limits.idle_seconds - spent), "request")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        # --- the timer -------------------------------------------------------------------------

        def _follow(self) -> None:
            """After bytes came in or an answer went out: time the next request's headers.

            With nothing buffered between requests, the first-request timer or uvicorn's
            keep-alive timer is running; once a request's headers are complete, its body has
            its own limit (`read_body`)."""
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                self._disarm()
            elif self._has_partial_request() and self._waiting_for != "headers":
                self._arm(limits.header_seconds, "headers")

        def _has_partial_request(self) -> bool:
            return bool(self.conn.trailing_data[0])

        def _arm(self, seconds: float, waiting_for: str) -> None:
            self._disarm()
            self._waiting_for = waiting_for
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._waiting_for = None, ""

        def _expired(self) -> None:
            reason = "idle" if self._waiting_for == "request" else "headers"
            self._timer, self._waiting_for = None, ""
            if self.transport.is_closing():
                return
            log.debug("closing a connection from %s: %s", self.client, f"no {reason} in time")
            dropped(reason)
            self.transport.close()

    return BoundedH11Protocol
