"""The CalDAV mailbox backend: reads a mailbox's calendar from a CalDAV server (RFC 4791).

`CalDavBackend.fetch` sends one calendar-query REPORT per mailbox (Depth: 1, VEVENTs overlapping
the window, `getetag` + `calendar-data`), and expands the answer with `cas.sources.ical`. Requests
run in parallel up to `max_connections` per backend; every httpx, HTTP and data failure becomes a
`BackendFailure` naming the URL, in one place (`_edge`).

Why the events are expanded here and not by the server: a free-busy-query (RFC 4791 §7.10) answers
only FBTYPE periods, so it can carry neither OOF (X-MICROSOFT-CDO-BUSYSTATUS) nor the subject,
location and flags a Detailed view needs, and it folds cancelled events into FREE; server-side
`<C:expand>` is optional, implemented unevenly across servers, and returns UTC instances without
their overrides' RECURRENCE-ID or the original zone. The stored objects with client-side expansion
give the same answer from every server. The server's time-range is widened by a day on each side
because servers compare floating and all-day times as UTC while we read them in the owner's zone;
`ical` trims to the exact window.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from urllib.parse import quote, urljoin

import httpx

from cas.errors import BackendFailure, CalendarNotFound
from cas.model.freebusy import (
    MailboxData,
    Window,
    WorkingHours,
    WorkingPeriod,
    default_working_hours,
)
from cas.sources.base import http_edge
from cas.sources.ical import (
    CalendarDataError,
    events_from_calendar,
    parse_ctag,
    parse_multistatus,
)
from sitemap.model import (
    CalDavBackendConfig,
    Mailbox,
    Site,
    WorkingHoursSpec,
)

QUERY_MARGIN = timedelta(days=1)

# HTTP status of a REPORT answer -> what it means for the mailbox.
_STATUS_MESSAGES: dict[int, str] = {
    401: "backend refused credentials (HTTP 401) at {url}",
    403: "backend refused credentials (HTTP 403) at {url}",
    404: "calendar not found at {url}",
}


CTAG_PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">'
    b"<D:prop><CS:getctag/><D:sync-token/></D:prop></D:propfind>"
)


def render_calendar_query(window: Window) -> bytes:
    """The REPORT body: VEVENTs overlapping `window` (sent in UTC), with etag and data."""
    start, end = (_utc_stamp(t) for t in (window.start, window.end))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:time-range start="{start}" end="{end}"/>'
        "</C:comp-filter></C:comp-filter></C:filter>"
        "</C:calendar-query>"
    ).encode()


def _utc_stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def working_hours_of(
    mailbox: Mailbox, default_tz: str, site_default: WorkingHoursSpec | None = None
) -> WorkingHours:
    """The mailbox's working hours, else the site's, else 08:00-17:00 Mon-Fri, in its zone."""
    zone = mailbox.timezone or default_tz
    spec = mailbox.working_hours or site_default
    if spec is None:
        return default_working_hours(zone)
    return WorkingHours(
        zone, (WorkingPeriod(tuple(spec.days), spec.start_minute, spec.end_minute),)
    )


class CalDavBackend:
    """A `MailboxReader` over one CalDAV server.

    `default_tz` is the zone of mailboxes that name none (floating and all-day events are read
    in the mailbox's zone); `site_working_hours` applies to mailboxes without their own. Pass
    `client` to share a pool or to instrument the transport; the backend closes only a client
    it created. `CalDavBackend.for_site(site)` takes both defaults from the site.
    """

    def __init__(
        self,
        config: CalDavBackendConfig,
        *,
        client: httpx.AsyncClient | None = None,
        default_tz: str = "UTC",
        site_working_hours: WorkingHoursSpec | None = None,
    ) -> None:
        if config.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {config.max_connections}")
        self.config = config
        self.default_tz = default_tz
        self.site_working_hours = site_working_hours
        self._owns_client = client is None
        self._client = client if client is not None else self._make_client(config)
        self._gate = asyncio.Semaphore(config.max_connections)

    @classmethod
    def for_site(cls, site: Site, *, client: httpx.AsyncClient | None = None) -> CalDavBackend:
        if site.caldav is None:
            raise ValueError(f"site {site.name!r} has no CalDAV backend")
        return cls(
            site.caldav,
            client=client,
            default_tz=site.timezone,
            site_working_hours=site.working_hours,
        )

    @staticmethod
    def _make_client(config: CalDavBackendConfig) -> httpx.AsyncClient:
        verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=config.verify_tls)
            if isinstance(config.verify_tls, str)
            else config.verify_tls
        )
        return httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
            verify=verify,
            trust_env=False,  # a backend on the site network is never reached through a proxy
        )

    def calendar_url(self, mailbox: Mailbox) -> str:
        """The mailbox's own `calendar_url`, else `url` joined with the `calendar_path` template."""
        if mailbox.calendar_url:
            return mailbox.calendar_url
        path = self.config.calendar_path.format(
            address=quote(mailbox.address, safe="@+"),
            local=quote(mailbox.local_part, safe="+"),
        )
        base = self.config.url if self.config.url.endswith("/") else self.config.url + "/"
        return urljoin(base, path.lstrip("/"))

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        url = self.calendar_url(mailbox)
        query = Window(window.start - QUERY_MARGIN, window.end + QUERY_MARGIN)
        async with self._gate:
            with self._edge(url):
                async with asyncio.timeout(self.config.timeout_seconds):
                    response = await self._read_only_request(
                        "REPORT",
                        url,
                        render_calendar_query(query),
                        {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'},
                    )
                self._expect_207(response, url)
                objects = parse_multistatus(response.content)
        with self._edge(url):
            events = events_from_calendar(objects, window, mailbox.timezone or self.default_tz)
            try:
                hours = working_hours_of(mailbox, self.default_tz, self.site_working_hours)
            except ValueError as exc:
                raise BackendFailure(f"invalid working hours for {mailbox.address}: {exc}") from exc
        return MailboxData(events=tuple(events), working_hours=hours)

    async def ctag(self, mailbox: Mailbox) -> str | None:
        """The calendar's change tag (CalendarServer `getctag`, else WebDAV `sync-token`).

        One small PROPFIND: when it equals the tag a cached copy was read under, the calendar
        has not changed. None when the server offers neither.
        """
        url = self.calendar_url(mailbox)
        async with self._gate:
            with self._edge(url):
                async with asyncio.timeout(self.config.timeout_seconds):
                    response = await self._read_only_request(
                        "PROPFIND",
                        url,
                        CTAG_PROPFIND,
                        {"Depth": "0", "Content-Type": 'application/xml; charset="utf-8"'},
                    )
                self._expect_207(response, url)
                return parse_ctag(response.content)

    async def _read_only_request(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """A read-only request, sent once more if the connection broke before an answer.

        Servers that close connections under bursts (Radicale's HTTP/1.0 server) would
        otherwise fail a mailbox for nothing; a timeout is not retried (the caller's budget).
        """
        try:
            return await self._client.request(
                method, url, content=body, headers=headers, auth=self._auth()
            )
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            return await self._client.request(
                method, url, content=body, headers=headers, auth=self._auth()
            )

    @staticmethod
    def _expect_207(response: httpx.Response, url: str) -> None:
        if response.status_code == 207:
            return
        template = _STATUS_MESSAGES.get(
            response.status_code, "unexpected HTTP {status} (expected 207) from {url}"
        )
        error = CalendarNotFound if response.status_code == 404 else BackendFailure
        raise error(template.format(url=url, status=response.status_code))

    def _auth(self) -> httpx.BasicAuth | None:
        if self.config.username is None:
            return None
        password = self.config.password.resolve() if self.config.password is not None else ""
        return httpx.BasicAuth(self.config.username, password)

    @contextmanager
    def _edge(self, url: str) -> Iterator[None]:
        """Translate every failure of talking to the server at `url` into `BackendFailure`."""
        try:
            with http_edge("CalDAV backend", url, self.config.timeout_seconds):
                yield
        except CalendarDataError as exc:
            raise BackendFailure(f"unusable calendar data from {url}: {exc}") from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> CalDavBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["CalDavBackend", "render_calendar_query", "working_hours_of"]
