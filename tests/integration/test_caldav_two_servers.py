"""The same calendars give the same answers from Radicale and from Xandikos: the cases of the
issue, changes between reads, and the lab's seed data.

Each case stores events with plain CalDAV on both servers and reads them through `CalDavBackend`
with a one-calendar template (`{address}/calendar/` on Radicale, `{address}/calendars/work/` on
Xandikos). Expected times are worked out by hand in UTC.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from cas.model.freebusy import BusyType, Window
from cas.sources.caldav import CalDavBackend
from caslab.radicale import put_event
from sitemap.model import CalDavBackendConfig, Mailbox, SecretRef
from tests.support.radicale import NewCalendar, RadicaleLab
from tests.support.xandikos import NewPrincipal, XandikosLab

PASSWORD_ENV = "CAS_TEST_TWO_SERVERS_PASSWORD"


def z(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ics(*lines: str) -> str:
    body = "".join(line + "\r\n" for line in lines)
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cas tests//EN\r\nBEGIN:VEVENT\r\n"
        f"DTSTAMP:20270101T000000Z\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@dataclass
class Target:
    """One server with one fresh mailbox calendar, and a backend that reads it."""

    name: str
    mailbox: Mailbox
    calendar_url: str
    admin: tuple[str, str]
    backend: CalDavBackend

    async def put(self, client: httpx.AsyncClient, uid: str, text: str) -> str:
        return await put_event(client, self.calendar_url, uid, text, self.admin)

    async def busy(self, window: Window) -> list[tuple[datetime, datetime, BusyType]]:
        data = await self.backend.fetch(self.mailbox, window)
        return [(e.start, e.end, e.busy_type) for e in data.events]


MakeTarget = Callable[[str], Awaitable[Target]]


@pytest_asyncio.fixture
async def target(
    radicale: RadicaleLab,
    xandikos: XandikosLab,
    new_calendar: NewCalendar,
    new_principal: NewPrincipal,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[MakeTarget]:
    backends: list[CalDavBackend] = []

    async def make(server: str) -> Target:
        if server == "radicale":
            made = await new_calendar(prefix="two")
            address, url, admin, service = (
                made.address,
                made.calendar_url,
                radicale.admin,
                radicale.service,
            )
            config_path, base = "{address}/calendar/", radicale.url
        else:
            address = await new_principal(prefix="two")
            async with httpx.AsyncClient(trust_env=False) as client:
                url = await xandikos.server.make_calendar(client, address, "work", xandikos.admin)
            admin, service = xandikos.admin, xandikos.service
            config_path, base = "{address}/calendars/work/", xandikos.url
        monkeypatch.setenv(f"{PASSWORD_ENV}_{server.upper()}", service[1])
        config = CalDavBackendConfig(
            url=base,
            username=service[0],
            password=SecretRef(env=f"{PASSWORD_ENV}_{server.upper()}"),
            calendar_path=config_path,
        )
        backend = CalDavBackend(config, default_tz="Europe/Amsterdam")
        backends.append(backend)
        mailbox = Mailbox(address, "eu", timezone="Europe/Amsterdam")
        assert backend.calendar_url(mailbox) == url
        return Target(server, mailbox, url, admin, backend)

    yield make
    for backend in backends:
        await backend.aclose()


SERVERS = ["radicale", "xandikos"]
MARCH = Window(z(2027, 3, 1), z(2027, 4, 1))


@pytest.mark.parametrize("server", SERVERS)
async def test_an_occurrence_only_rdate_puts_in_the_window_is_busy(
    target: MakeTarget, server: str
) -> None:
    """Xandikos's time-range filter leaves this object out; the node must not depend on it."""
    t = await target(server)
    async with httpx.AsyncClient(trust_env=False) as client:
        await t.put(
            client,
            "rdate-only",
            ics(
                "UID:rdate-only",
                "SUMMARY:Second session",
                "DTSTART:20270110T100000Z",
                "DTEND:20270110T110000Z",
                "RDATE:20270323T100000Z",
            ),
        )
    assert await t.busy(MARCH) == [(z(2027, 3, 23, 10), z(2027, 3, 23, 11), BusyType.BUSY)]
    assert await t.busy(Window(z(2027, 3, 23, 10, 30), z(2027, 3, 23, 10, 45))) == [
        (z(2027, 3, 23, 10), z(2027, 3, 23, 11), BusyType.BUSY)
    ]


@pytest.mark.parametrize("server", SERVERS)
async def test_an_exdate_removes_only_its_own_occurrence(target: MakeTarget, server: str) -> None:
    t = await target(server)
    async with httpx.AsyncClient(trust_env=False) as client:
        await t.put(
            client,
            "exdate-instant",
            ics(
                "UID:exdate-instant",
                "DTSTART;TZID=Europe/Amsterdam:20270320T140000",
                "DTEND;TZID=Europe/Amsterdam:20270320T143000",
                "RRULE:FREQ=DAILY;COUNT=4;BYHOUR=14,15",
                "EXDATE:20270321T140000Z",
            ),
        )
    busy = BusyType.BUSY
    assert await t.busy(MARCH) == [
        (z(2027, 3, 20, 13), z(2027, 3, 20, 13, 30), busy),
        (z(2027, 3, 20, 14), z(2027, 3, 20, 14, 30), busy),
        (z(2027, 3, 21, 13), z(2027, 3, 21, 13, 30), busy),
    ]


