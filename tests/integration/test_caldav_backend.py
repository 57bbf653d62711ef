"""CalDavBackend against a real Radicale: events written with the `caldav` client come back exactly.

Expected times are worked out by hand (CET +1 until 2024-03-31, EST -5 until 2024-03-10 then EDT
-4); failures (missing calendar, wrong password, stopped or silent server) must be quick
`BackendFailure`s, and the connection bound must hold under a 30-mailbox fan-out.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import caldav
import httpx
import pytest

from cas.errors import BackendFailure
from cas.model.freebusy import BusyType, Window, WorkingPeriod
from cas.sources.caldav import CalDavBackend
from caslab.radicale import RadicaleServer, ensure_calendar, put_event
from sitemap.model import CalDavBackendConfig, Mailbox, SecretRef, WorkingHoursSpec
from tests.support.radicale import SEED_CONCURRENCY, MailboxCalendar, NewCalendar, RadicaleLab

DATA = Path(__file__).resolve().parents[1] / "data" / "ics"
PASSWORD_ENV = "CAS_TEST_CALDAV_PASSWORD"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


MARCH = Window(utc(2024, 3, 1), utc(2024, 4, 1))

OUTLOOK_OOF = """BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16011028T030000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010325T020000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
DTSTAMP:20240301T101500Z
DTSTART;TZID=W. Europe Standard Time:20240311T090000
DTEND;TZID=W. Europe Standard Time:20240311T170000
SUMMARY:Out of office
TRANSP:OPAQUE
UID:outlook-oof-integration
X-MICROSOFT-CDO-BUSYSTATUS:OOF
END:VEVENT
END:VCALENDAR
"""


def simple_event(uid: str, start: str, end: str, summary: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cas tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20240301T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def write_with_caldav_client(lab: RadicaleLab, calendar_url: str, texts: list[str]) -> None:
    """Store events the way a real CalDAV client does (python-caldav, as the admin)."""
    client = caldav.DAVClient(url=lab.url, username=lab.admin[0], password=lab.admin[1])
    calendar = client.calendar(url=calendar_url)
    for text in texts:
        calendar.add_event(ical=text, increase_seqno=False)


def service_config(
    lab: RadicaleLab, monkeypatch: pytest.MonkeyPatch, **overrides
) -> CalDavBackendConfig:
    monkeypatch.setenv(PASSWORD_ENV, lab.service[1])
    settings = dict(url=lab.url, username=lab.service[0], password=SecretRef(env=PASSWORD_ENV))
    settings.update(overrides)
    return CalDavBackendConfig(**settings)


def rows(data) -> list[tuple[datetime, datetime, BusyType, str | None]]:
    return [(e.start, e.end, e.busy_type, e.details.subject) for e in data.events]


async def test_fetch_returns_exactly_the_written_events(
    radicale: RadicaleLab, mailbox_calendar: MailboxCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [
        (DATA / name).read_text(encoding="utf-8")
        for name in (
            "weekly_exdate_overrides.ics",
            "google_utc.ics",
            "rdate.ics",
            "cancelled_instance.ics",
            "floating.ics",
        )
    ]
    # Radicale (vobject 0.9.9) refuses RDATE;VALUE=PERIOD, so store rdate.ics without it.
    texts[2] = "".join(
        line for line in texts[2].splitlines(keepends=True) if "VALUE=PERIOD" not in line
    )
    texts.append(OUTLOOK_OOF)
    await asyncio.to_thread(
        write_with_caldav_client, radicale, mailbox_calendar.calendar_url, texts
    )
    # No calendar_url on the mailbox: the URL comes from the `{address}/calendar/` template.
    mailbox = Mailbox(mailbox_calendar.address, "eu", timezone="Europe/Berlin")

    async with CalDavBackend(service_config(radicale, monkeypatch)) as backend:
        assert backend.calendar_url(mailbox) == mailbox_calendar.calendar_url
        data = await backend.fetch(mailbox, MARCH)

    busy, oof = BusyType.BUSY, BusyType.OOF
    assert rows(data) == [
        (utc(2024, 3, 4, 9), utc(2024, 3, 4, 10), busy, "Weekly sync"),
        (utc(2024, 3, 5, 15), utc(2024, 3, 5, 16), busy, "Design review"),
        (utc(2024, 3, 5, 18), utc(2024, 3, 5, 19), busy, "Clinic hours"),
        (utc(2024, 3, 7, 21), utc(2024, 3, 7, 22), busy, "Clinic hours"),
        (utc(2024, 3, 11, 8), utc(2024, 3, 11, 16), oof, "Out of office"),
        (utc(2024, 3, 12, 13), utc(2024, 3, 12, 14), busy, "Weekly sync (moved to Tuesday)"),
        (utc(2024, 3, 12, 14), utc(2024, 3, 12, 15), busy, "Standup"),
        (utc(2024, 3, 13, 8), utc(2024, 3, 13, 9), busy, "Dentist (floating time)"),
        (utc(2024, 3, 19, 15), utc(2024, 3, 19, 16), busy, "Design review"),
        (utc(2024, 3, 20, 13), utc(2024, 3, 20, 14), busy, "Clinic hours"),
        (utc(2024, 3, 25, 9), utc(2024, 3, 25, 10), busy, "Weekly sync"),
    ]
    assert data.coverage is None
    assert data.working_hours is not None and data.working_hours.timezone == "Europe/Berlin"
    moved = data.events[5].details
    assert moved.is_exception and moved.is_recurring and moved.is_meeting


async def test_a_window_without_events_is_empty_but_known(
    radicale: RadicaleLab, mailbox_calendar: MailboxCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(
        write_with_caldav_client,
        radicale,
        mailbox_calendar.calendar_url,
        [simple_event("lonely", "20240304T090000Z", "20240304T100000Z", "Lonely")],
    )
    mailbox = Mailbox(
        mailbox_calendar.address,
        "eu",
        calendar_url=mailbox_calendar.calendar_url,
        working_hours=WorkingHoursSpec(("Monday", "Tuesday"), 9 * 60, 15 * 60),
    )
    async with CalDavBackend(
        service_config(radicale, monkeypatch), default_tz="Asia/Tokyo"
    ) as backend:
        before = await backend.fetch(mailbox, Window(utc(2024, 3, 4, 10), utc(2024, 3, 5)))
        touching = await backend.fetch(mailbox, Window(utc(2024, 3, 4, 8), utc(2024, 3, 4, 9)))
        inside = await backend.fetch(
            mailbox, Window(utc(2024, 3, 4, 9, 30), utc(2024, 3, 4, 9, 45))
        )
    assert before.events == () and touching.events == ()
    assert [e.details.subject for e in inside.events] == ["Lonely"]
    assert before.working_hours.timezone == "Asia/Tokyo"
    assert before.working_hours.periods == (WorkingPeriod(("Monday", "Tuesday"), 540, 900),)


async def test_missing_calendar_is_a_backend_failure(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox("nobody@contoso.test", "eu")
    async with CalDavBackend(service_config(radicale, monkeypatch)) as backend:
        with pytest.raises(
            BackendFailure, match=r"calendar not found at http://127\.0\.0\.1:\d+/nobody@"
        ):
            await backend.fetch(mailbox, MARCH)


async def test_wrong_password_is_a_backend_failure(
    radicale: RadicaleLab, mailbox_calendar: MailboxCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = service_config(radicale, monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    mailbox = Mailbox(mailbox_calendar.address, "eu")
    async with CalDavBackend(config) as backend:
        with pytest.raises(BackendFailure, match=r"refused credentials \(HTTP 401\)"):
            await backend.fetch(mailbox, MARCH)


async def test_unset_password_secret_is_a_backend_failure(
    radicale: RadicaleLab, mailbox_calendar: MailboxCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = service_config(radicale, monkeypatch)
    monkeypatch.delenv(PASSWORD_ENV)
    async with CalDavBackend(config) as backend:
        with pytest.raises(BackendFailure, match=f"credentials .* unavailable.*{PASSWORD_ENV}"):
            await backend.fetch(Mailbox(mailbox_calendar.address, "eu"), MARCH)


async def test_stopped_server_fails_quickly(tmp_path: Path) -> None:
    users = {"admin": "a-pw", "cas": "c-pw", "dan@contoso.test": "d-pw"}
    (tmp_path / "pw").write_text("c-pw\n")  # the service password, from a secret file
    mailbox = Mailbox("dan@contoso.test", "eu")
    with RadicaleServer(tmp_path / "private", users) as server:  # stopped on the way out, too
        config = CalDavBackendConfig(
            url=server.url, username="cas", password=SecretRef(file=str(tmp_path / "pw"))
        )
        async with CalDavBackend(config) as backend:
            async with httpx.AsyncClient(trust_env=False) as client:
                url = await ensure_calendar(client, server.url, mailbox.address, ("admin", "a-pw"))
                event = simple_event("e1", "20240304T090000Z", "20240304T100000Z", "x")
                await put_event(client, url, "e1", event, ("admin", "a-pw"))
            assert len((await backend.fetch(mailbox, MARCH)).events) == 1
            server.stop()  # the same backend, with its pooled connection, meets a stopped server
            assert not server.running
            started = time.monotonic()
            with pytest.raises(
                BackendFailure, match=r"cannot connect to CalDAV backend at http://127"
            ):
                await backend.fetch(mailbox, MARCH)
            assert time.monotonic() - started < 2.0


async def test_a_silent_server_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = CalDavBackendConfig(url=f"http://127.0.0.1:{port}/", timeout_seconds=0.3)
    started = time.monotonic()
    try:
        async with CalDavBackend(config) as backend:
            with pytest.raises(BackendFailure, match=r"did not answer within 0\.3s"):
                await backend.fetch(Mailbox("slow@contoso.test", "eu"), MARCH)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 2.0


class CountingTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport; records the most requests ever in flight at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.in_flight = 0
        self.peak = 0
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.requests += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.02)  # hold the slot long enough for requests to overlap
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_thirty_mailboxes_in_parallel_never_exceed_max_connections(
    radicale: RadicaleLab, new_calendar: NewCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    calendars = await asyncio.gather(*(new_calendar("fan") for _ in range(30)))
    limits = httpx.Limits(max_connections=SEED_CONCURRENCY)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as seeder:
        await asyncio.gather(
            *(
                put_event(
                    seeder,
                    cal.calendar_url,
                    f"ev-{i}",
                    simple_event(
                        f"ev-{i}",
                        f"20240304T{i % 24:02d}0000Z",
                        f"20240304T{i % 24:02d}3000Z",
                        cal.address,
                    ),
                    radicale.admin,
                )
                for i, cal in enumerate(calendars)
            )
        )
    transport = CountingTransport(httpx.AsyncHTTPTransport())
    config = service_config(radicale, monkeypatch, max_connections=4)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=10) as client:
        backend = CalDavBackend(config, client=client)
        mailboxes = [Mailbox(cal.address, "eu") for cal in calendars]
        results = await asyncio.gather(*(backend.fetch(m, MARCH) for m in mailboxes))
        await backend.aclose()  # a borrowed client stays open
        assert not client.is_closed

    assert transport.requests == 30
    assert transport.peak == 4
    for i, (mailbox, data) in enumerate(zip(mailboxes, results, strict=True)):
        assert [(e.start, e.details.subject) for e in data.events] == [
            (utc(2024, 3, 4, i % 24), mailbox.address)
        ]
