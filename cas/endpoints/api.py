"""The JSON front doors: `POST /api/v1/availability` and the admin `POST /api/v1/cache/invalidate`.

Availability takes the same login as EWS, is throttled alike (429 with `Retry-After`), and
answers per mailbox with freshness (docs/contract.md). Invalidation needs the admin bearer token
(`admin_token_file`) and drops the named mailboxes everywhere: this site's cached data (or this
site's copies of another site's answers) and every other site's copies, told over the signed
node-to-node channel (`cas.changes.ChangeFeed.invalidate`); the answer reports per site what was
dropped and names any site that could not be told. Failures are raised and answered as JSON
errors by `cas.endpoints.errors`.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cas.codecs.json_api import parse_availability_request, render_availability_response
from cas.endpoints.body import BODY_READ_TIMEOUT_SECONDS, read_body
from cas.errors import InvalidValue, RequestFault, Unauthorized
from cas.model.availability import Limits, check_limits
from cas.observability import current_request_id
from cas.runtime import Runtime
from cas.throttle import Throttle

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 64 * 1024
ADMIN_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cas-admin"'}


class AdminApiDisabled(RequestFault):
    code = "AdminApiDisabled"
    http_status = 404


class ApiEndpoints:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        site: str,
        limits: Limits,
        max_body_bytes: int,
        admin_token: str | None,
        throttle: Throttle | None = None,
        body_timeout_seconds: float = BODY_READ_TIMEOUT_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.site = site
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.admin_token = admin_token
        self.throttle = throttle
        self.body_timeout_seconds = body_timeout_seconds

    async def availability(self, request: Request) -> Response:
        runtime = self.runtime()
        requester = await runtime.authenticator.authenticate(request, "api")
        body = await read_body(request, self.max_body_bytes, self.body_timeout_seconds)
        parsed = parse_availability_request(body)
        check_limits(parsed, self.limits)
        if self.throttle is not None:
            address = request.client.host if request.client else None
            await self.throttle.admit(
                requester, len(parsed.mailboxes), address=address, door="json"
            )
        service = runtime.availability
        ask = service.ask(parsed, requester, request_id=current_request_id() or "-")
        results = await service.availability(parsed, ask)
        return JSONResponse(render_availability_response(parsed, results))

    def _check_admin(self, request: Request) -> None:
        if self.admin_token is None:
            raise AdminApiDisabled("No admin token is configured on this node.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), self.admin_token.encode()
        ):
            raise Unauthorized("A valid admin bearer token is required.", ADMIN_CHALLENGE)

    async def invalidate(self, request: Request) -> Response:
        self._check_admin(request)
        try:
            doc = json.loads(await read_body(request, MAX_ADMIN_BODY, self.body_timeout_seconds))
        except ValueError:
            raise InvalidValue('The body must be JSON: {"addresses": [...]}') from None
        addresses = doc.get("addresses") if isinstance(doc, dict) else None
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise InvalidValue("'addresses' must be a list of addresses.")
        runtime = self.runtime()
        report: list[dict[str, Any]] = []
        for address in addresses:
            mailbox = runtime.sitemap.lookup(address)
            if mailbox is None:
                report.append({"address": address, "status": "unknown"})
                continue
            if runtime.changes is not None:
                sites = await runtime.changes.invalidate(mailbox)
            else:
                sites = {
                    self.site: {
                        "status": "dropped",
                        "keys": await runtime.availability.forget(mailbox),
                    }
                }
            untold = sorted(s for s, r in sites.items() if r["status"] not in ("dropped", "told"))
            report.append(
                {
                    "address": mailbox.address,
                    "site": mailbox.site,
                    "status": "invalidated" if not untold else "partly-invalidated",
                    "keys": sites.get(self.site, {}).get("keys"),
                    "sites": sites,
                    "untold": untold,
                }
            )
        log.info("cache invalidated for %d address(es)", len(addresses))
        return JSONResponse({"results": report})