@pytest.mark.parametrize("server", SERVERS)
async def test_changes_after_a_read_are_seen_by_the_next_read(
    target: MakeTarget, server: str
) -> None:
    t = await target(server)
    first = ics("UID:first", "DTSTART:20270305T090000Z", "DTEND:20270305T100000Z")
    second = ics("UID:second", "DTSTART:20270306T090000Z", "DTEND:20270306T100000Z")
    moved = ics("UID:first", "DTSTART:20270305T120000Z", "DTEND:20270305T130000Z")
    async with httpx.AsyncClient(trust_env=False) as client:
        first_url = await t.put(client, "first", first)
        assert await t.busy(MARCH) == [(z(2027, 3, 5, 9), z(2027, 3, 5, 10), BusyType.BUSY)]
        await t.put(client, "second", second)
        await t.put(client, "first", moved)
        assert await t.busy(MARCH) == [
            (z(2027, 3, 5, 12), z(2027, 3, 5, 13), BusyType.BUSY),
            (z(2027, 3, 6, 9), z(2027, 3, 6, 10), BusyType.BUSY),
        ]
        deleted = await client.delete(first_url, auth=t.admin)
        assert deleted.status_code in (200, 204)
        assert await t.busy(MARCH) == [(z(2027, 3, 6, 9), z(2027, 3, 6, 10), BusyType.BUSY)]


@pytest.mark.parametrize("server", SERVERS)
async def test_a_long_running_series_is_busy_years_later(target: MakeTarget, server: str) -> None:
    t = await target(server)
    async with httpx.AsyncClient(trust_env=False) as client:
        await t.put(
            client,
            "weekly",
            ics(
                "UID:weekly",
                "DTSTART;TZID=Europe/Amsterdam:20200106T090000",
                "DTEND;TZID=Europe/Amsterdam:20200106T093000",
                "RRULE:FREQ=WEEKLY;BYDAY=MO",
            ),
        )
    # Monday 22 March 2027, 09:00 CET = 08:00Z
    week = Window(z(2027, 3, 22), z(2027, 3, 29))
    assert await t.busy(week) == [(z(2027, 3, 22, 8), z(2027, 3, 22, 8, 30), BusyType.BUSY)]


# --- the lab's seed data ------------------------------------------------------------------------

SEED_START = datetime(2027, 3, 1, tzinfo=UTC)
SEED_DAYS = 14
SEED_GATE = 4  # Radicale's built-in server resets connections in larger bursts


async def test_the_lab_seed_data_gives_the_same_answers_from_both_servers(
    radicale: RadicaleLab,
    xandikos: XandikosLab,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lab's 72 modern mailboxes (three sites of 24), seeded on both servers, read alike:
    every event's times, busy type and details, mailbox by mailbox."""
    from caslab.radicale import ensure_calendar
    from caslab.seed import generate_calendar, generate_directory

    directory = generate_directory(["eu", "us", "apac"], 24, "contoso.test")
    people = [m for site in directory.values() for m in site]
    assert len(people) == 72
    tag = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(SEED_GATE)
    monkeypatch.setenv(PASSWORD_ENV + "_SEED_R", radicale.admin[1])
    monkeypatch.setenv(PASSWORD_ENV + "_SEED_X", xandikos.admin[1])
    on_radicale = CalDavBackend(
        CalDavBackendConfig(
            url=radicale.url,
            username=radicale.admin[0],
            password=SecretRef(env=PASSWORD_ENV + "_SEED_R"),
        )
    )
    on_xandikos = CalDavBackend(
        CalDavBackendConfig(
            url=xandikos.url,
            username=xandikos.admin[0],
            password=SecretRef(env=PASSWORD_ENV + "_SEED_X"),
        )
    )
    window = Window(SEED_START, SEED_START + timedelta(days=SEED_DAYS))

    async def one(n: int, person) -> tuple[list, list, int]:
        address = person.address.replace("@", f"-{tag}@")
        events = generate_calendar(
            person, start=SEED_START.date(), days=SEED_DAYS, rng_seed=1000 + n
        )
        async with gate, httpx.AsyncClient(trust_env=False, timeout=20) as client:
            r_url = await ensure_calendar(client, radicale.url, address, radicale.admin)
            await xandikos.server.add_principal(client, address, xandikos.admin)
            x_url = await xandikos.server.make_calendar(client, address, "calendar", xandikos.admin)
            for event in events:
                await put_event(client, r_url, event.uid, event.ics, radicale.admin)
                await put_event(client, x_url, event.uid, event.ics, xandikos.admin)
            answers = []
            for backend, url in ((on_radicale, r_url), (on_xandikos, x_url)):
                mailbox = Mailbox(address, "eu", timezone=person.timezone, calendar_url=url)
                data = await backend.fetch(mailbox, window)
                answers.append([(e.start, e.end, e.busy_type, e.details) for e in data.events])
        return answers[0], answers[1], len(events)

    try:
        results = await asyncio.gather(*(one(n, p) for n, p in enumerate(people)))
    finally:
        await on_radicale.aclose()
        await on_xandikos.aclose()
    for person, (from_radicale, from_xandikos, stored) in zip(people, results):
        assert stored > 0 and from_radicale, person
        assert from_radicale == from_xandikos, person.address
