"""The legacy mailbox backend (cas.sources.oldserver) over in-process transports.

The emulator app is called through httpx's ASGI transport for real answers; `MockTransport`
plays broken and slow old servers.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cas.errors import BackendFailure, MailboxError
from cas.model.ask import Ask
from cas.model.availability import FreeBusyView
from cas.model.freebusy import MailboxData, Window
from cas.model.projection import Requester
from cas.sources.oldserver import OldServerSource
from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.server import create_legacy_app
from caslab.oldserver.store import FreeBusyStore
from sitemap.model import LegacyServerConfig, Mailbox, SecretRef

UTC = UTC
START = datetime(2024, 3, 4, 8, tzinfo=UTC)
WINDOW = Window(START, START + timedelta(hours=4))
URL = "http://old.contoso.test/public/"
ANN = Mailbox("ann@contoso.test", "eu", "legacy", "/o=Contoso/ou=EU/cn=Recipients/cn=ann")
BOB = Mailbox("bob@contoso.test", "eu", "legacy", "/o=Contoso/ou=EU/cn=Recipients/cn=bob")
ZED = Mailbox("zed@contoso.test", "eu", "legacy", "/o=Contoso/ou=EU/cn=Recipients/cn=zed")


def emulator(tmp_path: Path, seen: list[httpx.Request]) -> httpx.AsyncClient:
    store = FreeBusyStore(tmp_path)
    store.publish(
        ANN.legacy_dn,
        busy=[(START + timedelta(hours=1), START + timedelta(hours=2, minutes=30))],
        publish_start=datetime(2024, 3, 1, tzinfo=UTC),
        publish_end=datetime(2024, 4, 1, tzinfo=UTC),
    )
    directory = {m.address: DirectoryEntry(m.legacy_dn, m.address) for m in (ANN, BOB)}
    app = create_legacy_app(store, directory)

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), event_hooks={"request": [record]}
    )


def backend(client: httpx.AsyncClient, **config: object) -> OldServerSource:
    return OldServerSource(LegacyServerConfig(URL, **config), site="eu", client=client)


def ask(window: Window) -> Ask:
    return Ask(window, 30, FreeBusyView.MERGED_ONLY, UTC, Requester("t"), time.monotonic() + 9, 9)  # type: ignore[arg-type]


def digits(data, window, interval):
    """The digits a node renders for `data`: recomputed from its events and coverage."""
    from cas.model.freebusy import merged_free_busy

    return merged_free_busy(data.events, window, interval, data.coverage)


async def test_fetch_many_is_one_get_for_all_mailboxes(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    async with emulator(tmp_path, seen) as client:
        results = await backend(client).fetch_many([ANN, BOB, ZED, ANN], WINDOW, 30)
    assert len(seen) == 1
    assert seen[0].url.params.get_list("u") == [
        "SMTP:ann@contoso.test",
        "SMTP:bob@contoso.test",
        "SMTP:zed@contoso.test",
    ]
    assert seen[0].url.params["start"] == "2024-03-04T08:00:00Z"
    ann = results["ann@contoso.test"]
    assert isinstance(ann, MailboxData) and ann.merged_only
    assert digits(ann, WINDOW, 30) == "00222000"  # busy 09:00-10:30 in 30-minute slots from 08:00
    assert ann.coverage == ((WINDOW.start, WINDOW.end),)
    # bob has no message, zed is unknown to the old server: no data, never free
    for address in ("bob@contoso.test", "zed@contoso.test"):
        data = results[address]
        assert isinstance(data, MailboxData)
        assert digits(data, WINDOW, 30) == "44444444" and data.coverage == ()


async def test_a_batch_is_one_get_at_five_minute_digits(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    async with emulator(tmp_path, seen) as client:
        answers = await backend(client).fetch([ANN, BOB], ask(WINDOW))
    assert len(seen) == 1 and seen[0].url.params["interval"] == "5"
    ann, bob = answers["ann@contoso.test"], answers["bob@contoso.test"]
    assert isinstance(ann, MailboxData) and isinstance(bob, MailboxData)
    # the 15-minute digits of the same data, read back from the 5-minute answer
    assert digits(ann, WINDOW, 15) == "0000222222000000" and digits(bob, WINDOW, 15) == "4" * 16


async def test_more_than_100_mailboxes_are_split(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    many = [Mailbox(f"u{i}@contoso.test", "eu", "legacy") for i in range(150)]
    async with emulator(tmp_path, seen) as client:
        results = await backend(client).fetch_many(many, WINDOW, 60)
    assert sorted(len(r.url.params.get_list("u")) for r in seen) == [50, 100]
    assert len(results) == 150


def mock(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


WM = '<a:response xmlns:a="WM"><a:recipients>{}</a:recipients></a:response>'


def item(email: str, fbdata: str) -> str:
    return f'<a:item><a:email type="SMTP">{email}</a:email><a:fbdata>{fbdata}</a:fbdata></a:item>'


async def test_per_mailbox_problems_stay_per_mailbox() -> None:
    body = WM.format(item("ann@contoso.test", "0123") + item("bob@contoso.test", "01x"))
    async with mock(lambda request: httpx.Response(200, text=body)) as client:
        results = await backend(client).fetch_many([ANN, BOB, ZED], WINDOW, 60)
    assert isinstance(results["ann@contoso.test"], MailboxData)
    assert "characters other than 0-4" in str(results["bob@contoso.test"])
    assert str(results["zed@contoso.test"]) == (
        f"old server at {URL} has no free/busy for zed@contoso.test"
    )


@pytest.mark.parametrize(
    ("status", "text", "message"),
    [
        (503, "Service Unavailable", f"old server at {URL} answered HTTP 503"),
        (401, "Logon", "answered HTTP 401"),
        (200, "<html><form>owaauth</form>", "unusable answer from old server"),
        (200, "", "unusable answer from old server"),
    ],
)
async def test_a_bad_answer_fails_every_mailbox_of_the_get(
    status: int, text: str, message: str
) -> None:
    async with mock(lambda request: httpx.Response(status, text=text)) as client:
        results = await backend(client).fetch_many([ANN, BOB], WINDOW, 60)
        assert len(results) == 2
        assert all(isinstance(r, BackendFailure) and message in str(r) for r in results.values())
        answers = await backend(client).fetch([ANN], ask(WINDOW))
    [error] = answers.values()
    assert isinstance(error, MailboxError) and error.code == "ErrorFreeBusyGenerationFailed"
    assert message.split(" at ")[0] in error.message and error.site == "eu"


async def test_a_slow_old_server_fails_within_the_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with mock(slow) as client:
        began = time.monotonic()
        results = await backend(client, timeout_seconds=0.2).fetch_many([ANN], WINDOW, 60)
    assert time.monotonic() - began < 1.5
    assert "did not answer within 0.2s" in str(results["ann@contoso.test"])


async def test_basic_auth_from_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGACY_TEST_PASSWORD", "s3cret")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=WM.format(item("ann@contoso.test", "0000")))

    async with mock(answer) as client:
        legacy = backend(client, username="fb", password=SecretRef(env="LEGACY_TEST_PASSWORD"))
        await legacy.fetch_many([ANN], WINDOW, 60)
        missing = backend(client, username="fb", password=SecretRef(env="LEGACY_TEST_NONE"))
        failed = await missing.fetch_many([ANN], WINDOW, 60)
    assert seen[0].headers["authorization"] == "Basic ZmI6czNjcmV0"
    assert "credentials for" in str(failed["ann@contoso.test"])


async def test_an_interval_out_of_range_is_a_caller_bug() -> None:
    async with mock(lambda request: httpx.Response(500)) as client:
        with pytest.raises(ValueError, match="outside 5..1440"):
            await backend(client).fetch_many([ANN], WINDOW, 1441)
