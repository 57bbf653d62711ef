"""The JSON front doors: `POST /api/v1/availability` and the admin `POST /api/v1/cache/invalidate`.

Availability takes the same login as EWS and answers per mailbox with freshness. Invalidation
needs the admin bearer token (`admin_token_file`); it drops this site's cached pieces of the
named mailboxes and this node's copies of other sites' answers about them. Errors are JSON with
a status that says whose fault it was and a message, never a traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cas.cache.pieces import mailbox_prefix, remote_prefix
from cas.cache.store import CacheStore, CacheUnavailable
from cas.codecs.json_api import parse_availability_request, render_availability_response
from cas.endpoints.ews import read_body
from cas.errors import BodyTooLarge, RequestFault, Unauthorized
from cas.model.availability import Limits, check_limits
from cas.observability import current_request_id
from cas.runtime import Runtime

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 64 * 1024


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class ApiEndpoints:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        store: CacheStore,
        *,
        site: str,
        limits: Limits,
        max_body_bytes: int,
        admin_token: str | None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.site = site
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.admin_token = admin_token

    async def availability(self, request: Request) -> Response:
        runtime = self.runtime()
        try:
            requester = await runtime.authenticator.authenticate(request, "api")
            parsed = parse_availability_request(await read_body(request, self.max_body_bytes))
            check_limits(parsed, self.limits)
        except Unauthorized as fault:
            return _error(
                fault.http_status, fault.code, fault.message, runtime.authenticator.challenge()
            )
        except (RequestFault, TimeoutError) as fault:
            status = fault.http_status if isinstance(fault, RequestFault) else 408
            code = fault.code if isinstance(fault, RequestFault) else "ErrorTimeoutExpired"
            return _error(status, code, str(fault))
        results = await runtime.availability.availability(
            parsed, requester, request_id=current_request_id() or "-"
        )
        return JSONResponse(render_availability_response(parsed, results))

    async def invalidate(self, request: Request) -> Response:
        if self.admin_token is None:
            return _error(404, "AdminApiDisabled", "No admin token is configured on this node.")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), self.admin_token.encode()
        ):
            return _error(
                401,
                "ErrorAccessDenied",
                "A valid admin bearer token is required.",
                {"WWW-Authenticate": 'Bearer realm="cas-admin"'},
            )
        try:
            doc = json.loads(await read_body(request, MAX_ADMIN_BODY))
        except (BodyTooLarge, TimeoutError) as exc:
            return _error(413, "ErrorInvalidRequest", str(exc))
        except ValueError:
            return _error(400, "ErrorInvalidRequest", 'The body must be JSON: {"addresses": [...]}')
        addresses = doc.get("addresses") if isinstance(doc, dict) else None
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            return _error(400, "ErrorInvalidRequest", "'addresses' must be a list of addresses.")
        sitemap = self.runtime().sitemap
        report = []
        for address in addresses:
            mailbox = sitemap.lookup(address)
            if mailbox is None:
                report.append({"address": address, "status": "unknown"})
                continue
            try:
                dropped = 0
                if mailbox.site == self.site:
                    for backend in self.runtime().backends.values():
                        forget = getattr(backend, "forget_local", None)
                        if forget is not None:
                            forget(mailbox.address)
                    dropped += await self.store.delete_matching(
                        mailbox_prefix(self.site, mailbox.address)
                    )
                dropped += await self.store.delete_matching(
                    remote_prefix(mailbox.site, mailbox.address)
                )
            except CacheUnavailable as exc:
                report.append(
                    {
                        "address": mailbox.address,
                        "status": "cache-unavailable",
                        "message": exc.message,
                    }
                )
                continue
            report.append({"address": mailbox.address, "status": "invalidated", "keys": dropped,
                           "site": mailbox.site})  # fmt: skip
        log.info("cache invalidated for %d address(es)", len(addresses))
        return JSONResponse({"results": report})
