"""Which calendars of a CalDAV server count for a mailbox: found as CalDAV clients find them.

Theory of operation
-------------------
A site's `caldav.discovery` says how (docs/sitemap.md):

* `template`: one calendar, at `url` + `calendar_path` (`{address}/calendar/`). Today's layout.
* `principal`: the mailbox's principal is at `url` + `principal_path` (`{address}/`); its
  `calendar-home-set` (RFC 4791 §6.2.1) names the homes, and every calendar in a home counts.
* `search`: the principal is found by address. The server's `principal-collection-set` (RFC
  3744 §5.8, asked of `url`, else of the service account's `current-user-principal`, RFC 5397) is
  searched with `principal-property-search` (§9.4) for `calendar-user-address-set` containing
  `mailto:<address>`; servers match substrings, so only an exact address counts, and two
  principals with the address are an error.

A mailbox's own `calendar_url` always wins: that one calendar. In a home, a member counts when it
is a calendar, may hold VEVENTs, and is opaque for scheduling (RFC 6638 §9.1
`schedule-calendar-transp`, absent = opaque): a transparent calendar (a holiday feed, a
colleague's shared calendar) never makes its owner busy. A home with no calendar at all is an
error, not an empty (free) mailbox; one whose calendars are all transparent is free.

Results are kept per address for `discovery_refresh_seconds` and found again after that, and
when the directory is reloaded (a reload builds new backends). Failures are not kept.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from cas.errors import BackendFailure, CalendarNotFound
from cas.sources.davxml import (
    CALENDARS_PROPFIND,
    HOME_PROPFIND,
    ROOT_PROPFIND,
    parse_collections,
    parse_home_set,
    parse_principals,
    parse_root_principals,
    render_principal_search,
)
from sitemap.model import CalDavBackendConfig, Mailbox

# (method, url, body, depth) -> the body of a 207 answer; raises BackendFailure otherwise.
DavRequest = Callable[[str, str, bytes, str], Awaitable[bytes]]


class CalendarFinder:
    """The calendar URLs of each mailbox under one backend configuration, cached."""

    def __init__(
        self,
        config: CalDavBackendConfig,
        request: DavRequest,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._request = request
        self._clock = clock
        self._found: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._search_roots: tuple[str, ...] | None = None

    def template_url(self, mailbox: Mailbox) -> str:
        """The mailbox's own `calendar_url`, else `url` joined with the `calendar_path` template."""
        if mailbox.calendar_url:
            return mailbox.calendar_url
        return self._join(self.config.calendar_path, mailbox)

    def principal_url(self, mailbox: Mailbox) -> str:
        return self._join(self.config.principal_path, mailbox)

    def _join(self, template: str, mailbox: Mailbox) -> str:
        path = template.format(
            address=quote(mailbox.address, safe="@+"), local=quote(mailbox.local_part, safe="+")
        )
        base = self.config.url if self.config.url.endswith("/") else self.config.url + "/"
        return urljoin(base, path.lstrip("/"))

    def known(self, mailbox: Mailbox) -> tuple[str, ...] | None:
        """The calendars found for `mailbox` so far, without asking (None: not looked up yet)."""
        if mailbox.calendar_url or self.config.discovery == "template":
            return (self.template_url(mailbox),)
        kept = self._found.get(mailbox.address.casefold())
        return kept[1] if kept is not None else None

    def forget(self, mailbox: Mailbox) -> None:
        """Drop what was found for `mailbox` (a calendar it named is gone)."""
        self._found.pop(mailbox.address.casefold(), None)

    async def calendars(self, mailbox: Mailbox) -> tuple[str, ...]:
        """The URLs of the calendars that count for `mailbox`'s free/busy."""
        if mailbox.calendar_url or self.config.discovery == "template":
            return (self.template_url(mailbox),)
        key = mailbox.address.casefold()
        kept = self._found.get(key)
        if kept is not None and kept[0] > self._clock():
            return kept[1]
        found = await self._discover(mailbox)
        self._found[key] = (self._clock() + self.config.discovery_refresh_seconds, found)
        return found

    async def _discover(self, mailbox: Mailbox) -> tuple[str, ...]:
        if self.config.discovery == "search":
            homes = await self._homes_by_search(mailbox)
        else:
            homes = await self._homes_of(self.principal_url(mailbox), mailbox)
        calendars: list[str] = []
        seen_any = False
        for home in homes:
            listed, any_calendar = await self._calendars_in(home)
            calendars.extend(listed)
            seen_any = seen_any or any_calendar
        if not seen_any:
            raise CalendarNotFound(
                f"no calendar found for {mailbox.address} in its calendar home {', '.join(homes)}"
            )
        return tuple(dict.fromkeys(calendars))

    async def _homes_of(self, principal: str, mailbox: Mailbox) -> tuple[str, ...]:
        homes = parse_home_set(await self._request("PROPFIND", principal, HOME_PROPFIND, "0"))
        if not homes:
            raise CalendarNotFound(
                f"principal {principal} of {mailbox.address} names no calendar-home-set"
            )
        return tuple(urljoin(principal, home) for home in homes)

    async def _calendars_in(self, home: str) -> tuple[list[str], bool]:
        """(opaque event calendars in `home`, whether it holds any calendar at all)."""
        body = await self._request("PROPFIND", home, CALENDARS_PROPFIND, "1")
        found = []
        any_calendar = False
        for member in parse_collections(body):
            url = same_form(urljoin(home, member.href))
            if not member.is_calendar or url.rstrip("/") == same_form(home).rstrip("/"):
                continue
            any_calendar = True
            if member.holds_events and not member.transparent:
                found.append(url)
        return found, any_calendar

    async def _homes_by_search(self, mailbox: Mailbox) -> tuple[str, ...]:
        matches = []
        for root in await self._roots():
            body = await self._request(
                "REPORT", root, render_principal_search(mailbox.address), "0"
            )
            for principal in parse_principals(body):
                if principal.has_address(mailbox.address):
                    matches.append((urljoin(root, principal.href), principal))
        unique = {url: principal for url, principal in matches}
        if not unique:
            raise CalendarNotFound(
                f"no principal with address {mailbox.address} found by principal search at "
                f"{', '.join(await self._roots())}"
            )
        if len(unique) > 1:
            raise BackendFailure(
                f"{len(unique)} principals have address {mailbox.address}: "
                f"{', '.join(sorted(unique))}"
            )
        url, principal = next(iter(unique.items()))
        if principal.homes:
            return tuple(urljoin(url, home) for home in principal.homes)
        return await self._homes_of(url, mailbox)

    async def _roots(self) -> tuple[str, ...]:
        """Where principals are searched: the principal-collection-set, kept once known."""
        if self._search_roots is None:
            base = self.config.url
            collections, current = parse_root_principals(
                await self._request("PROPFIND", base, ROOT_PROPFIND, "0")
            )
            if not collections and current:
                own = urljoin(base, current[0])
                collections, _ = parse_root_principals(
                    await self._request("PROPFIND", own, ROOT_PROPFIND, "0")
                )
            roots = tuple(urljoin(base, href) for href in collections)
            self._search_roots = roots or (base,)
        return self._search_roots


def same_form(url: str) -> str:
    """`url` with its path escaped one way (`%40` and `@` alike become `@`), so that one
    calendar named by two servers' spellings is one calendar."""
    parts = urlsplit(url)
    path = quote(unquote(parts.path), safe="/@+:~!$&'()*,;=")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


__all__ = ["CalendarFinder", "DavRequest", "same_form"]
