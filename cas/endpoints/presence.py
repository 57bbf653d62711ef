"""The presence front door: one address, many addresses, and the stream of changes.

* `GET /api/v1/presence/{address}`: the view of one mailbox (`cas.codecs.presence_json`), or
  with `Accept: application/pidf+xml` a PIDF document with RPID activities
  (`cas.codecs.pidf`). An unknown address is 404, a mailbox the requester may not see 403.
* `POST /api/v1/presence` `{"addresses": [...]}`: one view per address, in order, across
  sites; an unknown address or one the requester may not see is an entry with `error`.
* `GET /api/v1/presence/stream?address=...&address=...`: Server-Sent Events
  (`cas.presence.hub`): `retry:` first, then one `presence` event per address (or what a
  resumed stream missed), then one per change; a comment line every heartbeat; an event
  `draining` with a `retry:` hint when the node is leaving. `Last-Event-ID` (header, or the
  `lastEventId` query parameter) resumes. Too many addresses: 400; an unknown one: 404; past
  `presence_max_streams` or while draining: 503 with `Retry-After`.

Every request is authenticated and throttled as the JSON API is (one token per address);
faults are raised and answered by `cas.endpoints.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from cas.codecs.pidf import PIDF_MEDIA_TYPE, render_pidf
from cas.codecs.presence_json import parse_presence_request, view_json
from cas.endpoints.body import read_body
from cas.errors import InvalidValue, NoAccess, TooManyAddresses, UnknownAddress
from cas.model.projection import Requester
from cas.presence.hub import PresenceHub
from cas.runtime import Runtime
from cas.throttle import Throttle
from sitemap.model import Mailbox

MAX_BODY = 256 * 1024
RETRY_MS = 2000  # how soon an EventSource reconnects after the stream ends


class PresenceEndpoints:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        hub: PresenceHub,
        *,
        max_addresses: int,
        heartbeat_seconds: float,
        throttle: Throttle | None = None,
    ) -> None:
        self.runtime = runtime
        self.hub = hub
        self.max_addresses = max_addresses
        self.heartbeat_seconds = heartbeat_seconds
        self.throttle = throttle

    async def _requester(self, request: Request, count: int) -> Requester:
        requester = await self.runtime().authenticator.authenticate(request, "api")
        if self.throttle is not None:
            address = request.client.host if request.client else None
            await self.throttle.admit(requester, count, address=address, door="json")
        return requester

    def _mailbox(self, address: str) -> Mailbox:
        mailbox = self.runtime().sitemap.lookup(address)
        if mailbox is None:
            raise UnknownAddress(f"No mailbox has the address {address!r}.")
        return mailbox

    async def one(self, request: Request) -> Response:
        address = request.path_params["address"]
        requester = await self._requester(request, 1)
        mailbox = self._mailbox(address)
        (view,) = await self.hub.views(requester, [mailbox])
        if view.error is not None and view.error.code == NoAccess.code:
            raise NoAccess(f"You may not see the presence of {mailbox.address}.")
        if PIDF_MEDIA_TYPE in request.headers.get("accept", ""):
            return Response(render_pidf(view), media_type=PIDF_MEDIA_TYPE)
        return JSONResponse(view_json(view))

    async def many(self, request: Request) -> Response:
        addresses = parse_presence_request(await read_body(request, MAX_BODY), self.max_addresses)
        requester = await self._requester(request, len(addresses))
        sitemap = self.runtime().sitemap
        found = {a: sitemap.lookup(a) for a in addresses}
        known = list({m.address: m for m in found.values() if m is not None}.values())
        views = {v.address: view_json(v) for v in await self.hub.views(requester, known)}
        entries = []
        for address in addresses:
            mailbox = found[address]
            if mailbox is None:
                message = f"No mailbox has the address {address!r}."
                entries.append(
                    {"address": address, "error": {"code": UnknownAddress.code, "message": message}}
                )
            else:
                entries.append(views[mailbox.address])
        return JSONResponse({"value": entries})

    async def stream(self, request: Request) -> Response:
        addresses = [a.strip() for a in request.query_params.getlist("address") if a.strip()]
        if not addresses:
            raise InvalidValue("Name at least one address: ?address=...")
        if len(addresses) > self.max_addresses:
            raise TooManyAddresses(
                f"The stream names {len(addresses)} addresses; at most {self.max_addresses} "
                "are allowed."
            )
        requester = await self._requester(request, len(addresses))
        mailboxes = [self._mailbox(a) for a in addresses]
        last = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
        sub = await self.hub.subscribe(requester, mailboxes, last)
        heartbeat = self.heartbeat_seconds
        hub = self.hub

        async def frames() -> AsyncIterator[str]:
            try:
                yield f"retry: {RETRY_MS}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(sub.queue.get(), heartbeat)
                    except TimeoutError:
                        yield ": heartbeat\n\n"
                        continue
                    if item is None:
                        return
                    yield item.frame
            finally:
                hub.unsubscribe(sub)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
