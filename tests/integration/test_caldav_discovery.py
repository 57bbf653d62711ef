"""Every calendar of a mailbox, found as CalDAV clients find it, on Radicale and on Xandikos.

Each mailbox gets several calendars (work, a team calendar, a personal one) plus ones that must
not count: a transparent calendar and a task list. The node is given only the server and a
discovery mode, never a calendar's name. What the node reports is compared with the events that
were written into the calendars that count.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest

from cas.errors import BackendFailure, CalendarNotFound
from cas.model.freebusy import Window
from cas.sources.caldav import CalDavBackend
from caslab.radicale import put_event
from sitemap.model import CalDavBackendConfig, Mailbox, SecretRef
from tests.support.calendars import make_calendar, make_collection
from tests.support.radicale import RadicaleLab
from tests.support.xandikos import NewPrincipal, XandikosLab

MARCH = Window(datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC))
PASSWORD_ENV = "CAS_TEST_DISCOVERY_PASSWORD"


def event(uid: str, day: int) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cas tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:{uid}\r\n"
        f"DTSTART:202703{day:02d}T090000Z\r\nDTEND:202703{day:02d}T100000Z\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def config(base: str, service: tuple[str, str], monkeypatch: pytest.MonkeyPatch, **more):
    monkeypatch.setenv(PASSWORD_ENV, service[1])
    return CalDavBackendConfig(
        url=base, username=service[0], password=SecretRef(env=PASSWORD_ENV), **more
    )


def subjects(data) -> list[str]:
    return sorted(e.details.subject for e in data.events)


async def fill(client: httpx.AsyncClient, admin, calendars: dict[str, str]) -> None:
    """One event per calendar, on a day of its own, named after the calendar."""
    for day, (name, url) in enumerate(sorted(calendars.items()), start=2):
        await put_event(client, url, name, event(name, day), admin)


# --- Radicale: principal /<address>/, calendars right below it ------------------------------


async def radicale_mailbox(radicale: RadicaleLab, prefix: str) -> tuple[str, dict[str, str]]:
    """A principal with work, team and personal calendars, a transparent one and a task list."""
    import uuid

    address = f"{prefix}-{uuid.uuid4().hex[:8]}@contoso.test"
    principal = f"{radicale.url}/{quote(address, safe='@+')}/"
    urls = {name: f"{principal}{name}/" for name in ("work", "team", "personal", "holidays")}
    async with httpx.AsyncClient(trust_env=False) as client:
        await make_collection(client, principal, radicale.admin)
        for name in ("work", "team", "personal"):
            await make_calendar(client, urls[name], radicale.admin)
        await make_calendar(client, urls["holidays"], radicale.admin, transparency="text")
        tasks = await make_calendar(
            client, f"{principal}tasks/", radicale.admin, components=("VTODO",)
        )
        await fill(client, radicale.admin, urls)
        await put_event(client, tasks, "in-tasks", event("in-tasks", 20), radicale.admin)
    return address, urls


async def test_radicale_principal_discovery_counts_every_opaque_event_calendar(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, urls = await radicale_mailbox(radicale, "disc")
    settings = config(radicale.url, radicale.service, monkeypatch, discovery="principal")
    mailbox = Mailbox(address, "eu")
    async with CalDavBackend(settings) as backend:
        assert sorted(await backend.calendars(mailbox)) == sorted(
            urls[n] for n in ("work", "team", "personal")
        )
        assert subjects(await backend.fetch(mailbox, MARCH)) == ["personal", "team", "work"]


async def test_the_combined_ctag_changes_when_any_calendar_changes(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, urls = await radicale_mailbox(radicale, "ctag")
    settings = config(radicale.url, radicale.service, monkeypatch, discovery="principal")
    mailbox = Mailbox(address, "eu")
    async with CalDavBackend(settings) as backend, httpx.AsyncClient(trust_env=False) as client:
        before = await backend.ctag(mailbox)
        assert before is not None and before == await backend.ctag(mailbox)
        await put_event(client, urls["team"], "late", event("late", 25), radicale.admin)
        after = await backend.ctag(mailbox)
        assert after is not None and after != before
        assert "late" in subjects(await backend.fetch(mailbox, MARCH))


async def test_found_calendars_are_kept_until_the_refresh_interval(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, _ = await radicale_mailbox(radicale, "keep")
    mailbox = Mailbox(address, "eu")
    kept = config(radicale.url, radicale.service, monkeypatch, discovery="principal")
    fresh = config(
        radicale.url,
        radicale.service,
        monkeypatch,
        discovery="principal",
        discovery_refresh_seconds=1e-9,
    )
    async with CalDavBackend(kept) as keeping, CalDavBackend(fresh) as refreshing:
        assert len(await keeping.calendars(mailbox)) == 3
        assert len(await refreshing.calendars(mailbox)) == 3
        async with httpx.AsyncClient(trust_env=False) as client:
            extra = f"{radicale.url}/{quote(address, safe='@+')}/extra/"
            await make_calendar(client, extra, radicale.admin)
            await put_event(client, extra, "extra", event("extra", 27), radicale.admin)
        assert len(await keeping.calendars(mailbox)) == 3
        assert extra in await refreshing.calendars(mailbox)
        assert "extra" in subjects(await refreshing.fetch(mailbox, MARCH))


async def test_a_calendar_removed_since_discovery_is_found_gone_and_the_rest_still_count(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, urls = await radicale_mailbox(radicale, "gone")
    settings = config(radicale.url, radicale.service, monkeypatch, discovery="principal")
    mailbox = Mailbox(address, "eu")
    async with CalDavBackend(settings) as backend:
        assert len(await backend.calendars(mailbox)) == 3
        async with httpx.AsyncClient(trust_env=False) as client:
            removed = await client.delete(urls["team"], auth=radicale.admin)
            assert removed.status_code in (200, 204)
        assert subjects(await backend.fetch(mailbox, MARCH)) == ["personal", "work"]


async def test_radicale_offers_no_principal_search_and_says_so(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, _ = await radicale_mailbox(radicale, "nosearch")
    settings = config(radicale.url, radicale.service, monkeypatch, discovery="search")
    async with CalDavBackend(settings) as backend:
        with pytest.raises(CalendarNotFound, match=f"no principal with address {address}"):
            await backend.fetch(Mailbox(address, "eu"), MARCH)


async def test_a_principal_without_calendars_is_an_error_not_free(
    radicale: RadicaleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = "empty-home@contoso.test"
    async with httpx.AsyncClient(trust_env=False) as client:
        await make_collection(client, f"{radicale.url}/{address}/", radicale.admin)
    settings = config(radicale.url, radicale.service, monkeypatch, discovery="principal")
    async with CalDavBackend(settings) as backend:
        with pytest.raises(CalendarNotFound, match="no calendar found for empty-home@"):
            await backend.fetch(Mailbox(address, "eu"), MARCH)


# --- Xandikos: principal /<address>/, calendars in its home /<address>/calendars/ ----------


async def xandikos_mailbox(
    xandikos: XandikosLab, new_principal: NewPrincipal, prefix: str
) -> tuple[str, dict[str, str]]:
    address = await new_principal(prefix=prefix)
    home = xandikos.server.principal_url(address) + "calendars/"
    urls = {name: f"{home}{name}/" for name in ("work", "team", "personal")}
    async with httpx.AsyncClient(trust_env=False) as client:
        for url in urls.values():
            await make_calendar(client, url, xandikos.admin)
        tasks = await make_calendar(client, f"{home}tasks/", xandikos.admin, components=("VTODO",))
        await fill(client, xandikos.admin, urls)
        todo = event("in-tasks", 20).replace("VEVENT", "VTODO")
        await put_event(client, tasks, "in-tasks", todo, xandikos.admin)
    return address, urls


@pytest.mark.parametrize("mode", ["principal", "search"])
async def test_xandikos_discovery_by_principal_and_by_search(
    xandikos: XandikosLab,
    new_principal: NewPrincipal,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    address, urls = await xandikos_mailbox(xandikos, new_principal, "x" + mode)
    # Another principal whose address contains this one: servers search by substring.
    async with httpx.AsyncClient(trust_env=False) as client:
        await xandikos.server.add_principal(client, "jo" + address, xandikos.admin)
    settings = config(xandikos.url, xandikos.service, monkeypatch, discovery=mode)
    mailbox = Mailbox(address, "eu")
    async with CalDavBackend(settings) as backend:
        assert sorted(await backend.calendars(mailbox)) == sorted(urls.values())
        assert subjects(await backend.fetch(mailbox, MARCH)) == ["personal", "team", "work"]


async def test_xandikos_search_for_an_unknown_address_is_not_found(
    xandikos: XandikosLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config(xandikos.url, xandikos.service, monkeypatch, discovery="search")
    async with CalDavBackend(settings) as backend:
        with pytest.raises(CalendarNotFound, match="no principal with address nobody@"):
            await backend.fetch(Mailbox("nobody@contoso.test", "eu"), MARCH)


async def test_an_own_calendar_url_wins_over_discovery(
    xandikos: XandikosLab, new_principal: NewPrincipal, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, urls = await xandikos_mailbox(xandikos, new_principal, "own")
    settings = config(xandikos.url, xandikos.service, monkeypatch, discovery="search")
    mailbox = Mailbox(address, "eu", calendar_url=urls["team"])
    async with CalDavBackend(settings) as backend:
        assert await backend.calendars(mailbox) == (urls["team"],)
        assert subjects(await backend.fetch(mailbox, MARCH)) == ["team"]


# --- a server that offers only Digest --------------------------------------------------------


async def test_a_server_offering_only_digest_gets_a_clear_error() -> None:
    challenge = 'Digest realm="calendars", qop="auth", nonce="abc123", algorithm=MD5'
    seen: list[bytes] = []

    async def digest_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\n"
            + f"WWW-Authenticate: {challenge}\r\n".encode()
            + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(digest_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = CalDavBackendConfig(url=f"http://127.0.0.1:{port}/", username="cas")
    try:
        async with CalDavBackend(settings) as backend:
            with pytest.raises(BackendFailure) as caught:
                await backend.fetch(Mailbox("ann@contoso.test", "eu"), MARCH)
    finally:
        server.close()
        await server.wait_closed()
    message = str(caught.value)
    assert "asks for Digest authentication" in message
    assert 'WWW-Authenticate: Digest realm="calendars"' in message
    assert "HTTP Basic" in message
    assert seen and b"Authorization: Basic" in seen[0]
