"""`cas lab` as a user runs it: a subprocess, its manifest, exchangelib against it, Ctrl-C.

An event written into a manifest `calendar_url` with a CalDAV client shows up in the next
lookup; seeded calendars carry every kind of item; Ctrl-C stops every part.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import caldav
import httpx
import pytest
from exchangelib import DELEGATE, Account, Configuration, Credentials, EWSTimeZone
from exchangelib.protocol import close_connections
from exchangelib.transport import BASIC
from lxml import etree

from tests.support.ews_schema import validate_ews_body
from tests.support.processes import ProcessGroup
from tests.unit.test_ews_endpoint import availability

UTC = dt.UTC
M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab")
    manifest_path = tmp / "lab.json"
    log = tmp / "lab.out"  # a file, not a pipe nobody reads: never blocks the lab
    group = ProcessGroup()
    try:
        process = group.spawn(
            [
                sys.executable, "-m", "cas", "lab", "--mailboxes-per-site", "6",
                "--manifest", str(manifest_path), "--state-dir", str(tmp / "state"),
                "--duration", "240",
            ],
            log=log,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while not manifest_path.exists():
            if process.poll() is not None:
                pytest.fail(f"cas lab exited early:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"cas lab wrote no manifest within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        manifest = json.loads(manifest_path.read_text())
        while "Ctrl-C stops it." not in log.read_text():
            assert time.monotonic() < deadline and process.poll() is None, "no summary printed"
            time.sleep(0.1)
        yield manifest, process
    finally:
        # SIGTERM lets the lab stop its parts; SIGKILL, only if it hangs, would leave them running
        group.stop(grace=60)


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
    [view] = acc.protocol.get_free_busy_info(
        [(address, "Required", False)], start, end, interval, view
    )
    return view


def test_manifest_lists_every_part_and_dns_publishes_the_nodes(lab) -> None:
    import dns.resolver

    manifest, _ = lab
    assert manifest["domain"] == "contoso.test"
    assert Path(manifest["ca_cert"]).is_file()
    sites = {s["name"]: s for s in manifest["sites"]}
    assert len(sites) == 3  # the contract's default: 3 sites x 2 nodes
    assert all(
        len(s["nodes"]) == 2 and all(n.startswith("https://127.0.0.1:") for n in s["nodes"])
        for s in sites.values()
    )
    modern = [m for m in manifest["mailboxes"] if m["kind"] == "modern"]
    legacy = [m for m in manifest["mailboxes"] if m["kind"] == "legacy"]
    assert len(modern) == 18
    for mailbox in modern:
        assert mailbox["calendar_url"].startswith(sites[mailbox["site"]]["caldav"]["url"])
    # legacy mailboxes in at least two sites, each listed with its old server
    assert len({m["site"] for m in legacy}) >= 2
    for mailbox in legacy:
        assert mailbox["legacy_url"] == sites[mailbox["site"]]["legacy"]["url"]
    assert all(s["redis"] and s["redis"].startswith("redis://127.0.0.1:") for s in sites.values())
    from caslab.topology import lab_topology

    assert manifest["topology"] == lab_topology(3, 2).as_dict()  # the shape compose.yaml has too
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
    mailbox = [m for m in manifest["mailboxes"] if m["kind"] == "modern"][-1]  # the last site's
    caldav_site = next(s for s in manifest["sites"] if s["name"] == mailbox["site"])["caldav"]
    client = caldav.DAVClient(
        url=caldav_site["url"], username=caldav_site["username"], password=caldav_site["password"]
    )
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


def weekday_window() -> tuple[dt.datetime, dt.datetime]:
    day = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day + dt.timedelta(hours=6), day + dt.timedelta(hours=20)


def old_server_digits(
    manifest: dict, address: str, start: dt.datetime, end: dt.datetime, interval: int
) -> str:
    """What the old server itself says, asked the way DavMail asks it."""
    legacy_url = next(m["legacy_url"] for m in manifest["mailboxes"] if m["address"] == address)
    r = httpx.get(
        legacy_url,
        params={
            "cmd": "freebusy",
            "start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
            "end": f"{end:%Y-%m-%dT%H:%M:%SZ}",
            "interval": interval,
            "u": f"SMTP:{address}",
        },
        timeout=10,
    )
    assert r.status_code == 200
    return r.text.rsplit("<a:fbdata>", 1)[1].split("</a:fbdata>")[0]  # DavMail: the last fbdata


def test_legacy_mailboxes_through_a_node_of_another_site_match_the_old_server(
    lab, monkeypatch
) -> None:
    manifest, _ = lab
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", manifest["ca_cert"])
    legacy = [m["address"] for m in manifest["mailboxes"] if m["kind"] == "legacy"]
    ap = next(s for s in manifest["sites"] if s["name"] == "ap")["nodes"][0]
    close_connections()
    config = Configuration(
        service_endpoint=ap + "/EWS/Exchange.asmx",
        auth_type=BASIC,
        credentials=Credentials(manifest["client"]["username"], manifest["client"]["password"]),
    )
    account = Account(legacy[0], config=config, autodiscover=False, access_type=DELEGATE)
    start, end = weekday_window()
    zone = EWSTimeZone("UTC")
    for interval in (30, 60):
        views = list(
            account.protocol.get_free_busy_info(
                [(a, "Required", False) for a in legacy],
                start.astimezone(zone),
                end.astimezone(zone),
                interval,
                "DetailedMerged",
            )
        )
        for address, view in zip(legacy, views):
            assert view.view_type == "MergedOnly"  # all that public-folder data can give
            assert view.merged == old_server_digits(manifest, address, start, end, interval)
        assert any(set(v.merged) - {"0"} for v in views)  # the seeded data is not all free


def test_one_request_mixes_local_remote_modern_and_legacy(lab) -> None:
    manifest, _ = lab
    by = lambda site, kind: next(
        m["address"] for m in manifest["mailboxes"] if m["site"] == site and m["kind"] == kind
    )
    addresses = [by("eu", "modern"), by("eu", "legacy"), by("us", "modern"), by("us", "legacy")]
    start, end = weekday_window()
    eu = next(s for s in manifest["sites"] if s["name"] == "eu")["nodes"][0]
    body = availability(
        addresses,
        start=f"{start:%Y-%m-%dT%H:%M:%SZ}",
        end=f"{end:%Y-%m-%dT%H:%M:%SZ}",
        interval="30",
        view="DetailedMerged",
    )
    r = httpx.post(
        eu + "/EWS/Exchange.asmx",
        content=body,
        timeout=30,
        verify=ssl_context(manifest),
        auth=(manifest["client"]["username"], manifest["client"]["password"]),
    )
    assert r.status_code == 200
    validate_ews_body(r.content)
    tree = etree.fromstring(r.content)
    codes = [c.text for c in tree.iter(f"{M}ResponseCode")]
    views = [v.text for v in tree.iter(f"{T}FreeBusyViewType")]
    assert codes == ["NoError"] * 4
    assert views == ["DetailedMerged", "MergedOnly", "DetailedMerged", "MergedOnly"]
    merged = [m.text for m in tree.iter(f"{T}MergedFreeBusy")]
    assert merged[1] == old_server_digits(manifest, addresses[1], start, end, 30)
    assert merged[3] == old_server_digits(manifest, addresses[3], start, end, 30)


def test_the_old_front_door_of_a_node_answers_davmail_and_zimbra(lab) -> None:
    manifest, _ = lab
    legacy = next(
        m["address"] for m in manifest["mailboxes"] if m["kind"] == "legacy" and m["site"] == "us"
    )
    modern = next(
        m["address"] for m in manifest["mailboxes"] if m["kind"] == "modern" and m["site"] == "ap"
    )
    start, end = weekday_window()
    eu = next(s for s in manifest["sites"] if s["name"] == "eu")["nodes"][0]
    auth = (manifest["client"]["username"], manifest["client"]["password"])
    with httpx.Client(verify=ssl_context(manifest), auth=auth, timeout=30) as client:
        # DavMail: lower-case cmd, SMTP: prefix, 15-minute slots, reads the LAST fbdata
        r = client.get(
            eu + "/public/",
            params={
                "cmd": "freebusy",
                "start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
                "end": f"{end:%Y-%m-%dT%H:%M:%SZ}",
                "interval": 15,
                "u": f"SMTP:{legacy}",
            },
        )
        assert r.status_code == 200
        davmail = r.text.rsplit("<a:fbdata>", 1)[1].split("</a:fbdata>")[0]
        assert davmail == old_server_digits(manifest, legacy, start, end, 15)
        # Zimbra: Cmd=, the old endt= spelling, two users, items matched by a:email
        r = client.get(
            eu + "/public/",
            params=[
                ("Cmd", "freebusy"),
                ("start", f"{start:%Y-%m-%dT%H:%M:%SZ}"),
                ("endt", f"{end:%Y-%m-%dT%H:%M:%SZ}"),
                ("interval", "30"),
                ("u", f"SMTP:{modern}"),
                ("u", legacy),
                ("u", "SMTP:nobody@contoso.test"),
            ],
        )
        assert r.status_code == 200
    items = {}
    for item in etree.fromstring(r.content).iter("{WM}item"):
        email = (item.findtext("{WM}email") or "").strip().casefold()
        items[email] = item.findtext("{WM}fbdata")
    assert items[legacy.casefold()] == old_server_digits(manifest, legacy, start, end, 30)
    assert set(items[modern.casefold()]) <= set("0123") and len(items[modern.casefold()]) == 28
    assert items["nobody@contoso.test"] == "4" * 28  # unknown, never free


def test_cas_lookup_finds_every_site_through_the_lab_dns(lab, tmp_path) -> None:
    manifest, _ = lab
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(manifest))
    one_per_site = {}
    for mailbox in manifest["mailboxes"]:
        one_per_site.setdefault((mailbox["site"], mailbox["kind"]), mailbox["address"])
    addresses = list(one_per_site.values())
    done = subprocess.run(
        [sys.executable, "-m", "cas", "lookup", *addresses, "--manifest", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    attendees = document["attendees"] if isinstance(document, dict) else document
    assert [a["address"] for a in attendees] == addresses
    assert all(a["status"] == "ok" for a in attendees), attendees
    # each was asked of a node of its own site, found through SRV and Autodiscover
    nodes = {s["name"]: s["nodes"] for s in manifest["sites"]}
    for attendee, ((site, _), _) in zip(attendees, one_per_site.items()):
        assert any(attendee["ews_url"].startswith(n) for n in nodes[site]), attendee


def test_two_requesters_see_different_levels_and_no_login_is_refused(lab, tmp_path) -> None:
    manifest, _ = lab
    levels = {r["username"]: r["level"] for r in manifest["requesters"]}
    assert levels == {
        "scheduler": "FreeBusyTimeAndSubjectAndLocation",
        "viewer": "FreeBusyTimeOnly",
    }
    assert manifest["anonymous_lookups"] == "refused"
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(manifest))
    addresses = [m["address"] for m in manifest["mailboxes"] if m["kind"] == "modern"][::6][:3]
    assert len({a.split("@")[0] for a in addresses}) == 3
    today = dt.datetime.now(UTC).date()
    seen = {}
    for user in ("scheduler", "viewer"):
        done = subprocess.run(
            [sys.executable, "-m", "cas", "lookup", *addresses, "--manifest", str(path),
             "--user", user, "--start", (today - dt.timedelta(days=3)).isoformat(),
             "--days", "7", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen[user] = json.loads(done.stdout)["attendees"]
    for scheduler, viewer in zip(seen["scheduler"], seen["viewer"]):
        assert scheduler["address"] == viewer["address"]
        assert (scheduler["view"], viewer["view"]) == ("DetailedMerged", "FreeBusyMerged")
        assert scheduler["merged"] == viewer["merged"]  # the same times for both
        assert [e["start"] for e in scheduler["events"]] == [e["start"] for e in viewer["events"]]
        assert {e["subject"] for e in viewer["events"]} == {None}
    assert any(e["subject"] for a in seen["scheduler"] for e in a["events"])
    eu = next(s for s in manifest["sites"] if s["name"] == "eu")["nodes"][0]
    refused = httpx.post(
        eu + "/EWS/Exchange.asmx",
        content=availability(addresses),
        verify=ssl_context(manifest),
        timeout=10,
    )
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]


def lab_output(manifest: dict) -> str:
    return (Path(manifest["sitemap"]).parents[1] / "lab.out").read_text()


def printed_commands(text: str) -> dict[str, str]:
    """The commands the lab printed after "Try it", by their title line."""
    tail = text.split("Try it (each command works as printed):", 1)[1]
    tail = tail.split("\nThe lab prints one line per failure", 1)[0]
    blocks = [b.strip() for b in tail.split("\n# ") if b.strip()]
    return dict(tuple(block.split("\n", 1)) for block in blocks)  # type: ignore[misc]


def test_the_summary_shows_whole_urls_when_piped(lab) -> None:
    manifest, _ = lab
    text = lab_output(manifest)
    for site in manifest["sites"]:
        for url in [*site["nodes"], site["caldav"]["url"], site["redis"]]:
            assert url in text, f"{url} is not shown whole"
    assert f"manifest:       {Path(manifest['sitemap']).parents[1] / 'lab.json'}" in text
    assert f"logs:           {Path(manifest['sitemap']).parent / 'logs'} (kept on exit)" in text


def test_the_printed_commands_work_when_pasted(lab) -> None:
    manifest, _ = lab
    commands = printed_commands(lab_output(manifest))
    assert len(commands) == 5, commands.keys()
    lookup_text = next(c for t, c in commands.items() if t.startswith("ask like a client"))
    sites = {m["address"]: m["site"] for m in manifest["mailboxes"]}
    asked = [word for word in lookup_text.split() if "@" in word]
    assert len({sites[a] for a in asked}) == 2, "mailboxes of two sites"
    for title, text in commands.items():
        done = subprocess.run(
            ["bash", "-c", text], capture_output=True, text=True, timeout=60, cwd="/"
        )
        assert done.returncode == 0, f"{title}: {done.stdout}\n{done.stderr}"
        if title.startswith("the JSON API"):
            answers = json.loads(done.stdout)["value"]
            assert [a["scheduleId"] for a in answers] == asked
            assert all("availabilityView" in a for a in answers), answers
        if title.startswith("exchangelib"):
            merged = [line.split()[0] for line in done.stdout.splitlines()]
            assert len(merged) == 2 and all(len(m) == 24 and set(m) <= set("01234") for m in merged)
        if title.startswith("check every part"):
            assert " FAIL " not in done.stdout and " ok " in done.stdout, done.stdout
        if title.startswith("ask like a client"):
            assert all(a in done.stdout for a in asked)  # exit status 0: every one answered
            assert "(times only" not in done.stdout
        if title.startswith("the same, as viewer"):
            assert all(a in done.stdout for a in asked)
            assert done.stdout.count("(times only: this login may not see subjects)") == 2


def test_a_failure_in_a_node_log_is_printed_by_the_lab(lab) -> None:
    manifest, _ = lab
    eu = next(s for s in manifest["sites"] if s["name"] == "eu")["nodes"][0]
    r = httpx.post(
        eu + "/EWS/Exchange.asmx",
        content=b"<x/>",
        headers={"X-CAS-Forwarded": "not-a-token"},
        verify=ssl_context(manifest),
        timeout=10,
    )
    assert r.status_code in (401, 403)
    deadline = time.monotonic() + 10
    while "[cas-eu-1] WARNING refused a forwarded request" not in lab_output(manifest):
        assert time.monotonic() < deadline, lab_output(manifest)[-2000:]
        time.sleep(0.1)


def ssl_context(manifest: dict):
    import ssl

    return ssl.create_default_context(cafile=manifest["ca_cert"])


def test_a_part_that_dies_is_reported_once_and_restarted_and_the_lab_goes_on(lab) -> None:
    manifest, process = lab
    state = Path(manifest["sitemap"]).parent
    parts = {p["name"]: p for p in json.loads((state / "parts.json").read_text())["parts"]}
    victims = ["node cas-us-2", "Radicale of site ap", "Redis of site eu", "old server"]
    for name in victims:
        os.kill(parts[name]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not all(f"cas lab: {name} " in lab_output(manifest) for name in victims):
        assert time.monotonic() < deadline, lab_output(manifest)[-3000:]
        assert process.poll() is None, "the lab stopped"
        time.sleep(0.2)
    out = lab_output(manifest)
    for name in victims:
        lines = [line for line in out.splitlines() if line.startswith(f"cas lab: {name} ")]
        assert len(lines) == 1, lines
        assert "killed by SIGKILL; restarted it on the same port" in lines[0]
    now = {p["name"]: p for p in json.loads((state / "parts.json").read_text())["parts"]}
    assert all(now[name]["pid"] != parts[name]["pid"] for name in victims)
    # each is back where the sitemap says: the restarted node answers, and a lookup through
    # it of every site's mailboxes (and an old server's) comes back whole once they answer again
    us2 = next(s for s in manifest["sites"] if s["name"] == "us")["nodes"][1]
    addresses = [next(m["address"] for m in manifest["mailboxes"] if m["site"] == s["name"]
                      and m["kind"] == "modern") for s in manifest["sites"]]  # fmt: skip
    addresses.append(next(m["address"] for m in manifest["mailboxes"] if m["kind"] == "legacy"))
    with httpx.Client(verify=ssl_context(manifest), trust_env=False, timeout=30) as client:
        codes: list[str] = []
        while codes != ["NoError"] * len(addresses):
            assert time.monotonic() < deadline, codes
            time.sleep(0.5)
            try:
                r = client.post(
                    us2 + "/EWS/Exchange.asmx",
                    content=availability(addresses),
                    auth=(manifest["client"]["username"], manifest["client"]["password"]),
                )
            except httpx.TransportError:
                continue
            codes = [e.text for e in etree.fromstring(r.content).iter(f"{M}ResponseCode")]
    assert process.poll() is None


def test_ctrl_c_stops_every_part(lab) -> None:
    manifest, process = lab
    ports = [urlsplit(n).port for s in manifest["sites"] for n in s["nodes"]]
    ports += [urlsplit(s["caldav"]["url"]).port for s in manifest["sites"]]
    ports += [urlsplit(s["redis"]).port for s in manifest["sites"]]
    ports += [urlsplit(s["legacy"]["url"]).port for s in manifest["sites"] if s["legacy"]]
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"cas lab still runs 30 s after Ctrl-C:\n{lab_output(manifest)[-3000:]}")
    assert "cas lab: stopping every part" in lab_output(manifest)
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
