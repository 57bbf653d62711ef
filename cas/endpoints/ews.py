"""The EWS front door: `POST /EWS/Exchange.asmx`.

Reads the body under a size limit, authenticates (a client's login, or a node's signed token
for a forwarded request), throttles a client's lookups (`cas.throttle`), dispatches on the SOAP Body's first element (exchangelib sends no
SOAPAction) and answers with the codec's bytes. Failures are raised; `cas.endpoints.errors`
answers them as SOAP faults with the status `cas.errors` assigns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from cas.codecs import ews
from cas.codecs.ews.freshness import freshness_summary
from cas.codecs.ews.memo import decode_availability, decode_envelope
from cas.endpoints.body import BODY_READ_TIMEOUT_SECONDS, read_body
from cas.errors import MailboxError, UnknownOperation
from cas.model.availability import Limits, check_limits
from cas.model.projection import Proof, Requester
from cas.observability import adopt, current_request_id
from cas.runtime import Runtime
from cas.throttle import Throttle
from cas.trust import BUDGET_HEADER, HEADER, ForgedRequest, PeerTrust

log = logging.getLogger(__name__)

XML = "text/xml; charset=utf-8"
FRESHNESS_HEADER = "X-CAS-Freshness"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: a client (hop 0, from `address`) or a node forwarding for a
    client (hop >= 1: already throttled where the client asked)."""

    requester: Requester
    hop: int = 0
    budget_seconds: float | None = None
    address: str | None = None


Handler = Callable[[Runtime, ews.SoapRequest, Caller, dict[str, str]], Awaitable[bytes]]


class EwsEndpoint:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        trust: PeerTrust | None,
        limits: Limits,
        max_body_bytes: int,
        year: Callable[[], int],
        throttle: Throttle | None = None,
        body_timeout_seconds: float = BODY_READ_TIMEOUT_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.body_timeout_seconds = body_timeout_seconds
        self.trust = trust
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.year = year
        self.throttle = throttle
        self.handlers: dict[str, Handler] = {
            "GetUserAvailabilityRequest": self.get_user_availability,
            "GetServerTimeZones": self.get_server_time_zones,
            "ConvertId": self.convert_id,
        }

    async def handle(self, request: Request) -> Response:
        runtime = self.runtime()  # one configuration generation for the whole request
        token = request.headers.get(HEADER)
        if token is None:
            requester = await runtime.authenticator.authenticate(request, "ews")
            caller = Caller(requester, address=request.client.host if request.client else None)
        body = await read_body(request, self.max_body_bytes, self.body_timeout_seconds)
        if token is not None:
            caller = self.verify_peer(token, request, body)
        soap = decode_envelope(body)
        handler = self.handlers.get(soap.operation)
        if handler is None:
            raise UnknownOperation(
                f"The operation {soap.operation!r} is not supported by this server; "
                f"supported: {', '.join(self.handlers)}."
            )
        headers: dict[str, str] = {}
        body_out = await handler(runtime, soap, caller, headers)
        return Response(body_out, media_type=XML, headers=headers)

    def verify_peer(self, token: str, request: Request, body: bytes) -> Caller:
        """The caller a node's signed token vouches for, or `ForgedRequest`."""
        if self.trust is None:
            raise ForgedRequest("this node accepts no forwarded requests (no cluster secret)", 401)
        claims = self.trust.verify(token, method="POST", path=request.url.path, body=body)
        adopt(claims.request_id)
        budget = request.headers.get(BUDGET_HEADER, "")
        return Caller(
            Requester(claims.requester, frozenset(claims.groups), Proof.PEER),
            hop=claims.hop,
            budget_seconds=int(budget) / 1000 if budget.isdigit() else None,
        )

    async def get_user_availability(
        self, runtime: Runtime, soap: ews.SoapRequest, caller: Caller, headers: dict[str, str]
    ) -> bytes:
        request = decode_availability(soap)
        check_limits(request, self.limits)
        if not request.free_busy:
            # Suggestions alone: nobody's calendar is needed for the (error) answer.
            log.info("GetUserAvailability: suggestions only, %d mailboxes", len(request.mailboxes))
            return ews.render_get_user_availability(request, ())
        if self.throttle is not None and caller.hop == 0:
            await self.throttle.admit(
                caller.requester, len(request.mailboxes), address=caller.address, door="ews"
            )
        started = time.monotonic()
        service = runtime.availability
        ask = service.ask(
            request,
            caller.requester,
            hop=caller.hop,
            budget_seconds=caller.budget_seconds,
            request_id=current_request_id() or "-",
        )
        results = await service.availability(request, ask)
        failed = sum(1 for r in results if isinstance(r, MailboxError))
        log.info(
            "GetUserAvailability %s: %d mailboxes, %d failed, hop %d, %.0f ms",
            request.view.value,
            len(results),
            failed,
            caller.hop,
            (time.monotonic() - started) * 1000,
        )
        summary = freshness_summary(results)
        if summary:
            headers[FRESHNESS_HEADER] = summary
        return ews.render_get_user_availability(request, results)

    async def get_server_time_zones(
        self, runtime: Runtime, soap: ews.SoapRequest, caller: Caller, headers: dict[str, str]
    ) -> bytes:
        return ews.render_get_server_time_zones(
            ews.parse_get_server_time_zones(soap), year=self.year()
        )

    async def convert_id(
        self, runtime: Runtime, soap: ews.SoapRequest, caller: Caller, headers: dict[str, str]
    ) -> bytes:
        return ews.render_convert_id(soap)
