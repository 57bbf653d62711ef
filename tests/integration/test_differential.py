"""Differential test: generated calendars, written to real CalDAV servers, read by a node.

Hypothesis generates a mailbox's calendar (`tests.support.calendar_strategies`); it is stored
with plain CalDAV on Radicale and on Xandikos; a node (the real app, in process, with the real
CalDAV backend) answers `POST /api/v1/availability` for each; and its merged string is compared,
slot by slot, with an independent expansion (`tests.support.oracle`: dateutil's rrule and
dateutil's zones). A disagreement names the slot, the events the oracle has there, and the
calendar text.

The CI run is bounded: `CAS_DIFFERENTIAL_EXAMPLES` calendars (default 25), no deadline. A longer
run is the same test with a larger count (see the README).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from hypothesis import HealthCheck, given, settings

from cas.app import create_app
from cas.settings import load_settings
from cas.sources.caldav import CalDavBackend
from caslab.radicale import ensure_calendar, put_event
from sitemap.model import CalDavBackendConfig, ClientAuth, Mailbox, SecretRef, Site, Sitemap
from tests.support.calendar_strategies import calendars
from tests.support.oracle import GenEvent, ics, merged
from tests.support.radicale import RadicaleLab
from tests.support.xandikos import XandikosLab

EXAMPLES = int(os.environ.get("CAS_DIFFERENTIAL_EXAMPLES", "25"))
WINDOW_START = datetime(2027, 3, 8, tzinfo=UTC)
WINDOW_END = datetime(2027, 4, 12, tzinfo=UTC)
INTERVAL = 15
SLOTS = int((WINDOW_END - WINDOW_START) / timedelta(minutes=INTERVAL))
COMPARED = {"calendars": 0, "slots": 0}
PASSWORD_ENV = "CAS_DIFFERENTIAL_PASSWORD"  # the admin password, named as a site map would


async def store_on_radicale(lab: RadicaleLab, address: str, texts: dict[str, str]) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        url = await ensure_calendar(client, lab.url, address, lab.admin)
        for uid, text in texts.items():
            await put_event(client, url, uid, text, lab.admin)
    return url


async def store_on_xandikos(lab: XandikosLab, address: str, texts: dict[str, str]) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        await lab.server.add_principal(client, address, lab.admin)
        url = await lab.server.make_calendar(client, address, "calendar", lab.admin)
        for uid, text in texts.items():
            await put_event(client, url, uid, text, lab.admin)
    return url


async def node_merged(backend: CalDavBackend, mailbox: Mailbox) -> str:
    sitemap = Sitemap(
        source="differential",
        sites=(Site("eu", timezone=mailbox.timezone or "UTC"),),
        mailboxes=(mailbox,),
        auth=ClientAuth(anonymous=True),
    )
    app = create_app(load_settings({}, environ={}), sitemap, "eu", backends={"modern": backend})
    request = {
        "schedules": [mailbox.address],
        "startTime": {"dateTime": WINDOW_START.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "endTime": {"dateTime": WINDOW_END.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "availabilityViewInterval": INTERVAL,
        "view": "MergedOnly",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        response = await client.post("/api/v1/availability", json=request)
    assert response.status_code == 200, response.text
    entry = response.json()["value"][0]
    assert "error" not in entry, entry
    return str(entry["availabilityView"])


def explain(
    server: str, got: str, want: str, events: list[GenEvent], owner: str, texts: dict[str, str]
) -> str:
    """Which slots differ, what the oracle has there, and the calendar."""
    rows = []
    intervals = [i for event in events for i in event.intervals(owner)]
    for index, (g, w) in enumerate(zip(got, want)):
        if g != w and len(rows) < 8:
            slot = WINDOW_START + index * timedelta(minutes=INTERVAL)
            here = [
                f"{what} [{a:%m-%d %H:%M}Z-{b:%m-%d %H:%M}Z] digit {d}"
                for a, b, d, what in intervals
                if a < slot + timedelta(minutes=INTERVAL) and b > slot
            ]
            rows.append(f"  slot {index} ({slot:%Y-%m-%d %H:%M}Z): node {g}, expected {w}; {here}")
    calendar = "\n".join(texts.values())
    return f"{server} (owner zone {owner}) disagrees:\n" + "\n".join(rows) + f"\n{calendar}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(calendar=calendars())
def test_node_agrees_with_an_independent_expansion(
    radicale: RadicaleLab, xandikos: XandikosLab, calendar: tuple[str, list[GenEvent]]
) -> None:
    owner, events = calendar
    texts = {event.uid: ics(event, owner) for event in events}
    want = merged(
        [i for event in events for i in event.intervals(owner)], WINDOW_START, WINDOW_END, INTERVAL
    )
    assert len(want) == SLOTS

    async def run() -> None:
        for server, lab, store in (
            ("radicale", radicale, store_on_radicale),
            ("xandikos", xandikos, store_on_xandikos),
        ):
            address = f"diff-{uuid.uuid4().hex[:10]}@contoso.test"
            url = await store(lab, address, texts)  # type: ignore[arg-type]
            os.environ[PASSWORD_ENV] = lab.admin[1]
            config = CalDavBackendConfig(
                url=lab.url, username=lab.admin[0], password=SecretRef(env=PASSWORD_ENV)
            )
            backend = CalDavBackend(config, default_tz=owner)
            try:
                mailbox = Mailbox(address, "eu", timezone=owner, calendar_url=url)
                got = await node_merged(backend, mailbox)
            finally:
                await backend.aclose()
            assert got == want, explain(server, got, want, events, owner, texts)
            COMPARED["calendars"] += 1
            COMPARED["slots"] += len(want)

    asyncio.run(run())


def test_the_run_compared_what_it_says() -> None:
    """Printed with -s; the counts a run compared (0 when the test above did not run first)."""
    print(f"differential: {COMPARED['calendars']} calendars, {COMPARED['slots']} slots compared")
