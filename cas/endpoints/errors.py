"""Where errors become HTTP responses: one middleware for every front door.

Endpoints raise; `FaultMiddleware` answers. A `RequestFault` is answered in the front door's
own form with the status `cas.errors` gives it: a SOAP fault for EWS (`soap_status`), the
protocol's error document for SOAP and POX Autodiscover, `{"error": {...}}` for the JSON API,
plain text for the old front door. A 401 carries the challenge of the node's authenticator
(or the admin API's). A forged forwarded request gets its 401 or 403. A client that went away
costs a debug line. Anything else is a bug: logged with its traceback, answered as
`ErrorInternalServerError` in the door's form, never as a traceback.
"""

from __future__ import annotations

import datetime
import logging
import socket
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cas.codecs import autodiscover as ad
from cas.codecs import ews
from cas.errors import ClientGone, InternalError, RequestFault, Unauthorized
from cas.trust import ForgedRequest

log = logging.getLogger(__name__)

XML = "text/xml; charset=utf-8"

# Which front door a path belongs to, first match wins (lower-cased paths).
DOORS: tuple[tuple[str, str], ...] = (
    ("/ews/", "ews"),
    ("/autodiscover/autodiscover.svc", "autodiscover-soap"),
    ("/autodiscover/autodiscover.xml", "autodiscover-pox"),
    ("/api/v1/cache/", "admin"),
    ("/api/", "json"),
    ("/public", "public"),
)


def door_of(path: str) -> str:
    lowered = path.lower()
    return next((door for prefix, door in DOORS if lowered.startswith(prefix)), "other")


def _challenge(request: Request, fault: RequestFault) -> dict[str, str]:
    """The fault's own headers (`Retry-After`), and a 401's `WWW-Authenticate`."""
    if not isinstance(fault, Unauthorized):
        return fault.headers
    if fault.challenge is not None:
        return fault.challenge
    challenge: dict[str, str] = request.app.state.holder.current.authenticator.challenge()
    return challenge


def _ews(request: Request, fault: RequestFault) -> Response:
    if isinstance(fault, Unauthorized):
        return PlainTextResponse(
            fault.message, fault.http_status, headers=_challenge(request, fault)
        )
    return Response(
        ews.render_fault(fault), fault.soap_status, headers=fault.headers, media_type=XML
    )


def _autodiscover_soap(request: Request, fault: RequestFault) -> Response:
    if isinstance(fault, Unauthorized):
        return PlainTextResponse(
            fault.message, fault.http_status, headers=_challenge(request, fault)
        )
    if not isinstance(fault, ad.AutodiscoverSoapError):
        fault = ad.AutodiscoverSoapError(fault.message, http_status=fault.http_status)
    return Response(ad.render_request_error(fault), status_code=fault.http_status, media_type=XML)


def _autodiscover_pox(request: Request, fault: RequestFault) -> Response:
    if isinstance(fault, Unauthorized):
        return PlainTextResponse(
            fault.message, fault.http_status, headers=_challenge(request, fault)
        )
    now = datetime.datetime.now(datetime.UTC)
    code, status = (
        (fault.pox_code, 200) if isinstance(fault, ad.PoxError) else (600, fault.http_status)
    )
    body = ad.render_pox_error(code, fault.message, node_name=socket.gethostname(), now=now)
    return Response(body, status_code=status, media_type=XML)


def _json(request: Request, fault: RequestFault) -> Response:
    document = {"error": {"code": fault.code, "message": fault.message}}
    return JSONResponse(document, fault.http_status, headers=_challenge(request, fault))


def _text(request: Request, fault: RequestFault) -> Response:
    return PlainTextResponse(fault.message, fault.http_status, headers=_challenge(request, fault))


RENDERERS: dict[str, Callable[[Request, RequestFault], Response]] = {
    "ews": _ews,
    "autodiscover-soap": _autodiscover_soap,
    "autodiscover-pox": _autodiscover_pox,
    "admin": _json,
    "json": _json,
    "public": _text,
    "other": _text,
}


def response_for(request: Request, exc: Exception) -> Response:
    """The answer to `exc` raised while serving `request` (see the module docstring)."""
    door = door_of(request.url.path)
    if isinstance(exc, ForgedRequest):
        log.warning("refused a forwarded request: %s", exc.reason)
        return PlainTextResponse(exc.reason, exc.http_status)
    if isinstance(exc, ClientDisconnect):
        exc = ClientGone("The client went away before its request was read.")
    if isinstance(exc, ClientGone):
        log.debug("%s: %s", request.url.path, exc.message)
    elif not isinstance(exc, RequestFault):
        log.error("unexpected error answering %s", request.url.path, exc_info=exc)
        exc = InternalError("An internal error occurred; it has been logged.")
    return RENDERERS[door](request, exc)


class FaultMiddleware:
    """Catches what an endpoint raises and answers it with `response_for` (once, if nothing
    was sent yet; after the answer began there is nothing left to tell the client)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            if started:
                log.error("error after the answer began for %s", scope.get("path"), exc_info=exc)
                return
            await response_for(Request(scope), exc)(scope, receive, send)
