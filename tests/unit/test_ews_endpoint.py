"""The EWS front door under bad and hostile input, limits and a slow backend.

The app runs in-process with a fake backend: what is under test is how the endpoint answers,
so every case checks the HTTP status, that the body is a SOAP fault with the right code and a
clear message, and that no traceback leaks.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest
from lxml import etree

from cas.app import create_app
from cas.model.freebusy import BusyType, Event, MailboxData, Window
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from sitemap.model import ClientAuth, Mailbox, Site, Sitemap
from tests.support.ews_schema import validate_ews_body

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
UTC = UTC

SITEMAP = Sitemap(
    source="test",
    sites=(Site("eu"),),
    mailboxes=tuple(Mailbox(f"u{i}@contoso.test", "eu") for i in range(120))
    + (Mailbox("slow@contoso.test", "eu"), Mailbox("down@contoso.test", "eu")),
    auth=ClientAuth(anonymous=True),
)


class SlowBackend(FakeBackend):
    async def fetch(self, mailbox, window: Window) -> MailboxData:
        if mailbox.address == "slow@contoso.test":
            await asyncio.sleep(30)
        return await super().fetch(mailbox, window)


BUSY = MailboxData(
    events=(
        Event(
            datetime(2024, 3, 4, 9, tzinfo=UTC), datetime(2024, 3, 4, 10, tzinfo=UTC), BusyType.BUSY
        ),
    )
)


def client(**settings: object) -> httpx.AsyncClient:
    backend = SlowBackend({"u0@contoso.test": BUSY}, failing={"down@contoso.test"})
    app = create_app(
        load_settings(settings, environ={}), SITEMAP, "eu", backends={"modern": backend}
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")


def envelope(body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}" xmlns:m="{M}" xmlns:t="{T}">'
        '<s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


UTC_TZ = (
    "<t:TimeZone><t:Bias>0</t:Bias>"
    "<t:StandardTime><t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>1</t:DayOrder><t:Month>1</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:StandardTime>"
    "<t:DaylightTime><t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>1</t:DayOrder><t:Month>1</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:DaylightTime>"
    "</t:TimeZone>"
)


def availability(
    addresses,
    start="2024-03-04T00:00:00Z",
    end="2024-03-05T00:00:00Z",
    interval="60",
    view="FreeBusyMerged",
) -> bytes:
    boxes = "".join(
        f"<t:MailboxData><t:Email><t:Address>{a}</t:Address></t:Email>"
        "<t:AttendeeType>Required</t:AttendeeType></t:MailboxData>"
        for a in addresses
    )
    return envelope(
        f"<m:GetUserAvailabilityRequest>{UTC_TZ}<m:MailboxDataArray>{boxes}</m:MailboxDataArray>"
        f"<t:FreeBusyViewOptions><t:TimeWindow><t:StartTime>{start}</t:StartTime><t:EndTime>{end}</t:EndTime>"
        f"</t:TimeWindow><t:MergedFreeBusyIntervalInMinutes>{interval}</t:MergedFreeBusyIntervalInMinutes>"
        f"<t:RequestedView>{view}</t:RequestedView></t:FreeBusyViewOptions></m:GetUserAvailabilityRequest>"
    )


def fault_of(response: httpx.Response) -> tuple[str, str]:
    """(ResponseCode, faultstring) of a SOAP fault answer; fails if it is anything else."""
    assert response.headers["content-type"].startswith("text/xml")
    assert b"Traceback" not in response.content
    tree = etree.fromstring(response.content)
    fault = tree.find(f"{{{S}}}Body/{{{S}}}Fault")
    assert fault is not None, response.text
    return fault.findtext(f"detail/{{{E}}}ResponseCode"), fault.findtext("faultstring")


async def post(body: bytes, **settings: object) -> httpx.Response:
    async with client(**settings) as c:
        return await c.post(
            "/EWS/Exchange.asmx", content=body, headers={"Content-Type": "text/xml"}
        )


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        (b"this is not xml", 400, "ErrorSchemaValidation", "not well-formed"),
        (b"", 400, "ErrorSchemaValidation", ""),
        (b"<a>unclosed", 400, "ErrorSchemaValidation", ""),
        (b"<Envelope/>", 400, "ErrorSchemaValidation", "SOAP"),
        (envelope(""), 400, "ErrorSchemaValidation", "Body"),
        (
            b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + envelope("<m:ConvertId>&x;</m:ConvertId>").split(b"?>", 1)[1],
            400,
            "ErrorSchemaValidation",
            "DTD",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY a "aaaaaaaaaa">'
            + b"".join(
                b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">'
                % ((98 + i,) + (97 + i,) * 10)
                for i in range(9)
            )
            + b"]><lolz>&j;</lolz>",
            400,
            "ErrorSchemaValidation",
            "DTD",
        ),
        (
            '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE x [<!ENTITY y "z">]><x>&y;</x>'.encode(
                "utf-16"
            ),
            400,
            "ErrorSchemaValidation",
            "DTD",
        ),
        (envelope("<m:DeleteItem/>"), 500, "ErrorInvalidOperation", "DeleteItem"),
        (availability([]), 500, "ErrorMailboxDataArrayEmpty", ""),
        (
            availability([f"u{i}@contoso.test" for i in range(101)]),
            500,
            "ErrorMailboxDataArrayTooBig",
            "allowed size = 100; actual size = 101",
        ),
        (
            availability(["u0@contoso.test"], end="2024-05-06T00:00:00Z"),
            500,
            "ErrorTimeIntervalTooBig",
            "allowed limit = 62 days; the actual limit = 63 days",
        ),
        (
            availability(["u0@contoso.test"], start="2024-03-05T00:00:00Z"),
            500,
            "ErrorInvalidTimeInterval",
            "TimeWindow is invalid",
        ),
        (
            availability(["u0@contoso.test"], end="2024-03-04T00:00:00Z"),
            500,
            "ErrorInvalidTimeInterval",
            "",
        ),
        (
            availability(["u0@contoso.test"], interval="4"),
            500,
            "ErrorInvalidMergedFreeBusyInterval",
            "",
        ),
        (
            availability(["u0@contoso.test"], interval="1441"),
            500,
            "ErrorInvalidMergedFreeBusyInterval",
            "",
        ),
        (
            availability(["u0@contoso.test"], end="2024-03-04T00:30:00Z"),
            500,
            "ErrorInvalidMergedFreeBusyInterval",
            "",
        ),
        (
            availability(["u0@contoso.test"], interval="sixty"),
            500,
            "ErrorSchemaValidation",
            "MergedFreeBusyIntervalInMinutes",
        ),
        (
            availability(["u0@contoso.test"], start="yesterday"),
            500,
            "ErrorSchemaValidation",
            "StartTime",
        ),
        (availability(["u0@contoso.test"], view="None"), 500, "ErrorInvalidFreeBusyViewType", ""),
        (
            availability(["u0@contoso.test"], view="Everything"),
            500,
            "ErrorSchemaValidation",
            "RequestedView",
        ),
    ],
)
async def test_bad_input_gets_a_clear_fault(
    body: bytes, status: int, code: str, words: str
) -> None:
    started = time.monotonic()
    response = await post(body)
    assert time.monotonic() - started < 5
    assert response.status_code == status, response.text
    got_code, text = fault_of(response)
    assert got_code == code
    assert text and words.lower() in text.lower()


async def test_over_size_body_is_refused_before_it_is_read() -> None:
    response = await post(availability(["u0@contoso.test"]), max_body_bytes=1000)
    assert response.status_code == 413
    code, text = fault_of(response)
    assert code == "ErrorInvalidRequest" and "1000 bytes" in text


async def test_over_size_body_without_length_is_cut_off() -> None:
    async def chunks():
        for _ in range(100):
            yield b"x" * 1000

    async with client(max_body_bytes=5000) as c:
        response = await c.post("/EWS/Exchange.asmx", content=chunks())
    assert response.status_code == 413


async def test_limits_are_configurable() -> None:
    response = await post(availability([f"u{i}@contoso.test" for i in range(11)]), max_mailboxes=10)
    assert fault_of(response)[0] == "ErrorMailboxDataArrayTooBig"
    response = await post(
        availability(["u0@contoso.test"], end="2024-06-01T00:00:00Z"), window_max_days=100
    )
    assert response.status_code == 200


async def test_hundred_mailboxes_is_the_most_and_is_answered() -> None:
    response = await post(availability([f"u{i}@contoso.test" for i in range(100)]))
    assert response.status_code == 200
    validate_ews_body(response.content)
    codes = etree.fromstring(response.content).findall(f".//{{{M}}}ResponseCode")
    assert len(codes) == 100 and {c.text for c in codes} == {"NoError"}


async def test_slow_and_failing_backends_cost_only_their_mailboxes() -> None:
    started = time.monotonic()
    response = await post(
        availability(["slow@contoso.test", "u0@contoso.test", "down@contoso.test"]),
        request_timeout_seconds=0.5,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and elapsed < 3
    validate_ews_body(response.content)
    tree = etree.fromstring(response.content)
    responses = tree.findall(f".//{{{M}}}FreeBusyResponse")
    codes = [r.findtext(f"{{{M}}}ResponseMessage/{{{M}}}ResponseCode") for r in responses]
    assert codes == ["ErrorFreeBusyGenerationFailed", "NoError", "ErrorFreeBusyGenerationFailed"]
    assert "0.5s" in responses[0].findtext(f"{{{M}}}ResponseMessage/{{{M}}}MessageText")
    # only the answered mailbox has a merged string: 09-10 busy in 24 hourly slots
    merged = tree.findall(f".//{{{T}}}MergedFreeBusy")
    assert [m.text for m in merged] == ["0" * 9 + "2" + "0" * 14]


async def test_an_adapter_bug_costs_only_its_mailbox(caplog) -> None:
    class Broken(FakeBackend):
        async def fetch(self, mailbox, window):
            if mailbox.address == "u1@contoso.test":
                raise RuntimeError("bug in an adapter")
            return await super().fetch(mailbox, window)

    backend = Broken({"u0@contoso.test": BUSY})
    app = create_app(load_settings({}, environ={}), SITEMAP, "eu", backends={"modern": backend})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as c:
        response = await c.post(
            "/EWS/Exchange.asmx", content=availability(["u0@contoso.test", "u1@contoso.test"])
        )
    assert response.status_code == 200
    validate_ews_body(response.content)
    codes = [c.text for c in etree.fromstring(response.content).findall(f".//{{{M}}}ResponseCode")]
    assert codes == ["NoError", "ErrorFreeBusyGenerationFailed"]
    assert b"bug in an adapter" not in response.content
    assert "bug in an adapter" in caplog.text


async def test_unexpected_errors_become_a_logged_fault_not_a_traceback(monkeypatch, caplog) -> None:
    from cas.codecs import ews

    def explode(*args, **kwargs):
        raise RuntimeError("bug in a codec")

    monkeypatch.setattr(ews, "render_get_user_availability", explode)
    response = await post(availability(["u0@contoso.test"]))
    assert response.status_code == 500
    code, text = fault_of(response)
    assert code == "ErrorInternalServerError" and "bug in a codec" not in text
    assert "bug in a codec" in caplog.text


async def test_get_is_not_allowed_and_health_answers() -> None:
    async with client() as c:
        assert (await c.get("/EWS/Exchange.asmx")).status_code == 405
        assert (await c.get("/healthz")).text == "ok"


async def test_healthz_tells_version_and_site_to_a_client_asking_for_json() -> None:
    from cas import __version__

    async with client() as c:
        plain = await c.get("/healthz", headers={"Accept": "*/*"})  # what probes send
        detailed = await c.get("/healthz", headers={"Accept": "application/json"})
    assert plain.text == "ok"
    document = detailed.json()
    breakers = document.pop("breakers")
    assert document == {"status": "ok", "version": __version__, "site": "eu"}
    # the site's backend has its breaker, closed on a fresh node
    assert [(b["kind"], b["target"], b["state"]) for b in breakers] == [("modern", "eu", "closed")]


async def test_metrics_count_answers_by_front_door_and_mailboxes_by_route() -> None:
    async with client() as c:
        await c.post(
            "/EWS/Exchange.asmx",
            content=availability(["u0@contoso.test", "u1@contoso.test", "x@contoso.test"]),
        )
        await c.post("/EWS/Exchange.asmx", content=b"not xml")
        await c.get("/public/?cmd=freebusy")
        text = (await c.get("/metrics")).text
    assert 'cas_requests_total{endpoint="ews",status="200"} 1.0' in text
    assert 'cas_requests_total{endpoint="ews",status="400"} 1.0' in text
    assert 'cas_requests_total{endpoint="legacy",status="400"} 1.0' in text
    assert 'cas_mailboxes_total{route="local"} 2.0' in text
    assert 'cas_mailboxes_total{route="unknown"} 1.0' in text


# --- meeting suggestions ------------------------------------------------------------------------

SUGGESTIONS_OPTIONS = (
    "<t:SuggestionsViewOptions><t:MeetingDurationInMinutes>30</t:MeetingDurationInMinutes>"
    "<t:DetailedSuggestionsWindow><t:StartTime>2024-03-04T00:00:00Z</t:StartTime>"
    "<t:EndTime>2024-03-05T00:00:00Z</t:EndTime></t:DetailedSuggestionsWindow>"
    "</t:SuggestionsViewOptions>"
)


async def post_to(backend: FakeBackend, body: bytes) -> httpx.Response:
    app = create_app(load_settings({}, environ={}), SITEMAP, "eu", backends={"modern": backend})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        return await c.post(
            "/EWS/Exchange.asmx", content=body, headers={"Content-Type": "text/xml"}
        )


def response_parts(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    validate_ews_body(response.content)
    body = etree.fromstring(response.content).find(
        f"{{{S}}}Body/{{{M}}}GetUserAvailabilityResponse"
    )
    assert body is not None
    return [etree.QName(c).localname for c in body]


async def test_free_busy_with_suggestions_keeps_free_busy_and_reports_suggestions() -> None:
    backend = FakeBackend({"u0@contoso.test": BUSY})
    body = availability(["u0@contoso.test"]).replace(
        b"</m:GetUserAvailabilityRequest>",
        SUGGESTIONS_OPTIONS.encode() + b"</m:GetUserAvailabilityRequest>",
    )
    response = await post_to(backend, body)
    assert response_parts(response) == ["FreeBusyResponseArray", "SuggestionsResponse"]
    tree = etree.fromstring(response.content)
    assert tree.findtext(f".//{{{T}}}MergedFreeBusy") == "0" * 9 + "2" + "0" * 14
    code = tree.findtext(
        f".//{{{M}}}SuggestionsResponse/{{{M}}}ResponseMessage/{{{M}}}ResponseCode"
    )
    assert code == "ErrorMeetingSuggestionGenerationFailed"
    assert [address for address, _ in backend.calls] == ["u0@contoso.test"]


async def test_suggestions_alone_read_no_calendar() -> None:
    backend = FakeBackend({"u0@contoso.test": BUSY})
    boxes = (
        "<t:MailboxData><t:Email><t:Address>u0@contoso.test</t:Address></t:Email>"
        "<t:AttendeeType>Required</t:AttendeeType></t:MailboxData>"
    )
    body = envelope(
        f"<m:GetUserAvailabilityRequest>{UTC_TZ}<m:MailboxDataArray>{boxes}</m:MailboxDataArray>"
        f"{SUGGESTIONS_OPTIONS}</m:GetUserAvailabilityRequest>"
    )
    response = await post_to(backend, body)
    assert response_parts(response) == ["SuggestionsResponse"]
    assert backend.calls == []
