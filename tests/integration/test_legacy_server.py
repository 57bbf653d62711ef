"""The old-server emulator as a real `cas legacy-server` process on loopback.

Seeded through its publishing calls (intervals and an .ics), then asked the way DavMail and Zimbra
ask, and through `OldServerSource`. Every expected digit string is worked out by hand in a comment.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cas.errors import MailboxError
from cas.model.ask import Ask
from cas.model.availability import FreeBusyView
from cas.model.freebusy import MailboxData, Window
from cas.model.projection import Requester
from cas.sources.oldserver import OldServerSource
from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.server import LegacyServer
from sitemap.model import LegacyServerConfig, Mailbox

UTC = UTC
MARCH = {
    "publish_start": datetime(2024, 3, 1, tzinfo=UTC),
    "publish_end": datetime(2024, 5, 1, tzinfo=UTC),
}
DIRECTORY = {
    "ann@contoso.test": DirectoryEntry("/o=Contoso/ou=EU/cn=Recipients/cn=ann", "Ann Example"),
    "bob@contoso.test": DirectoryEntry("/o=Contoso/ou=EU/cn=Recipients/cn=bob", "Bob"),
    "carol@contoso.test": DirectoryEntry("/o=Contoso/ou=EU/cn=Recipients/cn=carol", "Carol"),
}
ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//cas tests//EN
BEGIN:VEVENT
UID:busy-1
DTSTAMP:20240101T000000Z
DTSTART:20240304T090000Z
DTEND:20240304T100000Z
END:VEVENT
BEGIN:VEVENT
UID:tentative-1
DTSTAMP:20240101T000000Z
DTSTART;TZID=Europe/Berlin:20240304T120000
DTEND;TZID=Europe/Berlin:20240304T123000
STATUS:TENTATIVE
END:VEVENT
END:VCALENDAR
"""


def t(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def seed(server: LegacyServer) -> None:
    server.publish(
        "ann@contoso.test",
        busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10, 30))],
        tentative=[(t(2024, 3, 4, 8, 15), t(2024, 3, 4, 8, 45))],
        oof=[(t(2024, 3, 4, 11, 10), t(2024, 3, 4, 11, 20))],
        **MARCH,
    )
    server.publish_ics("bob@contoso.test", ICS, **MARCH)
    server.publish("carol@contoso.test", busy=[(t(2024, 3, 31, 23), t(2024, 4, 1, 1))], **MARCH)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyServer]:
    server = LegacyServer(tmp_path_factory.mktemp("legacy"), DIRECTORY)
    server.start()
    try:
        seed(server)
        yield server
    finally:
        server.stop()


def fbdata(body: str) -> list[str]:
    return [part.split("</a:fbdata>")[0] for part in body.split("<a:fbdata>")[1:]]


def get(server: LegacyServer, query: str) -> httpx.Response:
    return httpx.get(f"{server.public_url}?{query}", trust_env=False, timeout=10)


