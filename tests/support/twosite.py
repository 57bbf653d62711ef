"""Two sites in one process: real node apps, fake mailbox data, node-to-node calls in memory.

`TwoSites` builds the node apps of sites `eu` and `us` with `create_app` (the production
factory), each with its own in-process cache store, and routes the eu node's forwarded calls
to the us app through an httpx transport, signed and verified with a real cluster secret. A
third site `ap` has a node nobody answers for. What differs from production is only where the
mailbox data comes from (fakes with fixed events) and that no socket is opened, so the whole
request path (routing, cache, forwarding, projection, codecs, front doors) is exercised and
its output is deterministic.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from cas.app import create_app
from cas.cache.store import MemoryStore
from cas.identity import hash_password
from cas.model.freebusy import BusyType, Event, EventDetails, MailboxData, Window
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from cas.trust import ForwardClaims, sign_request
from sitemap.model import (
    ClientAuth,
    ClientUser,
    Mailbox,
    Permissions,
    SecretRef,
    Site,
    Sitemap,
)

T0 = datetime(2024, 3, 4, 8, tzinfo=UTC)
NODES = {
    "eu": "https://127.0.0.1:9101",
    "us": "https://127.0.0.1:9201",
    "ap": "https://127.0.0.1:9301",  # no app behind it: the site is unreachable
}
SECRET = b"x" * 48
PASSWORDS = {
    "scheduler": "scheduler-pw",
    "ann@contoso.test": "ann-pw",
    "bob@contoso.test": "b",
    "carol@contoso.test": "carol-pw",
}


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _details(subject: str, location: str | None = None, **flags: bool) -> EventDetails:
    return EventDetails(id=None, subject=subject, location=location, **flags)


# What each mailbox's backend holds (legacy ones as an old server gives them: merged only).
DATA: dict[str, MailboxData] = {
    "ann@contoso.test": MailboxData(
        events=(
            Event(
                at(1), at(2), BusyType.BUSY, _details("Design review", "Room 1", is_meeting=True)
            ),
            Event(at(5), at(6), BusyType.BUSY, _details("Doctor", "Clinic", is_private=True)),
            Event(at(7), at(7.5), BusyType.TENTATIVE, _details("Maybe coffee")),
        )
    ),
    "bob@contoso.test": MailboxData(
        events=(
            Event(at(2), at(4), BusyType.OOF, _details("Dentist")),
            Event(at(6), at(7), BusyType.BUSY, _details("1:1", "Room 9", is_meeting=True)),
            Event(at(8), at(9), BusyType.WORKING_ELSEWHERE, _details("From home")),
            Event(at(9), at(9.5), BusyType.BUSY, _details("Therapy", "Elsewhere", is_private=True)),
        )
    ),
    "old-eu@contoso.test": MailboxData(
        events=(Event(at(2), at(3), BusyType.BUSY),),
        coverage=((T0 - timedelta(days=1), T0 + timedelta(hours=8)),),
        merged_only=True,
    ),
    "old-us@contoso.test": MailboxData(
        events=(Event(at(0.5), at(1), BusyType.TENTATIVE), Event(at(4), at(5), BusyType.OOF)),
        merged_only=True,
    ),
}
FAILING = {"eve@contoso.test"}

SITEMAP_MAILBOXES = (
    Mailbox("ann@contoso.test", "eu", aliases=("anna@contoso.test",), display_name="Ann"),
    Mailbox("eve@contoso.test", "eu", display_name="Eve"),
    Mailbox("old-eu@contoso.test", "eu", kind="legacy", legacy_dn="/o=c/ou=eu/cn=old-eu"),
    Mailbox("bob@contoso.test", "us", display_name="Bob"),
    Mailbox("old-us@contoso.test", "us", kind="legacy", legacy_dn="/o=c/ou=us/cn=old-us"),
    Mailbox("kim@contoso.test", "ap", display_name="Kim"),
)
# One request that takes every path: local, local legacy, remote, remote legacy, unknown, a
# failing backend, an unreachable site, and an alias of a mailbox asked for already.
MIXED = [
    "ann@contoso.test",
    "old-eu@contoso.test",
    "bob@contoso.test",
    "old-us@contoso.test",
    "nobody@contoso.test",
    "eve@contoso.test",
    "kim@contoso.test",
    "anna@contoso.test",
]


class DelayedBackend(FakeBackend):
    """A fake backend that takes `delays[address]` seconds for some mailboxes."""

    def __init__(self, *args: Any, delays: Mapping[str, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delays = dict(delays)

        self.versions: dict[str, str] = {}  # a calendar's change tag, as a CalDAV server has
        self.tag_calls = 0

    async def fetch(self, mailbox: Mailbox, window: Window) -> MailboxData:
        await asyncio.sleep(self.delays.get(mailbox.address, 0.0))
        return await super().fetch(mailbox, window)

    def change(self, address: str, data: MailboxData) -> None:
        """What a calendar client's write does: new data, a new change tag."""
        self._data[address] = data
        old = self.versions.get(address, "v0")
        self.versions[address] = f"v{int(old[1:]) + 1}"

    async def ctag(self, mailbox: Mailbox) -> str | None:
        self.tag_calls += 1
        return self.versions.get(mailbox.address, "v0")

    def version_of(self, mailbox: Mailbox) -> str | None:
        return self.versions.get(mailbox.address, "v0")


