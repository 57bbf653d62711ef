"""WebDAV and CalDAV bodies the CalDAV backend sends, and readers of the answers (pure, no I/O).

Discovery (RFC 4791 §6.2, RFC 5397, RFC 3744 §9.4, RFC 6638 §9.1): the calendar home of a
principal, the calendars in a home with their components and scheduling transparency, a
principal search by calendar user address. Keeping a calendar in step (RFC 6578
sync-collection, RFC 4791 §7.9 calendar-multiget). Every reader refuses DTDs and entities and
raises `CalendarDataError` (a `BackendFailure`) for anything it cannot trust.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from lxml import etree

from cas.model.freebusy import Window
from cas.sources.ical import CalendarDataError, CalendarObject

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
_HEAD = '<?xml version="1.0" encoding="utf-8"?>'
_NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

ROOT_PROPFIND = (
    f"{_HEAD}<D:propfind {_NS}><D:prop><D:current-user-principal/>"
    "<D:principal-collection-set/></D:prop></D:propfind>"
).encode()
HOME_PROPFIND = (
    f"{_HEAD}<D:propfind {_NS}><D:prop><C:calendar-home-set/></D:prop></D:propfind>"
).encode()
CALENDARS_PROPFIND = (
    f"{_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:displayname/>"
    "<C:supported-calendar-component-set/><C:schedule-calendar-transp/></D:prop></D:propfind>"
).encode()


CTAG_PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">'
    b"<D:prop><CS:getctag/><D:sync-token/></D:prop></D:propfind>"
)


def render_calendar_query(window: Window | None) -> bytes:
    """The calendar-query body: VEVENTs (overlapping `window`, sent in UTC, when given)."""
    time_range = ""
    if window is not None:
        start, end = (_utc_stamp(t) for t in (window.start, window.end))
        time_range = f'<C:time-range start="{start}" end="{end}"/>'
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f"{time_range}</C:comp-filter></C:comp-filter></C:filter>"
        "</C:calendar-query>"
    ).encode()


def _utc_stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def render_principal_search(address: str) -> bytes:
    """principal-property-search for principals whose calendar user addresses contain `address`."""
    return (
        f"{_HEAD}<D:principal-property-search {_NS}><D:property-search><D:prop>"
        "<C:calendar-user-address-set/></D:prop>"
        f"<D:match>{escape(address)}</D:match></D:property-search>"
        "<D:prop><C:calendar-user-address-set/><C:calendar-home-set/></D:prop>"
        "</D:principal-property-search>"
    ).encode()


def render_sync_collection(token: str | None) -> bytes:
    """sync-collection (RFC 6578) from `token`, or from the start; etags and calendar data."""
    return (
        f"{_HEAD}<D:sync-collection {_NS}><D:sync-token>{escape(token or '')}</D:sync-token>"
        "<D:sync-level>1</D:sync-level><D:prop><D:getetag/><C:calendar-data/></D:prop>"
        "</D:sync-collection>"
    ).encode()


def render_multiget(hrefs: Iterable[str]) -> bytes:
    """calendar-multiget of `hrefs`, with etags and calendar data."""
    listed = "".join(f"<D:href>{escape(href)}</D:href>" for href in hrefs)
    return (
        f"{_HEAD}<C:calendar-multiget {_NS}><D:prop><D:getetag/><C:calendar-data/></D:prop>"
        f"{listed}</C:calendar-multiget>"
    ).encode()


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    """One sync-collection answer: the new token, what changed (with data, or only named),
    what was removed, and whether the server cut the answer short (ask again from `token`)."""

    token: str | None
    changed: tuple[CalendarObject, ...]
    without_data: tuple[str, ...]
    removed: tuple[str, ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class Collection:
    """A member of a calendar home: whether it is a calendar, what it holds, its transparency."""

    href: str
    is_calendar: bool
    components: tuple[str, ...] | None
    transparent: bool
    name: str | None

    @property
    def holds_events(self) -> bool:
        return self.components is None or "VEVENT" in self.components


@dataclass(frozen=True, slots=True)
class Principal:
    """A principal a search found: its href, calendar user addresses and calendar homes."""

    href: str
    addresses: tuple[str, ...]
    homes: tuple[str, ...]

    def has_address(self, address: str) -> bool:
        wanted = "mailto:" + address.casefold()
        return any(a.strip().casefold() == wanted for a in self.addresses)


def _root(xml_bytes: bytes, what: str) -> etree._Element:
    if b"<!DOCTYPE" in xml_bytes[:4096].upper():
        raise CalendarDataError(f"{what} answer carries a DTD; refused")
    try:
        root = etree.fromstring(xml_bytes, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise CalendarDataError(f"{what} answer is not well-formed XML: {exc}") from exc
    if root.tag != f"{DAV}multistatus":
        raise CalendarDataError(f"{what} answer has root {root.tag!r}, expected DAV:multistatus")
    return root


def _status(line: str | None) -> int | None:
    parts = (line or "").split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def _ok_props(response: etree._Element) -> list[etree._Element]:
    """The DAV:prop elements of a response's successful propstats."""
    found = []
    for propstat in response.iterfind(f"{DAV}propstat"):
        status = _status(propstat.findtext(f"{DAV}status"))
        prop = propstat.find(f"{DAV}prop")
        if prop is not None and (status is None or 200 <= status < 300):
            found.append(prop)
    return found


