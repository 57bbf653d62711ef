"""The old front door on every node: `GET /public/?cmd=freebusy` (OWA-era free/busy XML).

Old clients (DavMail, Zimbra, Ximian) ask in this format; the node answers for any mailbox of
the organisation through the normal planning (local, legacy, other sites), merged only, and
renders the `WM` XML: "All Attendees" first, then one item per requested user, in order, so
DavMail's read of the last `fbdata` finds the user. A mailbox that could not be answered, or
that the requester may not see (permission level None), gets all `4`s (no data): never free.
Lookups are throttled as at the other doors (429 with `Retry-After`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC

from starlette.requests import Request
from starlette.responses import Response

from cas.codecs.public_freebusy import (
    LegacyItem,
    parse_freebusy_query,
    render_freebusy_response,
)
from cas.errors import MailboxError, RequestFault
from cas.model.availability import (
    AvailabilityRequest,
    FreeBusyView,
    Limits,
    MailboxQuery,
    check_limits,
)
from cas.model.freebusy import MailboxData, merged_free_busy, no_data
from cas.observability import current_request_id
from cas.runtime import Runtime
from cas.throttle import Throttle

log = logging.getLogger(__name__)


class LegacyFrontDoor:
    def __init__(
        self, runtime: Callable[[], Runtime], *, limits: Limits, throttle: Throttle | None = None
    ) -> None:
        self.runtime = runtime
        self.limits = limits
        self.throttle = throttle

    async def freebusy(self, request: Request) -> Response:
        runtime = self.runtime()
        requester = await runtime.authenticator.authenticate(request, "public")
        commands = [v for k, v in request.query_params.multi_items() if k.casefold() == "cmd"]
        if not commands or commands[0].strip().casefold() != "freebusy":
            raise RequestFault("This front door answers cmd=freebusy only.")
        query = parse_freebusy_query(
            request.query_params, max_window_days=self.limits.max_window_days
        )
        asked = AvailabilityRequest(
            mailboxes=tuple(MailboxQuery(user) for user in query.users),
            window=query.window,
            interval_minutes=query.interval_minutes,
            view=FreeBusyView.MERGED_ONLY,
            tz=UTC,
        )
        check_limits(asked, self.limits)
        if self.throttle is not None:
            address = request.client.host if request.client else None
            await self.throttle.admit(requester, len(query.users), address=address, door="public")
        service = runtime.availability
        ask = service.ask(asked, requester, request_id=current_request_id() or "-")
        results = await service.availability(asked, ask)
        items = []
        for user, result in zip(query.users, results):
            mailbox = runtime.sitemap.lookup(user)
            name = (mailbox.display_name if mailbox else None) or user
            email = mailbox.address if mailbox else user
            if isinstance(result, MailboxError):
                digits = no_data(query.window, query.interval_minutes)
            else:
                digits = _digits(result, asked)
            items.append(LegacyItem(name, email, digits))
        return Response(render_freebusy_response(query, items), media_type="text/xml")


def _digits(data: MailboxData, ask: AvailabilityRequest) -> str:
    if data.merged is not None:
        return data.merged
    return merged_free_busy(data.events, ask.window, ask.interval_minutes, data.coverage)