class Router(httpx.AsyncBaseTransport):
    """Sends each call to the app registered for its origin; any other origin is refused."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.calls: list[str] = []

    def add(self, origin: str, app: Starlette) -> None:
        self.apps[origin] = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        self.calls.append(origin)
        transport = self.apps.get(origin)
        if transport is None:
            raise httpx.ConnectError("connection refused", request=request)
        return await transport.handle_async_request(request)


@dataclass
class TwoSites:
    """`groups` names users (of `PASSWORDS`) that log in through a users file with those
    groups; the others are the site map's client users, without groups."""

    root: Path
    settings: Mapping[str, object] = field(default_factory=dict)
    data: Mapping[str, MailboxData] = field(default_factory=lambda: DATA)
    delays: Mapping[str, float] = field(default_factory=dict)
    permissions: Permissions = field(default_factory=Permissions)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        secret = self.root / "cluster-secret"
        secret.write_text(SECRET.decode() + "\n")
        users = []
        for name, password in PASSWORDS.items():
            if name in self.groups:
                continue
            path = self.root / f"pw-{name}"
            path.write_text(password)
            users.append(ClientUser(name, SecretRef(file=str(path))))
        users_file = None
        if self.groups:
            self.users_file = self.root / "users.txt"
            self.write_users(self.groups)
            users_file = str(self.users_file)
        self.sitemap = Sitemap(
            source="two-sites",
            sites=tuple(Site(name, nodes=(url,)) for name, url in NODES.items()),
            mailboxes=SITEMAP_MAILBOXES,
            domains=("contoso.test",),
            auth=ClientAuth(users=tuple(users), users_file=users_file),
            permissions=self.permissions,
        )
        values = {
            "cluster_secret_file": str(secret),
            "forward_attempts": 1,
            "request_timeout_seconds": 5,
            **self.settings,
        }
        self.router = Router()
        self.backend_calls: dict[str, list[str]] = {}
        self.backends: dict[str, dict[str, DelayedBackend]] = {}
        self.apps = {site: self._app(site, values) for site in ("eu", "us")}

    def _app(self, site: str, values: Mapping[str, object]) -> Starlette:
        local = {m.address for m in SITEMAP_MAILBOXES if m.site == site}
        calls = self.backend_calls.setdefault(site, [])
        mine = {a: d for a, d in self.data.items() if a in local}
        backends: dict[str, DelayedBackend] = {
            kind: DelayedBackend(
                {a: d for a, d in mine.items() if d.merged_only == (kind == "legacy")},
                failing=FAILING & local,
                on_fetch=lambda mailbox, window: calls.append(mailbox.address),
                delays=self.delays,
            )
            for kind in ("modern", "legacy")
        }
        self.backends[site] = backends
        app = create_app(
            load_settings(values, environ={}),
            self.sitemap,
            site,
            backends=backends,
            store=MemoryStore(),
            cache_injected_backends=True,
            peers=httpx.AsyncClient(transport=self.router),
        )
        self.router.add(NODES[site], app)
        return app

    def write_users(self, groups: Mapping[str, tuple[str, ...]]) -> None:
        """(Re)write the users file: each user of `groups` with its password and groups."""
        lines = [
            f"{name}:{hashed(PASSWORDS[name])}:{','.join(names)}" for name, names in groups.items()
        ]
        self.users_file.write_text("\n".join(lines) + "\n")

    def peer_call(self, site: str, body: bytes, *, budget_ms: int | None = None) -> dict[str, str]:
        """Headers that make `body` a request forwarded by a node of the other site (hop 1)."""
        claims = ForwardClaims(
            from_site="us" if site == "eu" else "eu",
            to_site=site,
            requester="scheduler",
            hop=1,
            request_id="peer-test",
            issued_at=int(time.time()),
            nonce=secrets.token_urlsafe(12),
        )
        token = sign_request(SECRET, claims, method="POST", path="/EWS/Exchange.asmx", body=body)
        headers = {"X-CAS-Forwarded": token, "Content-Type": "text/xml; charset=utf-8"}
        if budget_ms is not None:
            headers["X-CAS-Budget-Ms"] = str(budget_ms)
        return headers

    def client(self, site: str = "eu", user: str | None = "scheduler") -> httpx.AsyncClient:
        """A client of a node of `site`, logged in as `user` (None: no login)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.apps[site]),
            base_url=NODES[site],
            auth=(user, PASSWORDS[user]) if user is not None else None,
        )


WINDOW = Window(T0, T0 + timedelta(hours=10))


@functools.cache
def hashed(password: str) -> str:
    """An argon2 hash of `password` (made once per test session: each costs tens of ms)."""
    return hash_password(password)
