"""The pieces behind the CalDAV backend's calendar copies and discovery, without a server:
the XML readers, object spans, and how the backend talks to servers that answer sync-collection
oddly (a forgotten token, no support at all, data left out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cas.model.freebusy import Window
from cas.sources.caldav import CalDavBackend
from cas.sources.calendar_copy import UNBOUNDED, object_span
from cas.sources.davxml import parse_collections, parse_principals, parse_sync_collection
from sitemap.model import CalDavBackendConfig, Mailbox


def z(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def vcal(*lines: str) -> str:
    body = "".join(line + "\r\n" for line in lines)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n"


# --- spans -----------------------------------------------------------------------------------

D2 = timedelta(days=2)


@pytest.mark.parametrize(
    ("lines", "start", "end"),
    [
        (
            ("DTSTART:20270110T100000Z", "DTEND:20270110T110000Z"),
            z(2027, 1, 10, 10),
            z(2027, 1, 10, 11),
        ),
        (
            ("DTSTART:20270110T100000Z", "DTEND:20270110T110000Z", "RDATE:20270323T100000Z"),
            z(2027, 1, 10, 10),
            z(2027, 3, 23, 11),
        ),
        (
            (
                "DTSTART:20270110T100000Z",
                "DURATION:PT2H",
                "RRULE:FREQ=DAILY;UNTIL=20270120T100000Z",
            ),
            z(2027, 1, 10, 10),
            z(2027, 1, 20, 12),
        ),
        (("DTSTART;VALUE=DATE:20270110",), z(2027, 1, 10), z(2027, 1, 11)),
        (
            (
                "DTSTART:20270110T100000Z",
                "DTEND:20270110T110000Z",
                "RDATE;VALUE=PERIOD:20270301T090000Z/20270301T170000Z",
            ),
            z(2027, 1, 10, 10),
            z(2027, 3, 1, 17),
        ),
    ],
)
def test_spans_cover_every_occurrence_with_two_days_each_side(lines, start, end) -> None:
    span = object_span(vcal(*lines))
    assert (span.start, span.end) == (start - D2, end + D2)


def test_a_rule_without_until_has_no_end() -> None:
    span = object_span(vcal("DTSTART:20200110T100000Z", "RRULE:FREQ=WEEKLY;COUNT=500"))
    assert span.start == z(2020, 1, 10, 10) - D2 and span.end is None
    assert span.meets(Window(z(2031, 1, 1), z(2031, 1, 2)))
    assert not span.meets(Window(z(2019, 1, 1), z(2019, 1, 2)))


def test_unreadable_objects_always_count_and_task_lists_never() -> None:
    assert object_span("garbage") == UNBOUNDED
    todo = vcal("DTSTART:20270110T100000Z").replace("VEVENT", "VTODO")
    assert not object_span(todo).meets(Window(z(1990, 1, 1), z(2090, 1, 1)))


# --- XML readers -------------------------------------------------------------------------------


def test_sync_answer_changed_removed_named_and_truncated() -> None:
    body = b"""<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
      <d:response><d:href>/cal/a.ics</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag>
        <c:calendar-data>BEGIN:VCALENDAR</c:calendar-data></d:prop>
        <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
      <d:response><d:href>/cal/b.ics</d:href><d:propstat><d:prop><d:getetag>"2"</d:getetag></d:prop>
        <d:status>HTTP/1.1 200 OK</d:status></d:propstat>
        <d:propstat><d:prop><c:calendar-data/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status>
        </d:propstat></d:response>
      <d:response><d:href>/cal/c.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>
      <d:response><d:href>/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>
      <d:sync-token>tok-2</d:sync-token></d:multistatus>"""
    answer = parse_sync_collection(body, "http://h/cal/")
    assert [(o.href, o.etag) for o in answer.changed] == [("/cal/a.ics", '"1"')]
    assert answer.without_data == ("/cal/b.ics",)
    assert answer.removed == ("/cal/c.ics",)
    assert answer.truncated and answer.token == "tok-2"


def test_transparency_as_sabre_writes_it_and_as_radicale_keeps_it() -> None:
    body = b"""<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
      <d:response><d:href>/home/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/>
        </d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
      <d:response><d:href>/home/shared/</d:href><d:propstat><d:prop><d:resourcetype>
        <d:collection/><c:calendar/></d:resourcetype><c:schedule-calendar-transp><c:transparent/>
        </c:schedule-calendar-transp></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
      </d:response>
      <d:response><d:href>/home/text/</d:href><d:propstat><d:prop><d:resourcetype><c:calendar/>
        </d:resourcetype><c:schedule-calendar-transp>transparent</c:schedule-calendar-transp>
        </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
      <d:response><d:href>/home/work/</d:href><d:propstat><d:prop><d:resourcetype><c:calendar/>
        </d:resourcetype><c:schedule-calendar-transp><c:opaque/></c:schedule-calendar-transp>
        <c:supported-calendar-component-set><c:comp name="VEVENT"/></c:supported-calendar-component-set>
        </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
      <d:response><d:href>/home/tasks/</d:href><d:propstat><d:prop><d:resourcetype><c:calendar/>
        </d:resourcetype><c:supported-calendar-component-set><c:comp name="VTODO"/>
        </c:supported-calendar-component-set></d:prop><d:status>HTTP/1.1 200 OK</d:status>
        </d:propstat></d:response></d:multistatus>"""
    rows = [(c.href, c.is_calendar, c.transparent, c.holds_events) for c in parse_collections(body)]
    assert rows == [
        ("/home/", False, False, True),
        ("/home/shared/", True, True, True),
        ("/home/text/", True, True, True),
        ("/home/work/", True, False, True),
        ("/home/tasks/", True, False, False),
    ]


def test_principal_search_matches_only_the_exact_address() -> None:
    body = b"""<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
      <d:response><d:href>/p/joann/</d:href><d:propstat><d:prop><c:calendar-user-address-set>
        <d:href>mailto:joann@contoso.test</d:href></c:calendar-user-address-set></d:prop>
        <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
      <d:response><d:href>/p/ann/</d:href><d:propstat><d:prop><c:calendar-user-address-set>
        <d:href>MAILTO:Ann@Contoso.test</d:href><d:href>/p/ann/</d:href>
        </c:calendar-user-address-set><c:calendar-home-set><d:href>/cal/ann/</d:href>
        </c:calendar-home-set></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
      </d:response></d:multistatus>"""
    found = [p for p in parse_principals(body) if p.has_address("ann@contoso.test")]
    assert [(p.href, p.homes) for p in found] == [("/p/ann/", ("/cal/ann/",))]


# --- the backend against odd sync answers -------------------------------------------------------

EVENT = vcal("DTSTART:20270301T090000Z", "DTEND:20270301T100000Z", "SUMMARY:one")
MARCH = Window(z(2027, 3, 1), z(2027, 4, 1))


def multistatus(*responses: str, token: str | None = None) -> bytes:
    tail = f"<d:sync-token>{token}</d:sync-token>" if token else ""
    return (
        '<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
        + "".join(responses)
        + tail
        + "</d:multistatus>"
    ).encode()


def with_data(href: str) -> str:
    return (
        f'<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:getetag>"e"</d:getetag>'
        f"<c:calendar-data>{EVENT}</c:calendar-data></d:prop>"
        "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )


async def fetch_through(handler) -> tuple[list[str], list[str]]:
    """Two fetches through `handler`; (subjects of the second, the request kinds seen)."""
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        text = request.content.decode()
        kind = (
            "sync" if "sync-collection" in text else "multiget" if "multiget" in text else "query"
        )
        token = text.split("<D:sync-token>")[1].split("<")[0] if kind == "sync" else ""
        seen.append(f"{kind}:{token}" if kind == "sync" else kind)
        return handler(kind, token)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    backend = CalDavBackend(CalDavBackendConfig(url="http://127.0.0.1:1/"), client=client)
    mailbox = Mailbox("ann@contoso.test", "eu")
    await backend.fetch(mailbox, MARCH)
    data = await backend.fetch(mailbox, MARCH)
    await client.aclose()
    return [e.details.subject for e in data.events], seen


async def test_a_server_without_sync_collection_is_read_whole_each_time() -> None:
    def handler(kind: str, token: str) -> httpx.Response:
        if kind == "sync":
            return httpx.Response(501)
        return httpx.Response(207, content=multistatus(with_data("/ann/calendar/a.ics")))

    subjects, seen = await fetch_through(handler)
    assert subjects == ["one"]
    assert seen == ["sync:", "query", "query"]


async def test_a_forgotten_token_starts_the_copy_afresh() -> None:
    def handler(kind: str, token: str) -> httpx.Response:
        if token == "t1":
            return httpx.Response(
                403, content=b'<d:error xmlns:d="DAV:"><d:valid-sync-token/></d:error>'
            )
        return httpx.Response(
            207, content=multistatus(with_data("/ann/calendar/a.ics"), token="t1")
        )

    subjects, seen = await fetch_through(handler)
    assert subjects == ["one"]
    assert seen == ["sync:", "sync:t1", "sync:"]


async def test_objects_named_without_data_are_read_with_multiget() -> None:
    named = (
        "<d:response><d:href>/ann/calendar/a.ics</d:href><d:propstat><d:prop>"
        '<d:getetag>"e"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>'
        "</d:response>"
    )

    def handler(kind: str, token: str) -> httpx.Response:
        if kind == "multiget":
            return httpx.Response(207, content=multistatus(with_data("/ann/calendar/a.ics")))
        if token:
            return httpx.Response(207, content=multistatus(token=token))  # nothing changed
        return httpx.Response(207, content=multistatus(named, token="t1"))

    subjects, seen = await fetch_through(handler)
    assert subjects == ["one"]
    assert seen == ["sync:", "multiget", "sync:t1"]
