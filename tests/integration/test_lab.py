"""`cas lab` as a user runs it: a subprocess, its manifest, exchangelib against it, Ctrl-C.

An event written into a manifest `calendar_url` with a CalDAV client shows up in the next
lookup; seeded calendars carry every kind of item; Ctrl-C stops every part.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import caldav
import pytest
from exchangelib import DELEGATE, Account, Configuration, Credentials, EWSTimeZone
from exchangelib.protocol import close_connections
from exchangelib.transport import BASIC

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab")
    manifest_path = tmp / "lab.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "cas", "lab", "--mailboxes-per-site", "6",
         "--manifest", str(manifest_path), "--state-dir", str(tmp / "state"), "--duration", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while not manifest_path.exists():
        if process.poll() is not None:
            pytest.fail(f"cas lab exited early:\n{process.stdout.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("cas lab wrote no manifest within 90 s")
        time.sleep(0.2)
    manifest = json.loads(manifest_path.read_text())
    yield manifest, process
    if process.poll() is None:
        process.kill()
        process.wait()


def node_of(manifest: dict, address: str) -> str:
    site = next(m["site"] for m in manifest["mailboxes"] if m["address"] == address)
    return next(s for s in manifest["sites"] if s["name"] == site)["nodes"][0]


def account(manifest: dict, address: str) -> Account:
    close_connections()
    config = Configuration(
        service_endpoint=node_of(manifest, address) + "/EWS/Exchange.asmx",
        credentials=Credentials(manifest["client"]["username"], manifest["client"]["password"]),
        auth_type=BASIC,
    )
    return Account(address, config=config, autodiscover=False, access_type=DELEGATE)


def lookup(manifest, address, start, end, interval=60, view="DetailedMerged"):
    acc = account(manifest, address)
    [view] = acc.protocol.get_free_busy_info([(address, "Required", False)], start, end, interval, view)
    return view


def test_manifest_lists_every_part_and_dns_publishes_the_nodes(lab) -> None:
    import dns.resolver

    manifest, _ = lab
    assert manifest["domain"] == "contoso.test"
    assert Path(manifest["ca_cert"]).is_file()
    sites = {s["name"]: s for s in manifest["sites"]}
    assert len(sites) == 3  # the contract's default: 3 sites x 2 nodes
    assert all(len(s["nodes"]) == 2 and all(n.startswith("https://127.0.0.1:") for n in s["nodes"])
               for s in sites.values())
    assert len(manifest["mailboxes"]) == 18
    for mailbox in manifest["mailboxes"]:
        assert mailbox["kind"] == "modern"
        assert mailbox["calendar_url"].startswith(sites[mailbox["site"]]["caldav"]["url"])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [manifest["dns"]["host"]], manifest["dns"]["port"]
    for site in sites.values():
        ports = sorted(r.port for r in resolver.resolve(site["srv"], "SRV"))
        assert ports == sorted(urlsplit(n).port for n in site["nodes"])
    every = sorted(r.port for r in resolver.resolve("_autodiscover._tcp.contoso.test", "SRV"))
    assert every == sorted(urlsplit(n).port for s in sites.values() for n in s["nodes"])


def test_event_written_over_caldav_shows_up_in_the_next_lookup(lab, monkeypatch) -> None:
    manifest, _ = lab
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", manifest["ca_cert"])
    mailbox = manifest["mailboxes"][-1]  # the last site's
    caldav_site = next(s for s in manifest["sites"] if s["name"] == mailbox["site"])["caldav"]
    client = caldav.DAVClient(url=caldav_site["url"], username=caldav_site["username"],
                              password=caldav_site["password"])
    uid = uuid.uuid4().hex
    client.calendar(url=mailbox["calendar_url"]).add_event(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20300107T100000Z\r\n"
        "DTEND:20300107T113000Z\r\nSUMMARY:Written by a test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    zone = EWSTimeZone("UTC")
    start = dt.datetime(2030, 1, 7, 8, tzinfo=zone)
    view = lookup(manifest, mailbox["address"], start, start + dt.timedelta(hours=6))
    # 08-09 free, 09-10 free, 10-11 busy, 11-12 busy (half), 12-14 free
    assert view.merged == "002200"
    [event] = view.calendar_events
    assert event.details.subject == "Written by a test" and event.busy_type == "Busy"


def test_seeded_calendars_carry_every_kind_of_item(lab, monkeypatch) -> None:
    manifest, _ = lab
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", manifest["ca_cert"])
    zone = EWSTimeZone("UTC")
    today = dt.datetime.now(UTC).date()
    start = dt.datetime(today.year, today.month, today.day, tzinfo=zone) - dt.timedelta(days=7)
    mailbox = manifest["mailboxes"][0]["address"]
    view = lookup(manifest, mailbox, start, start + dt.timedelta(days=42), interval=60)
    kinds = {e.busy_type for e in view.calendar_events}
    assert {"Busy", "Tentative", "OOF", "Free", "WorkingElsewhere"} <= kinds
    assert any(e.details.is_recurring for e in view.calendar_events)
    assert any(e.details.is_exception for e in view.calendar_events)
    assert any(e.details.is_private and e.details.subject is None for e in view.calendar_events)
    assert set(view.merged) >= {"0", "1", "2", "3"}


def test_ctrl_c_stops_every_part(lab) -> None:
    manifest, process = lab
    ports = [urlsplit(n).port for s in manifest["sites"] for n in s["nodes"]]
    ports += [urlsplit(s["caldav"]["url"]).port for s in manifest["sites"]]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
