"""The Autodiscover front doors: SOAP (`autodiscover.svc`), POX (`autodiscover.xml`) and JSON.

Each parses with its codec, asks `AutodiscoverService` for one answer per address and renders
it with the same codec, so every failure is answered in the protocol's own error form. SOAP and
POX require a login like EWS does (an unauthenticated probe learns the scheme from the 401);
the JSON door is anonymous by default, as Exchange's is (`auth.anonymous` decides).
"""

from __future__ import annotations

import datetime
import logging
import socket
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cas.codecs import autodiscover as ad
from cas.endpoints.ews import read_body
from cas.errors import BodyTooLarge, Unauthorized
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
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name or socket.gethostname()

    @staticmethod
    def _challenge(runtime: Runtime, fault: Unauthorized) -> Response:
        return Response(
            fault.message, status_code=fault.http_status, headers=runtime.authenticator.challenge()
        )

    async def soap(self, request: Request) -> Response:
        runtime = self.runtime()
        try:
            await runtime.authenticator.authenticate(request, "autodiscover")
            body = await read_body(request, MAX_AUTODISCOVER_BODY)
            parsed = ad.parse_get_user_settings(body)
        except Unauthorized as fault:
            return self._challenge(runtime, fault)
        except (BodyTooLarge, TimeoutError) as exc:
            error = ad.AutodiscoverSoapError(str(exc), http_status=413)
            return Response(ad.render_request_error(error), status_code=413, media_type=XML)
        except ad.AutodiscoverSoapError as error:
            return Response(
                ad.render_request_error(error), status_code=error.http_status, media_type=XML
            )
        service = runtime.autodiscover
        answers = [await service.answer(address) for address in parsed.mailboxes]
        return Response(ad.render_get_user_settings(parsed, answers), media_type=XML)

    async def pox(self, request: Request) -> Response:
        now = datetime.datetime.now(datetime.UTC)
        runtime = self.runtime()
        try:
            await runtime.authenticator.authenticate(request, "autodiscover")
            body = await read_body(request, MAX_AUTODISCOVER_BODY)
            parsed = ad.parse_pox_request(body)
        except Unauthorized as fault:
            return self._challenge(runtime, fault)
        except (BodyTooLarge, TimeoutError):
            return Response(
                ad.render_pox_error(
                    600, "Request body too large.", node_name=self.node_name, now=now
                ),
                status_code=413,
                media_type=XML,
            )
        except ad.PoxError as error:
            rendered = ad.render_pox_error(
                error.pox_code, error.message, node_name=self.node_name, now=now
            )
            return Response(rendered, media_type=XML)
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
        runtime = self.runtime()
        try:
            await runtime.authenticator.authenticate(request, "autodiscover_json")
        except Unauthorized as fault:
            return self._challenge(runtime, fault)
        try:
            parsed = ad.parse_json_path(request.path_params["address"], request.query_params)
        except ad.JsonAutodiscoverError as error:
            status, body = ad.render_json_error(error)
            return JSONResponse(body, status_code=status)
        answer = await runtime.autodiscover.answer(parsed.address)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        if isinstance(answer, ad.UserSettings):
            origin = answer.ews_url.rsplit("/EWS/", 1)[0]
        status, body = ad.render_json(
            parsed.protocol, answer, autodiscover_url=origin + "/autodiscover/autodiscover.xml"
        )
        headers = {"Location": body["Url"]} if status == 302 and "Url" in body else None
        return JSONResponse(body, status_code=status, headers=headers)
