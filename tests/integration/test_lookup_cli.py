"""`cas lookup` end to end: a real node over verified HTTPS, found through a real DNS responder.

The node is the real app (EWS and Autodiscover front doors) with a fake mailbox backend holding
known events; the command runs through `cas.cli.main` exactly as a user would type it. Expected
merged strings are worked out by hand from the UTC instants below.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cas.app import create_app
from cas.cli import main
from cas.model.freebusy import BusyType, Event, EventDetails, MailboxData
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from caslab.dnsserver import DnsResponder
from sitemap.model import ClientAuth, ClientUser, Mailbox, SecretRef, Site, Sitemap
from tests.support import node as support
from tests.support.node import ThreadedServer, make_test_ca

UTC = UTC
USER, PASSWORD, PASSWORD_ENV = "scheduler", "lookup-s3cret", "CAS_LOOKUP_TEST_PASSWORD"


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DATA = {
    "ann@contoso.test": MailboxData(events=(
        Event(u(2024, 3, 4, 8), u(2024, 3, 4, 9), BusyType.BUSY,
              EventDetails("ann-1", "Design review", "Room 1", is_meeting=True)),
        Event(u(2024, 3, 4, 12, 30), u(2024, 3, 4, 13), BusyType.TENTATIVE, EventDetails(subject="Maybe lunch")),
    )),
    "bob@contoso.test": MailboxData(events=(
        Event(u(2024, 3, 4, 6), u(2024, 3, 4, 10), BusyType.OOF, EventDetails(subject="Dentist", is_private=True)),
    )),
}  # fmt: skip
# One-hour slots of 4 March in Berlin (CET: 23:00Z on the 3rd to 23:00Z on the 4th)
ANN_MERGED = "000000000200010000000000"  # 09-10 busy, 13:30-14 tentative (local)
BOB_MERGED = "000000033330000000000000"  # 07-11 OOF (local)
WINDOW = [
    "--tz",
    "Europe/Berlin",
    "--start",
    "2024-03-04",
    "--end",
    "2024-03-05",
    "--interval",
    "60",
]


class LateApp:
    """An ASGI app whose real app is set once the server's port (its own URL) is known."""

    app = None

    async def __call__(self, scope, receive, send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> support.TestCA:
    return make_test_ca(tmp_path_factory.mktemp("lookup-tls"))


@pytest.fixture(scope="module")
def node(tls: support.TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    secret = tmp_path_factory.mktemp("lookup-secret") / "client"
    secret.write_text(PASSWORD)
    late = LateApp()
    server = ThreadedServer(late, tls)
    sitemap = Sitemap(
        source="test",
        sites=(Site("eu", nodes=(server.url,)),),
        mailboxes=(
            Mailbox("ann@contoso.test", "eu", display_name="Ann Example"),
            Mailbox("bob@contoso.test", "eu", aliases=("robert@old.test",)),
        ),
        domains=("contoso.test", "old.test"),
        auth=ClientAuth(users=(ClientUser(USER, SecretRef(file=str(secret))),)),
    )
    late.app = create_app(
        load_settings({}, environ={}), sitemap, "eu", backends={"modern": FakeBackend(DATA)}
    )
    with server:
        yield server


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def lookup(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["lookup", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def auth(tls: support.TestCA) -> list[str]:
    return ["--ca", str(tls.ca_pem), "--user", USER, "--password-env", PASSWORD_ENV]


@pytest.mark.usefixtures("password")
def test_url_lookup_returns_merged_strings_and_events(node, tls, capsys) -> None:
    code, out, _ = lookup(
        capsys,
        "ann@contoso.test",
        "bob@contoso.test",
        "--url",
        node.url,
        *auth(tls),
        *WINDOW,
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["window"] == {
        "start": "2024-03-03T23:00:00Z",
        "end": "2024-03-04T23:00:00Z",
        "timezone": "Europe/Berlin",
    }
    ann, bob = doc["attendees"]
    assert (ann["status"], ann["merged"], ann["ews_url"]) == (
        "ok",
        ANN_MERGED,
        node.url + "/EWS/Exchange.asmx",
    )
    assert [
        (e["start"], e["end"], e["busy_type"], e["subject"], e["location"], e["meeting"])
        for e in ann["events"]
    ] == [
        ("2024-03-04T08:00:00Z", "2024-03-04T09:00:00Z", "Busy", "Design review", "Room 1", True),
        ("2024-03-04T12:30:00Z", "2024-03-04T13:00:00Z", "Tentative", "Maybe lunch", None, False),
    ]
    assert (bob["status"], bob["merged"]) == ("ok", BOB_MERGED)
    # the requester is not bob: his private item shows only that it is private
    assert [(e["busy_type"], e["subject"], e["private"]) for e in bob["events"]] == [
        ("OOF", None, True)
    ]


@pytest.mark.usefixtures("password")
def test_an_unknown_mailbox_is_an_error_never_free(node, tls, capsys) -> None:
    argv = ["ann@contoso.test", "ghost@contoso.test", "--url", node.url, *auth(tls), *WINDOW]
    code, out, _ = lookup(capsys, *argv, "--json")
    assert code == 1
    ann, ghost = json.loads(out)["attendees"]
    assert ann["status"] == "ok"
    assert (ghost["status"], ghost["merged"], ghost["events"]) == (
        "ErrorMailRecipientNotFound",
        None,
        [],
    )
    assert "ghost@contoso.test" in ghost["message"]
    code, out, _ = lookup(capsys, *argv)
    assert code == 1
    rows = out.splitlines()
    assert "ghost@contoso.test  ✗ ErrorMailRecipientNotFound" in rows
    assert "ann@contoso.test    ·········█···░··········" in rows
    assert "\x1b" not in out  # captured stdout is not a terminal: plain text


@pytest.fixture
def dns(node: ThreadedServer) -> Iterator[DnsResponder]:
    """SRV for contoso.test: first a target whose port refuses connections, then the node."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    with DnsResponder() as server:
        server.set_srv("_autodiscover._tcp.contoso.test", [
            (0, 0, dead.getsockname()[1], "down.contoso.test"),
            (10, 0, node.port, "cas1.contoso.test"),
        ])  # fmt: skip
        server.set_a("down.contoso.test", ["127.0.0.1"])
        server.set_a("cas1.contoso.test", ["127.0.0.1"])
        yield server
    dead.close()


@pytest.mark.usefixtures("password")
def test_discovery_through_dns_srv_and_autodiscover(node, tls, dns, capsys) -> None:
    argv = [
        "ann@contoso.test",
        "robert@old.test",
        "--dns",
        f"127.0.0.1:{dns.port}",
        *auth(tls),
        *WINDOW,
        "--json",
    ]
    code, out, _ = lookup(capsys, *argv)
    assert code == 0
    ann, robert = json.loads(out)["attendees"]
    ews_url = node.url + "/EWS/Exchange.asmx"
    assert (ann["ews_url"], ann["display_name"], ann["merged"]) == (
        ews_url,
        "Ann Example",
        ANN_MERGED,
    )
    # an alias under another domain is redirected to the primary address, then asked about
    assert (robert["address"], robert["mailbox"], robert["merged"]) == (
        "robert@old.test",
        "bob@contoso.test",
        BOB_MERGED,
    )
    asked = dns.queries
    assert ("_autodiscover._tcp.contoso.test.", "SRV") in asked
    assert ("down.contoso.test.", "A") in asked and ("cas1.contoso.test.", "A") in asked


def test_the_lab_manifest_supplies_dns_ca_and_credentials(
    node, tls, dns, capsys, tmp_path: Path
) -> None:
    manifest = tmp_path / "lab.json"
    manifest.write_text(json.dumps({
        "domain": "contoso.test", "dns": {"host": "127.0.0.1", "port": dns.port},
        "ca_cert": str(tls.ca_pem), "client": {"username": USER, "password": PASSWORD},
        "sites": [{"name": "eu", "nodes": [node.url]}], "mailboxes": [],
    }))  # fmt: skip
    code, out, _ = lookup(
        capsys, "bob@contoso.test", "--manifest", str(manifest), *WINDOW, "--json"
    )
    assert code == 0
    assert json.loads(out)["attendees"][0]["merged"] == BOB_MERGED


@pytest.mark.usefixtures("password")
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["nobody@nowhere.test"], "DNS SRV _autodiscover._tcp.nowhere.test: no such name (NXDOMAIN)"),
        (["ann@contoso.test", "--url", "https://127.0.0.1:1"], "no EWS server answered: https://127.0.0.1:1/EWS/Exchange.asmx"),
        (["ann@contoso.test", "--password-env", "CAS_LOOKUP_WRONG"], "refused the credentials"),
    ],
)  # fmt: skip
def test_discovery_and_connection_failures_exit_2_with_a_message(
    node, tls, dns, capsys, monkeypatch, argv, words
) -> None:
    monkeypatch.setenv("CAS_LOOKUP_WRONG", "not-the-password")
    base = ["--dns", f"127.0.0.1:{dns.port}", "--ca", str(tls.ca_pem), "--user", USER]
    if "--password-env" not in argv:
        base += ["--password-env", PASSWORD_ENV]
    code, out, err = lookup(capsys, *argv, *base, *WINDOW)
    assert code == 2 and out == ""
    assert err.startswith("cas lookup: ") and words in err


@pytest.mark.usefixtures("password")
def test_a_window_longer_than_the_server_allows_is_explained_not_called_unanswered(
    node, tls, capsys
) -> None:
    argv = ["--url", node.url, *auth(tls), "--start", "2024-03-04", "--days", "100"]
    code, out, err = lookup(capsys, "ann@contoso.test", *argv)
    assert code == 2 and out == ""
    assert "no EWS server answered" not in err
    assert err.strip() == (
        f"cas lookup: {node.url}/EWS/Exchange.asmx: the server refused the request: the window "
        "asked for is 100 days and the server allows at most 62 days (ask for less with "
        "--days, or --start and --end)"
    )


@pytest.mark.usefixtures("password")
def test_a_server_certificate_from_another_ca_is_refused(node, tmp_path: Path, capsys) -> None:
    other = make_test_ca(tmp_path / "other")
    code, _, err = lookup(capsys, "ann@contoso.test", "--url", node.url, "--ca", str(other.ca_pem),
                          "--user", USER, "--password-env", PASSWORD_ENV, *WINDOW)  # fmt: skip
    assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in err and "--ca" in err
