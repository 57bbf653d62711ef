"""Running a node under uvicorn: bounded connections, and a graceful shutdown.

`serve_node(app, settings, ...)` runs the app with the node's connection settings: TLS
handshakes bounded by `http_idle_timeout_seconds`, kept-alive connections closed after
`http_keepalive_seconds`, and the rules of `cas.connections` (a first request within the idle
timeout, headers within `http_header_timeout_seconds`, at most `max_connections`). Requests
in flight are capped by the app itself (`cas.endpoints.overload`).

On SIGTERM (Kubernetes' stop, `docker stop`, the lab's Ctrl-C path) the node:

1. leaves readiness at once (`/readyz` answers 503) but keeps serving for `drain_seconds`, so
   load balancers and Service endpoints stop sending it new work;
2. then stops accepting connections and lets requests in flight finish, for at most
   `grace_seconds` (uvicorn's graceful shutdown timeout);
3. then runs the app's shutdown (closing pools) and exits.

A second SIGTERM or a SIGINT skips the drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from cas.connections import ConnectionLimits, bounded_protocol
from cas.settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_drain: Callable[[], None],
        drain_seconds: float,
        handshake_seconds: float | None = None,
    ) -> None:
        super().__init__(config)
        self.on_drain = on_drain
        self.drain_seconds = drain_seconds
        self.handshake_seconds = handshake_seconds
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, with TLS handshakes bounded (uvicorn has no setting for it:
        asyncio's default lets a client that never finishes one hold it for 60 s)."""
        loop = asyncio.get_running_loop()
        if not (self.config.is_ssl and self.handshake_seconds):
            await super().startup(sockets)
            return
        create_server = loop.create_server
        seconds = self.handshake_seconds

        async def bounded(*args: Any, **kwargs: Any) -> asyncio.Server:
            kwargs.setdefault("ssl_handshake_timeout", seconds)
            return await create_server(*args, **kwargs)

        loop.create_server = bounded  # type: ignore[method-assign]
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server  # the loop's own method again

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._draining and self.drain_seconds > 0:
            self._draining = True
            self.on_drain()
            log.info(
                "SIGTERM: not ready any more; serving %.1fs more, then finishing requests in flight",
                self.drain_seconds,
            )
            timer = threading.Timer(self.drain_seconds, super().handle_exit, args=(sig, frame))
            timer.daemon = True
            timer.start()
            return
        super().handle_exit(sig, frame)


def node_server(
    app: Starlette,
    settings: Settings,
    *,
    host: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> DrainingServer:
    """The server `cas serve` runs (see the module docstring)."""
    limits = ConnectionLimits(
        idle_seconds=settings.http_idle_timeout_seconds,
        header_seconds=settings.http_header_timeout_seconds,
        max_connections=settings.max_connections,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        http=bounded_protocol(limits, on_drop=app.state.metrics.connection_dropped),
        timeout_keep_alive=settings.http_keepalive_seconds,  # type: ignore[arg-type]
        log_level=settings.log_level,
        log_config=None,  # our handler, so uvicorn's lines carry the request id too
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    return DrainingServer(
        config,
        on_drain=app.state.drain,
        drain_seconds=settings.shutdown_drain_seconds,
        handshake_seconds=settings.http_idle_timeout_seconds,
    )