def _find(response: etree._Element, name: str) -> etree._Element | None:
    for prop in _ok_props(response):
        element = prop.find(name)
        if element is not None:
            return element
    return None


def _hrefs(element: etree._Element | None) -> tuple[str, ...]:
    if element is None:
        return ()
    return tuple((href.text or "").strip() for href in element.iterfind(f"{DAV}href") if href.text)


def parse_sync_collection(xml_bytes: bytes, request_href: str) -> SyncAnswer:
    """A sync-collection answer. A 507 response naming the collection itself means truncated."""
    root = _root(xml_bytes, "sync-collection")
    changed: list[CalendarObject] = []
    without_data: list[str] = []
    removed: list[str] = []
    truncated = False
    for response in root.iterfind(f"{DAV}response"):
        href = (response.findtext(f"{DAV}href") or "").strip()
        status = _status(response.findtext(f"{DAV}status"))
        if status == 507 and _same_path(href, request_href):
            truncated = True
        elif status == 404:
            removed.append(href)
        elif href.endswith("/"):
            continue  # a collection (the calendar itself, or a child), not an object
        else:
            data = _find(response, f"{CALDAV}calendar-data")
            etag = _find(response, f"{DAV}getetag")
            etag_text = (etag.text or "").strip() if etag is not None else None
            if data is not None and (data.text or "").strip():
                changed.append(CalendarObject(href, etag_text, data.text or ""))
            else:
                without_data.append(href)
    token = (root.findtext(f"{DAV}sync-token") or "").strip() or None
    return SyncAnswer(token, tuple(changed), tuple(without_data), tuple(removed), truncated)


def _same_path(href: str, other: str) -> bool:
    def path(value: str) -> str:
        return unquote(urlsplit(value).path).rstrip("/")

    return path(href) == path(other)


def parse_home_set(xml_bytes: bytes) -> tuple[str, ...]:
    """The calendar-home-set hrefs of a principal (PROPFIND Depth 0)."""
    root = _root(xml_bytes, "calendar-home-set PROPFIND")
    for response in root.iterfind(f"{DAV}response"):
        found = _hrefs(_find(response, f"{CALDAV}calendar-home-set"))
        if found:
            return found
    return ()


