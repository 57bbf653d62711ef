"""The Autodiscover front doors: SOAP (`autodiscover.svc`), POX (`autodiscover.xml`) and JSON.

Each parses with its codec, asks `AutodiscoverService` for one answer per address and renders
it with the same codec; a refused request is answered in the protocol's own error form by
`cas.endpoints.errors`. SOAP and POX require a login like EWS does (an unauthenticated probe
learns the scheme from the 401); the JSON door is anonymous, as Exchange's is.
"""

from __future__ import annotations

import datetime
import logging
import socket
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cas.codecs import autodiscover as ad
from cas.endpoints.body import BODY_READ_TIMEOUT_SECONDS, read_body
from cas.runtime import Runtime

log = logging.getLogger(__name__)

XML = "text/xml; charset=utf-8"
MAX_AUTODISCOVER_BODY = 64 * 1024


class AutodiscoverEndpoints:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        node_name: str | None = None,
        body_timeout_seconds: float = BODY_READ_TIMEOUT_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name or socket.gethostname()
        self.body_timeout_seconds = body_timeout_seconds

    async def soap(self, request: Request) -> Response:
        runtime = self.runtime()
        await runtime.authenticator.authenticate(request, "autodiscover")
        body = await read_body(request, MAX_AUTODISCOVER_BODY, self.body_timeout_seconds)
        parsed = ad.parse_get_user_settings(body)
        service = runtime.autodiscover
        answers = [await service.answer(address) for address in parsed.mailboxes]
        return Response(ad.render_get_user_settings(parsed, answers), media_type=XML)

    async def pox(self, request: Request) -> Response:
        now = datetime.datetime.now(datetime.UTC)
        runtime = self.runtime()
        await runtime.authenticator.authenticate(request, "autodiscover")
        body = await read_body(request, MAX_AUTODISCOVER_BODY, self.body_timeout_seconds)
        parsed = ad.parse_pox_request(body)
        service = runtime.autodiscover
        if parsed.email is not None:
            answer = await service.answer(parsed.email)
        else:
            assert parsed.legacy_dn is not None
            answer = await service.answer_legacy_dn(parsed.legacy_dn)
        return Response(
            ad.render_pox(parsed, answer, node_name=self.node_name, now=now), media_type=XML
        )

    async def json(self, request: Request) -> Response:
        await self.runtime().authenticator.authenticate(request, "autodiscover_json")
        try:
            parsed = ad.parse_json_path(request.path_params["address"], request.query_params)
        except ad.JsonAutodiscoverError as error:
            status, body = ad.render_json_error(error)
            return JSONResponse(body, status_code=status)
        answer = await self.runtime().autodiscover.answer(parsed.address)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        if isinstance(answer, ad.UserSettings):
            origin = answer.ews_url.rsplit("/EWS/", 1)[0]
        status, body = ad.render_json(
            parsed.protocol, answer, autodiscover_url=origin + "/autodiscover/autodiscover.xml"
        )
        headers = {"Location": body["Url"]} if status == 302 and "Url" in body else None
        return JSONResponse(body, status_code=status, headers=headers)