def test_davmail_request(legacy: LegacyServer) -> None:
    response = get(
        legacy,
        "cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T12:00:00Z&interval=15"
        "&u=SMTP:ann@contoso.test",
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    # 08:00 0 | 08:15-08:45 tentative 11 | 0 | 09:00-10:30 busy 222222 | 00 |
    # 11:10-11:20 OOF 33 | 00
    assert fbdata(response.text) == ["0110222222003300"] * 2
    assert response.text.index("All Attendees") < response.text.index("Ann Example")


def test_zimbra_request(legacy: LegacyServer) -> None:
    response = get(
        legacy,
        "Cmd=freebusy&start=2024-03-04T08:00:00Z&endt=2024-03-04T12:00:00Z&interval=30"
        "&u=SMTP:ann@contoso.test&u=SMTP:bob@contoso.test",
    )
    # ann: 1 1 2 2 2 0 3 0; bob (.ics): 09-10 busy, 12:00-12:30 CET = 11:00-11:30Z tentative
    # -> 0 0 2 2 0 0 1 0; All Attendees: the digit-wise max of both.
    assert fbdata(response.text) == ["11222030", "11222030", "00220010"]


def test_event_across_a_month_end(legacy: LegacyServer) -> None:
    response = get(
        legacy,
        "cmd=freebusy&start=2024-03-31T22:00:00Z&end=2024-04-01T02:00:00Z&interval=60"
        "&u=carol@contoso.test",
    )
    assert fbdata(response.text)[-1] == "0220"  # busy 23:00-01:00, stored as two month blocks


def test_unknown_user_and_bad_query(legacy: LegacyServer) -> None:
    unknown = get(
        legacy,
        "cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T09:00:00Z&interval=15"
        "&u=SMTP:nobody@contoso.test",
    )
    assert fbdata(unknown.text) == ["4444", "4444"]  # DavMail: leading 4 = unknown attendee
    bad = get(legacy, "cmd=freebusy&start=2024-03-04T08:00:00Z&u=SMTP:ann@contoso.test")
    assert bad.status_code == 400 and "end is missing" in bad.text


def digits(data, window, interval):
    """The digits a node renders for `data`: recomputed from its events and coverage."""
    from cas.model.freebusy import merged_free_busy

    return merged_free_busy(data.events, window, interval, data.coverage)


def ask(window: Window) -> Ask:
    return Ask(window, 60, FreeBusyView.MERGED_ONLY, UTC, Requester("t"), time.monotonic() + 9, 9)


async def test_legacy_backend_against_the_emulator(legacy: LegacyServer) -> None:
    mailboxes = [
        Mailbox(address, "eu", "legacy", entry.legacy_dn) for address, entry in DIRECTORY.items()
    ] + [Mailbox("nobody@contoso.test", "eu", "legacy")]
    window = Window(t(2024, 3, 4, 8), t(2024, 3, 4, 12))
    async with OldServerSource(LegacyServerConfig(legacy.public_url, timeout_seconds=5)) as backend:
        results = await backend.fetch_many(mailboxes, window, 60)
        answers = await backend.fetch([mailboxes[1]], ask(window))
    single = answers[mailboxes[1].address]
    assert {a: digits(r, window, 60) for a, r in results.items() if isinstance(r, MailboxData)} == {
        "ann@contoso.test": "1223",  # tentative, busy, busy to 10:30, OOF
        "bob@contoso.test": "0201",
        "carol@contoso.test": "0000",
        "nobody@contoso.test": "4444",
    }
    assert isinstance(single, MailboxData) and single.merged_only
    assert digits(single, window, 15) == "0000222200001100"


async def test_restart_keeps_data_and_a_stopped_server_fails_fast(tmp_path: Path) -> None:
    server = LegacyServer(tmp_path, DIRECTORY)
    try:
        server.start()
        server.publish("ann@contoso.test", busy=[(t(2024, 3, 4, 9), t(2024, 3, 4, 10))], **MARCH)
        duplicate = server.publish(
            "ann@contoso.test",
            busy=[(t(2024, 3, 4, 8), t(2024, 3, 4, 12))],
            duplicate=True,
            **MARCH,
        )
        assert duplicate["subject"] == "USER-/CN=RECIPIENTS/CN=ANN-2"
        first_pid = server.pid
        server.stop()
        server.start()
        assert server.pid != first_pid
        query = (
            "cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T12:00:00Z&interval=60"
            "&u=SMTP:ann@contoso.test"
        )
        assert fbdata(get(server, query).text)[-1] == "0200"  # the earliest message still wins
        assert httpx.get(f"{server.url}/healthz", trust_env=False).json()["messages"] == 2
    finally:
        server.stop()
    assert not server.running
    config = LegacyServerConfig(server.public_url, timeout_seconds=5)
    window = Window(t(2024, 3, 4, 8), t(2024, 3, 4, 12))
    async with OldServerSource(config) as backend:
        began = time.monotonic()
        ann = Mailbox("ann@contoso.test", "eu", "legacy")
        results = await backend.fetch_many([ann], window, 60)
        assert time.monotonic() - began < 2
        [error] = (await backend.fetch([ann], ask(window))).values()
    assert isinstance(error, MailboxError) and "cannot connect to old server" in error.message
    assert "cannot connect to old server at http://127.0.0.1:" in str(results["ann@contoso.test"])


def test_cli_reports_a_bad_directory_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "directory.csv"
    bad.write_text("address,legacy_dn\nann@contoso.test,not-a-dn\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cas",
            "legacy-server",
            "--data",
            str(tmp_path / "data"),
            "--directory",
            str(bad),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "cas legacy-server:" in done.stderr and "line 2: a legacy DN starts with" in done.stderr
    assert "Traceback" not in done.stderr
