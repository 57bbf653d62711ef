"""Running a node under uvicorn with a graceful shutdown.

On SIGTERM (Kubernetes' stop, `docker stop`, the lab's Ctrl-C path) the node:

1. leaves readiness at once (`/readyz` answers 503) but keeps serving for `drain_seconds`, so
   load balancers and Service endpoints stop sending it new work;
2. then stops accepting connections and lets requests in flight finish, for at most
   `grace_seconds` (uvicorn's graceful shutdown timeout);
3. then runs the app's shutdown (closing pools) and exits.

A second SIGTERM or a SIGINT skips the drain.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_drain: Callable[[], None],
        drain_seconds: float,
    ) -> None:
        super().__init__(config)
        self.on_drain = on_drain
        self.drain_seconds = drain_seconds
        self._draining = False

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