def parse_root_principals(xml_bytes: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(principal-collection-set hrefs, current-user-principal hrefs) of a PROPFIND Depth 0."""
    root = _root(xml_bytes, "principal PROPFIND")
    collections: tuple[str, ...] = ()
    current: tuple[str, ...] = ()
    for response in root.iterfind(f"{DAV}response"):
        collections = collections or _hrefs(_find(response, f"{DAV}principal-collection-set"))
        current = current or _hrefs(_find(response, f"{DAV}current-user-principal"))
    return collections, current


def parse_collections(xml_bytes: bytes) -> list[Collection]:
    """The members of a calendar home (PROPFIND Depth 1), the home itself included."""
    root = _root(xml_bytes, "calendar home PROPFIND")
    found = []
    for response in root.iterfind(f"{DAV}response"):
        href = (response.findtext(f"{DAV}href") or "").strip()
        kind = _find(response, f"{DAV}resourcetype")
        is_calendar = kind is not None and kind.find(f"{CALDAV}calendar") is not None
        components_set = _find(response, f"{CALDAV}supported-calendar-component-set")
        components = (
            tuple(
                (comp.get("name") or "").upper()
                for comp in components_set.iterfind(f"{CALDAV}comp")
            )
            if components_set is not None
            else None
        )
        name = _find(response, f"{DAV}displayname")
        found.append(
            Collection(
                href,
                is_calendar,
                components,
                _transparent(_find(response, f"{CALDAV}schedule-calendar-transp")),
                (name.text or "").strip() or None if name is not None else None,
            )
        )
    return found


def _transparent(element: etree._Element | None) -> bool:
    """RFC 6638 §9.1: `<C:transparent/>` inside; absent or anything else is opaque.

    Servers that keep dead properties as text only (Radicale) can hold the word instead of the
    element, so the text `transparent` counts too.
    """
    if element is None:
        return False
    if element.find(f"{CALDAV}transparent") is not None:
        return True
    return (element.text or "").strip().casefold() == "transparent"


def parse_principals(xml_bytes: bytes) -> list[Principal]:
    """The principals of a principal-property-search answer."""
    root = _root(xml_bytes, "principal-property-search")
    found = []
    for response in root.iterfind(f"{DAV}response"):
        href = (response.findtext(f"{DAV}href") or "").strip()
        addresses = _hrefs(_find(response, f"{CALDAV}calendar-user-address-set"))
        homes = _hrefs(_find(response, f"{CALDAV}calendar-home-set"))
        found.append(Principal(href, addresses, homes))
    return found


# --- the REPORT answer ----------------------------------------------------------------------


def parse_ctag(xml_bytes: bytes) -> str | None:
    """The change tag in a PROPFIND answer: the WebDAV `sync-token`, else CalendarServer's
    `getctag`. The sync token comes first because it is what a sync-collection REPORT answers
    with, so the version a node learns while reading can be checked with this PROPFIND."""
    if b"<!DOCTYPE" in xml_bytes[:4096].upper():
        raise CalendarDataError("PROPFIND answer carries a DTD; refused")
    try:
        root = etree.fromstring(xml_bytes, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise CalendarDataError(f"PROPFIND answer is not well-formed XML: {exc}") from exc
    for name in (f"{DAV}sync-token", "{http://calendarserver.org/ns/}getctag"):
        for element in root.iter(name):
            text = (element.text or "").strip()
            if text:
                return text
    return None


def parse_multistatus(xml_bytes: bytes) -> list[CalendarObject]:
    """The calendar objects of a calendar-query REPORT answer (RFC 4791 §7.8, RFC 4918 §13).

    Raises `CalendarDataError` for anything that is not a plain multistatus document (not XML,
    a DTD, another root) and for a matched object whose calendar data the server withheld:
    its busy time would be unknown, so the mailbox must not be reported as free.
    """
    if b"<!DOCTYPE" in xml_bytes[:4096].upper():
        raise CalendarDataError("REPORT answer carries a DTD; refused")
    try:
        root = etree.fromstring(xml_bytes, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise CalendarDataError(f"REPORT answer is not well-formed XML: {exc}") from exc
    if root.tag != f"{DAV}multistatus":
        raise CalendarDataError(f"REPORT answer has root {root.tag!r}, expected DAV:multistatus")
    objects: list[CalendarObject] = []
    for response in root.iterfind(f"{DAV}response"):
        href = (response.findtext(f"{DAV}href") or "").strip()
        etag: str | None = None
        ics: str | None = None
        withheld: int | None = _status_code(response.findtext(f"{DAV}status"))
        for propstat in response.iterfind(f"{DAV}propstat"):
            status = _status_code(propstat.findtext(f"{DAV}status"))
            prop = propstat.find(f"{DAV}prop")
            if prop is None:
                continue
            if status is not None and not 200 <= status < 300:
                if prop.find(f"{CALDAV}calendar-data") is not None:
                    withheld = status
                continue
            etag = prop.findtext(f"{DAV}getetag", etag)
            data = prop.findtext(f"{CALDAV}calendar-data")
            if data is not None and data.strip():
                ics = data
        if ics is None and href.endswith("/"):
            continue  # a collection listed by a lenient server, not a calendar object
        if ics is None:
            raise CalendarDataError(
                f"object {href or '?'} matched but its calendar data was not returned"
                + (f" (HTTP {withheld})" if withheld else "")
            )
        objects.append(CalendarObject(href, etag.strip() if etag else None, ics))
    return objects


def _status_code(line: str | None) -> int | None:
    """200 from 'HTTP/1.1 200 OK'; None when absent or unreadable."""
    if not line:
        return None
    parts = line.split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


__all__ = [
    "CALENDARS_PROPFIND",
    "HOME_PROPFIND",
    "ROOT_PROPFIND",
    "Collection",
    "Principal",
    "SyncAnswer",
    "parse_collections",
    "parse_ctag",
    "parse_home_set",
    "parse_multistatus",
    "parse_principals",
    "parse_root_principals",
    "parse_sync_collection",
    "render_multiget",
    "render_principal_search",
    "render_sync_collection",
]
