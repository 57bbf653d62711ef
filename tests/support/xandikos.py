"""Pytest fixtures around a real Xandikos server (`caslab.xandikos.XandikosServer`), the second
CalDAV backend of the suite.

`xandikos` starts one server per test session with an admin account (it writes) and a service
account (what CAS nodes use; Xandikos has no per-collection rights, so both can read all).
`new_principal` makes a fresh principal `/<address>/` with its calendar home, found by address.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from caslab.xandikos import XandikosServer

DOMAIN = "contoso.test"


@dataclass(frozen=True)
class XandikosLab:
    server: XandikosServer
    admin: tuple[str, str]
    service: tuple[str, str]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def xandikos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XandikosLab]:
    admin = ("admin", "admin-" + uuid.uuid4().hex[:8])
    service = ("cas", "cas-" + uuid.uuid4().hex[:8])
    server = XandikosServer(
        tmp_path_factory.mktemp("xandikos"), {admin[0]: admin[1], service[0]: service[1]}
    )
    server.start()
    try:
        yield XandikosLab(server, admin, service)
    finally:
        server.stop()


NewPrincipal = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture
async def new_principal(xandikos: XandikosLab) -> NewPrincipal:
    """An async factory: `await new_principal(prefix="mb")` -> the address of a new principal."""

    async def make(prefix: str = "mb") -> str:
        address = f"{prefix}-{uuid.uuid4().hex[:10]}@{DOMAIN}"
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            await xandikos.server.add_principal(client, address, xandikos.admin)
        return address

    return make
