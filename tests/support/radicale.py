"""Pytest fixtures around a real Radicale server (`caslab.radicale.RadicaleServer`).

`radicale` starts one server per test session with an admin account (read/write everywhere), a
read-only service account (what CAS nodes use) and a few mailbox users. `new_calendar` makes
fresh, uniquely named mailbox calendars so tests never see each other's events;
`mailbox_calendar` is one such calendar.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio

from caslab.radicale import RadicaleServer, ensure_calendar

DOMAIN = "contoso.test"
MAILBOX_USERS = ("ann", "bob", "carol")
SEED_CONCURRENCY = 8


@dataclass(frozen=True)
class RadicaleLab:
    """A running Radicale and the accounts it knows (name -> password)."""

    server: RadicaleServer
    admin: tuple[str, str]
    service: tuple[str, str]
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url


@dataclass(frozen=True)
class MailboxCalendar:
    address: str
    calendar_url: str


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleLab]:
    admin = ("admin", "admin-" + uuid.uuid4().hex[:8])
    service = ("cas", "cas-" + uuid.uuid4().hex[:8])
    users = {f"{name}@{DOMAIN}": f"{name}-pw" for name in MAILBOX_USERS}
    accounts = {admin[0]: admin[1], service[0]: service[1], **users}
    server = RadicaleServer(
        tmp_path_factory.mktemp("radicale"), accounts, admins=[admin[0]], readers=[service[0]]
    )
    server.start()
    try:
        yield RadicaleLab(server, admin, service, users)
    finally:
        server.stop()


NewCalendar = Callable[..., Awaitable[MailboxCalendar]]


@pytest_asyncio.fixture
async def new_calendar(radicale: RadicaleLab) -> NewCalendar:
    """An async factory: `await new_calendar(prefix="mb")` -> a fresh, empty mailbox calendar.

    Safe to call many times at once (`asyncio.gather`): at most `SEED_CONCURRENCY` run together,
    because Radicale's built-in server resets connections in larger bursts.
    """
    gate = asyncio.Semaphore(SEED_CONCURRENCY)

    async def make(prefix: str = "mb") -> MailboxCalendar:
        address = f"{prefix}-{uuid.uuid4().hex[:10]}@{DOMAIN}"
        async with gate, httpx.AsyncClient(trust_env=False, timeout=10) as client:
            url = await ensure_calendar(client, radicale.url, address, radicale.admin)
        return MailboxCalendar(address, url)

    return make


@pytest_asyncio.fixture
async def mailbox_calendar(new_calendar: NewCalendar) -> MailboxCalendar:
    return await new_calendar()
