"""Observability: request ids across hops, log lines that carry them, and Prometheus metrics.

* Request ids. `RequestIdMiddleware` gives every HTTP request an id, puts it in the `request_id`
  context variable and in the `X-Request-Id` response header of every answer, errors included.
  An incoming id is taken only when `trust(scope)` says so; otherwise the endpoint calls
  `adopt(id)` once it has verified a forwarded request's token, and the adopted id replaces the
  generated one for the rest of the request and in the response header.
* Logs. `RequestIdLogFilter` stamps each record with the current id; `configure_logging` installs
  the root handler `cas serve` uses.
* Metrics live in `cas.metrics` (re-exported here: `Metrics`, `metrics_endpoint`, ...).
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cas.metrics import (
    ENDPOINTS,
    ROUTES,
    Metrics,
    RequestCountMiddleware,
    endpoint_of,
    metrics_endpoint,
)

__all__ = [
    "ENDPOINTS",
    "REQUEST_ID_HEADER",
    "ROUTES",
    "Metrics",
    "RequestCountMiddleware",
    "RequestIdLogFilter",
    "RequestIdMiddleware",
    "adopt",
    "configure_logging",
    "current_request_id",
    "endpoint_of",
    "is_valid_request_id",
    "metrics_endpoint",
    "new_request_id",
    "request_id",
]

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
logger = logging.getLogger(__name__)

request_id: ContextVar[str | None] = ContextVar("cas_request_id", default=None)


@dataclass(slots=True)
class _Slot:
    """The id the middleware will put in the response header; `adopt` may replace it."""

    value: str


_slot: ContextVar[_Slot | None] = ContextVar("cas_request_id_slot", default=None)


def new_request_id() -> str:
    """A fresh id: 16 url-safe characters (96 random bits)."""
    return secrets.token_urlsafe(12)


def is_valid_request_id(value: str) -> bool:
    return bool(_VALID_ID.fullmatch(value))


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    slot = _slot.get()
    return slot.value if slot is not None else request_id.get()


def adopt(value: str) -> None:
    """Make `value` the id of the current request (in logs and in the response header).

    Call only after the request proved it comes from a node (a verified forwarding token);
    ids from anyone else are never adopted. Raises ValueError for a malformed id.
    """
    if not is_valid_request_id(value):
        raise ValueError(f"malformed request id {value!r}")
    request_id.set(value)
    slot = _slot.get()
    if slot is not None:
        slot.value = value


class RequestIdMiddleware:
    """Plain ASGI middleware: an id per HTTP request, in the context and every response.

    Place it outermost (wrap the Starlette app, or first in `middleware=`) so that answers
    built by error handlers pass through it. If the app raises before answering, the
    middleware logs the error with the id, answers 500 itself and re-raises.
    """

    def __init__(
        self,
        app: ASGIApp,
        header: str = REQUEST_ID_HEADER,
        trust: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.header = header
        self._header_key = header.lower().encode("latin-1")
        self.trust = trust

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slot = _Slot(self._incoming(scope) or new_request_id())
        slot_token = _slot.set(slot)
        id_token = request_id.set(slot.value)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != self._header_key]
                headers.append((self._header_key, slot.value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error while serving %s", scope.get("path", "?"))
            if not started:
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise
        finally:
            request_id.reset(id_token)
            _slot.reset(slot_token)

    def _incoming(self, scope: Scope) -> str | None:
        if self.trust is None or not self.trust(scope):
            return None
        for key, value in scope.get("headers", []):
            if key == self._header_key:
                text = value.decode("latin-1")
                return text if is_valid_request_id(text) else None
        return None


# -- logging -------------------------------------------------------------------------------------


class RequestIdLogFilter(logging.Filter):
    """Adds `record.request_id` (the current id, "-" outside requests); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


_HANDLER_MARK = "_cas_handler"


def configure_logging(level: int | str, site: str) -> logging.Handler:
    """Install (or replace) the root handler: time, level, logger, site, request id, message.

    Give uvicorn `log_config=None` so its loggers propagate here and carry the id too.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdLogFilter())
    site_text = site.replace("%", "%%")
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s site={site_text} rid=%(request_id)s %(message)s"
        )
    )
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # One line per backend or peer call is debugging detail, not the node's story.
    chatty = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(chatty)
    return handler
