"""The CalDAV mailbox backend: reads a mailbox's calendars from a CalDAV server (RFC 4791).

`CalDavBackend.fetch` finds the calendars that count for the mailbox (`cas.sources.discovery`:
a template, the principal's calendar home, or a principal search), brings the node's copy of
each in step with the server, picks the objects that can touch the window
(`cas.sources.calendar_copy`), and expands them with `cas.sources.ical`. Requests run in parallel
up to `max_connections` per backend; every httpx, HTTP and data failure becomes a
`BackendFailure` naming the URL, in one place (`_edge`).

Why the node keeps a copy instead of asking for a time range: servers filter `calendar-query`
time ranges of recurring objects with bugs of their own (Xandikos 0.4.10 leaves out an object
whose only occurrence in the range comes from RDATE, and that time showed as free). So the
server is asked only what changed: a sync-collection REPORT (RFC 6578) from the last token,
whose answer is empty when nothing did; objects it names without data are fetched with
calendar-multiget. A server without sync-collection is read whole (calendar-query without a
time range) on every fetch. An invalid token starts the copy afresh. At most
`MAX_KEPT_CALENDARS` copies are kept per backend, the least recently used dropped first.

Why the events are expanded here and not by the server: a free-busy-query (RFC 4791 §7.10) answers
only FBTYPE periods, so it can carry neither OOF (X-MICROSOFT-CDO-BUSYSTATUS) nor the subject,
location and flags a Detailed view needs, and it folds cancelled events into FREE; server-side
`<C:expand>` is optional, implemented unevenly across servers, and returns UTC instances without
their overrides' RECURRENCE-ID or the original zone. The stored objects with client-side expansion
give the same answer from every server.

Authentication is HTTP Basic. A server that offers only other schemes (Digest, Negotiate) gets a
`BackendFailure` naming what its `WWW-Authenticate` asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from urllib.parse import unquote, urlsplit

import httpx

from cas.errors import BackendFailure, CalendarNotFound, CasError
from cas.model.freebusy import (
    MailboxData,
    Window,
    working_hours_of,
)
from cas.sources.base import http_edge
from cas.sources.calendar_copy import CalendarCopy
from cas.sources.davxml import (
    CTAG_PROPFIND,
    parse_ctag,
    parse_multistatus,
    parse_sync_collection,
    render_calendar_query,
    render_multiget,
    render_sync_collection,
)
from cas.sources.discovery import CalendarFinder
from cas.sources.ical import CalendarDataError, CalendarObject, events_from_calendar
from sitemap.model import (
    CalDavBackendConfig,
    Mailbox,
    Site,
    WorkingHoursSpec,
)

# The window a copy's objects are picked for is widened by a day on each side: floating and
# all-day times are placed in the owner's zone only at expansion; `ical` trims to the window.
QUERY_MARGIN = timedelta(days=1)
MAX_KEPT_CALENDARS = 5000
MAX_SYNC_ROUNDS = 50  # a server that truncates sync answers is asked again, this many times
_XML = {"Content-Type": 'application/xml; charset="utf-8"'}

# HTTP status of an answer -> what it means for the mailbox.
_STATUS_MESSAGES: dict[int, str] = {
    401: "backend refused credentials (HTTP 401) at {url}",
    403: "backend refused credentials (HTTP 403) at {url}",
    404: "calendar not found at {url}",
}


class _SyncUnsupported(CasError):
    """The server does not answer sync-collection on this calendar."""


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
        self._finder = CalendarFinder(config, self._dav)
        self._copies: OrderedDict[str, CalendarCopy] = OrderedDict()

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
        """Where the mailbox's calendar data starts: its own `calendar_url`; else the template's
        calendar (`discovery: template`), its principal (`principal`) or the server (`search`).
        """
        if mailbox.calendar_url or self.config.discovery == "template":
            return self._finder.template_url(mailbox)
        if self.config.discovery == "principal":
            return self._finder.principal_url(mailbox)
        return self.config.url

    async def calendars(self, mailbox: Mailbox) -> tuple[str, ...]:
        """The URLs of the calendars that count for `mailbox` (found, or kept from before)."""
        with self._edge(self.calendar_url(mailbox)):
            return await self._finder.calendars(mailbox)

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        query = Window(window.start - QUERY_MARGIN, window.end + QUERY_MARGIN)
        calendars = await self.calendars(mailbox)
        try:
            objects = await self._read_calendars(calendars, query)
        except CalendarNotFound:
            if calendars == (self._finder.template_url(mailbox),):
                raise
            self._finder.forget(mailbox)  # a discovered calendar is gone: look again, once
            objects = await self._read_calendars(await self.calendars(mailbox), query)
        with self._edge(calendars[0] if calendars else self.config.url):
            events = events_from_calendar(objects, window, mailbox.timezone or self.default_tz)
            try:
                hours = working_hours_of(mailbox, self.default_tz, self.site_working_hours)
            except ValueError as exc:
                raise BackendFailure(f"invalid working hours for {mailbox.address}: {exc}") from exc
        return MailboxData(events=tuple(events), working_hours=hours)

    async def ctag(self, mailbox: Mailbox) -> str | None:
        """A change tag of the mailbox's calendars (CalendarServer `getctag`, else `sync-token`).

        One small PROPFIND per calendar: when the tag equals the one a cached copy was read
        under, nothing changed. With several calendars the tag is a digest of all of them (and
        of which calendars they are). None when a calendar offers neither.
        """
        calendars = await self.calendars(mailbox)
        tags = await asyncio.gather(*(self._ctag_of(url) for url in calendars))
        return _combined(calendars, tags)

    def version_of(self, mailbox: Mailbox) -> str | None:
        """The version of the data the last read of `mailbox` gave (the sync tokens its calendar
        copies were brought to), without asking the server; None when not known."""
        calendars = self._finder.known(mailbox)
        if not calendars:
            return None
        copies = [self._copies.get(url) for url in calendars]
        return _combined(calendars, [c.token if c is not None else None for c in copies])

    def mailbox_for(self, path: str, mailboxes: Iterable[Mailbox]) -> Mailbox | None:
        """The mailbox whose calendar holds `path` (a URL path, or a storage path ending in
        one, as a server's storage hook reports a changed collection or item)."""
        wanted = unquote(path)
        for mailbox in mailboxes:
            for url in self._finder.known(mailbox) or (self._finder.template_url(mailbox),):
                prefix = unquote(urlsplit(url).path)
                if prefix.rstrip("/") and (
                    wanted.startswith(prefix)
                    or wanted.rstrip("/") == prefix.rstrip("/")
                    or f"/collection-root{prefix}" in wanted
                ):
                    return mailbox
        return None

    async def _ctag_of(self, url: str) -> str | None:
        body = await self._dav("PROPFIND", url, CTAG_PROPFIND, "0")
        with self._edge(url):
            return parse_ctag(body)

    # --- keeping copies in step ----------------------------------------------------------------

    async def _read_calendars(
        self, calendars: Sequence[str], query: Window
    ) -> list[CalendarObject]:
        found = await asyncio.gather(*(self._read_calendar(url, query) for url in calendars))
        return [item for objects in found for item in objects]

    async def _read_calendar(self, url: str, query: Window) -> list[CalendarObject]:
        copy = self._copy(url)
        async with copy.lock:
            if copy.sync_supported is not False:
                try:
                    await self._sync(copy)
                    copy.sync_supported = True
                    return copy.candidates(query)
                except _SyncUnsupported:
                    pass
            body = await self._dav("REPORT", url, render_calendar_query(None), "1")
            with self._edge(url):
                copy.replace_all(parse_multistatus(body))
            copy.sync_supported = False  # known only once the whole read worked
            return copy.candidates(query)

    def _copy(self, url: str) -> CalendarCopy:
        copy = self._copies.get(url)
        if copy is None:
            copy = self._copies[url] = CalendarCopy(url)
            while len(self._copies) > MAX_KEPT_CALENDARS:
                self._copies.popitem(last=False)
        self._copies.move_to_end(url)
        return copy

    async def _sync(self, copy: CalendarCopy) -> None:
        """Apply what changed since `copy.token` (everything, without a token)."""
        url = copy.url
        for _ in range(MAX_SYNC_ROUNDS):
            response = await self._send("REPORT", url, render_sync_collection(copy.token), "0")
            if response.status_code != 207:
                if copy.token is not None and b"valid-sync-token" in response.content:
                    copy.reset()  # the server forgot the token: start afresh
                    continue
                if response.status_code in (400, 403, 405, 409, 415, 422, 501):
                    raise _SyncUnsupported
                self._expect_207(response, url)
            with self._edge(url):
                answer = parse_sync_collection(response.content, url)
                if answer.token is None:
                    raise _SyncUnsupported
                fetched = await self._multiget(url, answer.without_data)
            copy.remove(answer.removed)
            copy.store(answer.changed)
            copy.store(fetched)
            copy.token = answer.token
            if not answer.truncated:
                return
        raise BackendFailure(f"sync of {url} did not finish in {MAX_SYNC_ROUNDS} rounds")

    async def _multiget(self, url: str, hrefs: Sequence[str]) -> list[CalendarObject]:
        if not hrefs:
            return []
        body = await self._dav("REPORT", url, render_multiget(hrefs), "1")
        with self._edge(url):
            return parse_multistatus(body)

    # --- HTTP -------------------------------------------------------------------------------

    async def _dav(self, method: str, url: str, body: bytes, depth: str) -> bytes:
        """One request that must answer 207 Multi-Status; its body."""
        response = await self._send(method, url, body, depth)
        self._expect_207(response, url)
        return response.content

    async def _send(self, method: str, url: str, body: bytes, depth: str) -> httpx.Response:
        async with self._gate:
            with self._edge(url):
                async with asyncio.timeout(self.config.timeout_seconds):
                    return await self._read_only_request(
                        method, url, body, {"Depth": depth, **_XML}
                    )

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
        if response.status_code == 401:
            challenge = _unsupported_challenge(response)
            if challenge:
                schemes, header = challenge
                raise BackendFailure(
                    f"the CalDAV server at {url} asks for {schemes} authentication "
                    f"(WWW-Authenticate: {header}), which this node does not speak; "
                    "it authenticates with HTTP Basic"
                )
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


def _combined(calendars: Sequence[str], tags: Sequence[str | None]) -> str | None:
    """One version for a mailbox's calendars: the tag of its one calendar, else a digest of
    all of them (and of which calendars they are); None when any is unknown."""
    if not calendars or any(tag is None for tag in tags):
        return None
    if len(calendars) == 1:
        return tags[0]
    joined = "\n".join(f"{url}\t{tag}" for url, tag in zip(calendars, tags))
    return "calendars:" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def _unsupported_challenge(response: httpx.Response) -> tuple[str, str] | None:
    """(schemes, first header) of a 401 that offers no Basic (e.g. only Digest); else None."""
    headers = [v.strip() for v in response.headers.get_list("www-authenticate") if v.strip()]
    schemes = [value.split(" ", 1)[0].split(",", 1)[0] for value in headers]
    if not schemes or any(s.casefold() == "basic" for s in schemes):
        return None
    return ", ".join(dict.fromkeys(schemes)), headers[0][:120]


__all__ = ["CalDavBackend"]
