"""Presence with real parts: `cas serve` nodes of two sites over HTTPS, a Radicale with its
storage hook and a redis-server per site, a `caldav` client writing the calendars, and
streams read over the wire.

* A meeting booked a few seconds ahead in a mailbox of site us reaches a stream opened at a
  node of site eu: *In a meeting* at its start, *Available* at its end.
* An event edited to out of office pushes *Away*, carried by the hook (sooner than any
  confirmation by change tag could have found it).
* Two requesters with different levels see different subjects on the same mailbox; one with
  level None gets an error for it, at the endpoint and on the stream.
* The single-address answer, the batch, PIDF; bad input; draining; and a stopped backend
  (Radicale SIGSTOPped by PID) shows *Unknown* once its data is no longer fresh, never
  *Available*.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import caldav
import httpx
import pytest
from lxml import etree

from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.server import LegacyServer
from caslab.redis import RedisProcess
from tests.support.cluster import Cluster, start_cluster, users_file_auth
from tests.support.node import make_test_ca
from tests.support.pidf import pidf_schema
from tests.support.redis import redis_servers
from tests.support.sse import SseEvent, SseStream

ANN, BOB, CID, DEE = (
    "eu-ann@contoso.test",
    "us-bob@contoso.test",
    "us-cid@contoso.test",
    "us-dee@contoso.test",
)
OLD, OLD_DN = "eu-old@contoso.test", "/o=contoso/ou=eu/cn=Recipients/cn=old"
USERS = {"helper": ("helper-Pa55", "helpdesk"), "outsider": ("outsider-Pa55", "")}
# Confirmation by change tag runs only this often: a change seen sooner came through the hook.
VALIDATE = 12.0
CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/setup
SITES = ("eu", "us")


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def vevent(uid: str, start: datetime, end: datetime, summary: str, *, attendees: bool = True,
           oof: bool = False, location: str = "Room 4") -> str:  # fmt: skip
    lines = [
        "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20300101T000000Z",
        f"DTSTART:{stamp(start)}", f"DTEND:{stamp(end)}", f"SUMMARY:{summary}",
        f"LOCATION:{location}",
    ]  # fmt: skip
    if attendees:
        lines += ["ORGANIZER:mailto:us-cid@contoso.test", "ATTENDEE:mailto:eu-ann@contoso.test"]
    if oof:
        lines.append("X-MICROSOFT-CDO-BUSYSTATUS:OOF")
    lines.append("END:VEVENT")
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\n"
        + "\r\n".join(lines)
        + ("\r\nEND:VCALENDAR\r\n")
    )


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RedisProcess]]:
    yield from redis_servers(tmp_path_factory, SITES)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyServer]:
    server = LegacyServer(tmp_path_factory.mktemp("legacy"), {OLD: DirectoryEntry(OLD_DN, "Old")})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis: dict[str, RedisProcess], legacy: LegacyServer
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("presence")
    auth = users_file_auth(root, USERS)
    permissions = {
        "default": "FreeBusyTimeOnly",
        "grants": [{"group": "helpdesk", "level": "FreeBusyTimeAndSubjectAndLocation"}],
        "mailboxes": {DEE: {"grants": [{"user": "outsider", "level": "None"}]}},
    }
    cluster = start_cluster(
        root, make_test_ca(root / "tls"), {"eu": ["ann"], "us": ["bob", "cid", "dee"]},
        push=True,
        settings={
            "cache_validate_seconds": VALIDATE, "remote_cache_seconds": 60,
            "presence_reask_seconds": 2, "presence_heartbeat_seconds": 1,
            "presence_max_unconfirmed_seconds": 25,
            "presence_max_addresses": 4, "presence_max_streams": 6,
            "request_timeout_seconds": 3, "throttle_rate": 0, "shutdown_drain_seconds": 3,
        },
        site_fields={
            "eu": {"redis": redis["eu"].url, "legacy": {"url": legacy.public_url}},
            "us": {"redis": redis["us"].url},
        },
        top_fields={"auth": auth, "permissions": permissions},
        extra_mailboxes=[{"address": OLD, "site": "eu", "kind": "legacy", "legacy_dn": OLD_DN}],
    )  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.stop()


def login(cluster: Cluster, user: str) -> tuple[str, str]:
    return cluster.client if user == "scheduler" else (user, USERS[user][0])


def calendar(cluster: Cluster, address: str) -> caldav.Calendar:
    client = caldav.DAVClient(
        url=cluster.radicales[address.split("-")[0]].url,
        username=cluster.admin[0], password=cluster.admin[1],
    )  # fmt: skip
    return client.calendar(url=cluster.calendars[address])


def stream(
    cluster: Cluster, addresses: list[str], *, user: str = "helper", site: str = "eu",
    node: int = 1, headers: dict[str, str] | None = None, query: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> SseStream:  # fmt: skip
    return SseStream(
        cluster.sites[site][node].direct_url + "/api/v1/presence/stream",
        [("address", a) for a in addresses] + list(query),
        login(cluster, user), str(cluster.ca.ca_pem), headers=headers or {},
    ).start()  # fmt: skip


def get(cluster: Cluster, path: str, *, user: str = "helper", site: str = "eu",
        headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    return httpx.get(
        cluster.sites[site][0].direct_url + path, auth=login(cluster, user),
        verify=str(cluster.ca.ca_pem), trust_env=False, timeout=20, headers=headers or {},
    )  # fmt: skip


def state_is(state: str, address: str) -> object:
    return lambda e: (
        e.event == "presence"
        and e.data.get("address") == address
        and (e.data.get("state") == state)
    )


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def test_a_meeting_of_another_site_starts_and_ends_on_the_stream(cluster: Cluster) -> None:
    s = stream(cluster, [BOB])
    try:
        first = s.next(lambda e: e.event == "presence")
        assert first.data["state"] == "Available" and first.data["address"] == BOB
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
        end = start + timedelta(seconds=6)
        calendar(cluster, BOB).add_event(vevent(str(uuid.uuid4()), start, end, "Sprint review"))
        meeting = s.next(state_is("InAMeeting", BOB), timeout=40)
        assert meeting.arrived >= start.timestamp()  # pushed at the start, not before
        assert parse(meeting.data["since"]) == start and parse(meeting.data["until"]) == end
        assert meeting.data["subject"] == "Sprint review"  # the helpdesk group sees subjects
        assert meeting.data["freshness"]["site"] == "us"
        after = s.next(state_is("Available", BOB), timeout=40)
        assert after.arrived >= end.timestamp()
        assert meeting.id is not None and after.id is not None and meeting.id != after.id
    finally:
        s.close()


def test_an_event_edited_to_out_of_office_pushes_away(cluster: Cluster) -> None:
    s = stream(cluster, [CID], site="eu", node=0)
    try:
        s.next(state_is("Available", CID))
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        end = start + timedelta(hours=1)
        uid = str(uuid.uuid4())
        cal = calendar(cluster, CID)
        cal.add_event(vevent(uid, start, end, "Focus", attendees=False))
        busy = s.next(state_is("Busy", CID), timeout=VALIDATE)
        assert parse(busy.data["since"]) == start
        written = time.time()
        cal.add_event(vevent(uid, start, end, "Holiday", attendees=False, oof=True))
        away = s.next(state_is("Away", CID), timeout=VALIDATE)
        # sooner than confirmation by change tag: the storage hook and the channel carried it
        assert away.arrived - written < VALIDATE
        assert away.data["subject"] == "Holiday"
        assert away.data["slots"]["digits"][0] == "3"
    finally:
        s.close()


def test_levels_decide_what_each_requester_sees(cluster: Cluster) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    calendar(cluster, DEE).add_event(
        vevent(str(uuid.uuid4()), start, start + timedelta(hours=1), "Board", location="Top floor")
    )
    time.sleep(1.0)  # the hook has told the sites
    helper = get(cluster, f"/api/v1/presence/{DEE}", user="helper").json()
    times = get(cluster, f"/api/v1/presence/{DEE}", user="scheduler").json()
    refused = get(cluster, f"/api/v1/presence/{DEE}", user="outsider")
    assert (helper["state"], helper["subject"], helper["location"]) == (
        "InAMeeting", "Board", "Top floor",
    )  # fmt: skip
    # times only: no subject, no location, and no telling a meeting from an appointment
    assert times["state"] == "Busy" and "subject" not in times and "location" not in times
    assert times["slots"]["digits"][:4] == helper["slots"]["digits"][:4]
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ErrorNoFreeBusyAccess"
    assert "Board" not in refused.text
    streams = [stream(cluster, [DEE], user=u) for u in ("helper", "scheduler", "outsider")]
    try:
        shown = [s.next(lambda e: e.event == "presence").data for s in streams]
        assert shown[0]["subject"] == "Board"
        assert shown[1]["state"] == "Busy" and "subject" not in shown[1]
        assert shown[2] == {
            "address": DEE,
            "error": {"code": "ErrorNoFreeBusyAccess", "message": shown[2]["error"]["message"]},
        }
    finally:
        for s in streams:
            s.close()


def test_one_address_many_addresses_and_pidf(cluster: Cluster) -> None:
    one = get(cluster, f"/api/v1/presence/{ANN}", site="us")
    assert one.status_code == 200
    doc = one.json()
    assert doc["address"] == ANN and doc["state"] in ("Available", "Busy", "InAMeeting")
    assert len(doc["slots"]["digits"]) == 128 and doc["slots"]["minutes"] == 15
    assert doc["freshness"]["site"] == "eu"
    pidf = get(cluster, f"/api/v1/presence/{ANN}", headers={"Accept": "application/pidf+xml"})
    assert pidf.headers["content-type"].startswith("application/pidf+xml")
    assert b'entity="pres:eu-ann@contoso.test"' in pidf.content
    pidf_schema().assertValid(etree.fromstring(pidf.content))
    batch = httpx.post(
        cluster.sites["eu"][0].direct_url + "/api/v1/presence",
        json={"addresses": [BOB, "nobody@contoso.test", ANN, DEE]},
        auth=login(cluster, "outsider"), verify=str(cluster.ca.ca_pem), trust_env=False,
        timeout=20,
    )  # fmt: skip
    assert batch.status_code == 200, batch.text
    entries = batch.json()["value"]
    assert [e["address"] for e in entries] == [BOB, "nobody@contoso.test", ANN, DEE]
    assert entries[0]["state"] and entries[2]["state"]
    assert entries[1]["error"]["code"] == "ErrorMailRecipientNotFound"
    assert entries[3]["error"]["code"] == "ErrorNoFreeBusyAccess" and "state" not in entries[3]


def test_an_old_server_mailbox_from_its_merged_data(cluster: Cluster, legacy: LegacyServer) -> None:
    now = datetime.now(UTC)
    slot = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    legacy.publish(
        OLD, busy=[(slot - timedelta(minutes=15), slot + timedelta(minutes=45))],
        oof=[(slot + timedelta(minutes=45), slot + timedelta(minutes=75))],
        publish_start=slot - timedelta(days=2), publish_end=slot + timedelta(days=5),
    )  # fmt: skip
    for site in ("eu", "us"):
        doc = get(cluster, f"/api/v1/presence/{OLD}", site=site).json()
        # busy from a slot before this one to three slots after it, then two slots OOF: no
        # attendees are known, so Busy, then Away
        assert (doc["state"], doc["next"]) == ("Busy", "Away"), doc
        assert parse(doc["since"]) == slot - timedelta(minutes=15)
        assert parse(doc["until"]) == slot + timedelta(minutes=45)
        assert doc["slots"]["digits"][:6] == "222330"
        assert doc["freshness"]["source"] in ("legacy", "cache", "remote-cache")
        assert doc["freshness"]["site"] == "eu" and doc["freshness"]["oldServer"] is True
    modern = get(cluster, f"/api/v1/presence/{ANN}", site="us").json()
    assert modern["freshness"]["oldServer"] is False


def cas_command(cluster: Cluster, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "cas", *args, "--url", cluster.sites["eu"][0].direct_url,
        "--ca", str(cluster.ca.ca_pem), "--user", "helper", "--password-env", "PRESENCE_PW",
    ]  # fmt: skip


def test_the_command_line_prints_states_and_follows_changes(cluster: Cluster) -> None:
    env = {**os.environ, "PRESENCE_PW": USERS["helper"][0]}
    done = subprocess.run(
        cas_command(cluster, "lookup", "--presence", DEE, "nobody@contoso.test"),
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one address has no state
    lines = done.stdout.splitlines()
    assert (
        lines[0].startswith(f"{DEE}  In a meeting since ") and "'Board' @ 'Top floor'" in lines[0]
    )
    assert lines[1] == "nobody@contoso.test  (error: ErrorMailRecipientNotFound)"
    follow = subprocess.Popen(
        cas_command(cluster, "presence", "--follow", ANN, "--count", "2", "--seconds", "60"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert f"{ANN}  Available" in first
        now = datetime.now(UTC).replace(microsecond=0)
        calendar(cluster, ANN).add_event(
            vevent(str(uuid.uuid4()), now - timedelta(minutes=2), now + timedelta(minutes=30),
                   "Write-up", attendees=False)
        )  # fmt: skip
        rest, errors = follow.communicate(timeout=60)
        assert follow.returncode == 0, errors
        assert f"{ANN}  Busy since " in rest and "'Write-up'" in rest
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


PAGE_SCRIPT = """
(address) => {
  window.got = [];
  const source = new EventSource("/api/v1/presence/stream?address=" + encodeURIComponent(address));
  source.addEventListener("presence", (e) => {
    window.got.push({id: e.lastEventId, data: JSON.parse(e.data)});
  });
  source.onerror = () => window.got.push({error: source.readyState});
}
"""


def test_a_real_browser_eventsource_receives_the_stream(cluster: Cluster) -> None:
    from playwright.sync_api import sync_playwright

    node = cluster.sites["eu"][0].direct_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(
                ignore_https_errors=True,
                http_credentials={"username": "helper", "password": USERS["helper"][0]},
            )
            page = context.new_page()
            page.goto(node + "/healthz")  # a page of the node's own origin, served by the node
            page.evaluate(PAGE_SCRIPT, BOB)
            page.wait_for_function("window.got.some(e => e.data)", timeout=30_000)
            first = page.evaluate("window.got.find(e => e.data)")
            assert first["data"]["address"] == BOB and first["data"]["state"]
            now = datetime.now(UTC).replace(microsecond=0)
            calendar(cluster, BOB).add_event(
                vevent(str(uuid.uuid4()), now - timedelta(minutes=1), now + timedelta(hours=3),
                       "Browser check", attendees=True)
            )  # fmt: skip
            page.wait_for_function(
                "window.got.some(e => e.data && e.data.state === 'InAMeeting')", timeout=30_000
            )
            pushed = page.evaluate("window.got.find(e => e.data && e.data.state === 'InAMeeting')")
            assert pushed["data"]["subject"] == "Browser check"
            assert pushed["id"] and pushed["id"] != first["id"]  # EventSource keeps the id
        finally:
            browser.close()


def test_bad_input(cluster: Cluster) -> None:
    missing = get(cluster, "/api/v1/presence/nobody@contoso.test")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorMailRecipientNotFound"
    too_many = get(cluster, "/api/v1/presence/stream?" + "&".join(
        f"address={a}" for a in (ANN, BOB, CID, DEE, ANN)))  # fmt: skip
    assert too_many.status_code == 400 and "at most 4" in too_many.json()["error"]["message"]
    unknown = get(cluster, f"/api/v1/presence/stream?address={ANN}&address=nobody@contoso.test")
    assert unknown.status_code == 404
    anonymous = httpx.get(
        cluster.sites["eu"][0].direct_url + f"/api/v1/presence/{ANN}",
        verify=str(cluster.ca.ca_pem), trust_env=False,
    )  # fmt: skip
    assert anonymous.status_code == 401
    for bad in ("garbage", "1-2-3", "", "\u00e9-9", "ffffffff-99999999999"):
        s = stream(cluster, [ANN], headers={"Last-Event-ID": bad} if bad.isascii() else {},
                   query=[("lastEventId", bad)])  # fmt: skip
        try:
            fresh = s.next(lambda e: e.event == "presence")
            assert fresh.data["address"] == ANN and "state" in fresh.data
        finally:
            s.close()


def test_resume_with_last_event_id_replays_what_was_missed(cluster: Cluster) -> None:
    s = stream(cluster, [BOB], node=0)
    try:
        first = s.next(lambda e: e.event == "presence")
    finally:
        s.close()
    keeper = stream(cluster, [BOB], node=0)  # keeps the watch while the first one is away
    try:
        keeper.next(lambda e: e.event == "presence")
        now = datetime.now(UTC).replace(microsecond=0)
        calendar(cluster, BOB).add_event(
            vevent(str(uuid.uuid4()), now - timedelta(minutes=1), now + timedelta(hours=2),
                   "Offsite", oof=True, attendees=False)
        )  # fmt: skip
        pushed = keeper.next(state_is("Away", BOB))
        again = stream(cluster, [BOB], node=0, headers={"Last-Event-ID": str(first.id)})
        try:
            replayed = again.next(lambda e: e.event == "presence")
            assert replayed.id == pushed.id and replayed.data == pushed.data
        finally:
            again.close()
        elsewhere = stream(cluster, [BOB], node=1, headers={"Last-Event-ID": str(pushed.id)})
        try:  # another node's id: a fresh stream, the current state first
            current = elsewhere.next(lambda e: e.event == "presence")
            assert current.data["state"] == "Away" and current.id != pushed.id
        finally:
            elsewhere.close()
    finally:
        keeper.close()


def test_streams_past_the_bound_get_503_and_heartbeats_flow(cluster: Cluster) -> None:
    held = [stream(cluster, [ANN], node=0) for _ in range(6)]
    try:
        refused = get(cluster, f"/api/v1/presence/stream?address={ANN}")
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        time.sleep(2.5)
        assert all(s.comments >= 1 for s in held)  # heartbeat comments, one a second
        assert all(s.retries and s.retries[0] > 0 for s in held)
    finally:
        for s in held:
            s.close()


def test_a_stopped_backend_shows_unknown_never_available(cluster: Cluster) -> None:
    streams = [stream(cluster, [BOB], site="eu", node=1), stream(cluster, [BOB], site="us")]
    pid = cluster.radicales["us"].pid
    assert pid is not None
    try:
        before = [s.next(lambda e: e.event == "presence").data["state"] for s in streams]
        assert "Unknown" not in before
        os.kill(pid, signal.SIGSTOP)
        for s in streams:
            unknown = s.next(state_is("Unknown", BOB), timeout=90)
            assert unknown.data["slots"]["digits"] == "4" * 128
        for s in streams:
            assert not any(e.data.get("state") == "Available" for e in s.drain())
    finally:
        os.kill(pid, signal.SIGCONT)
        for s in streams:
            s.close()


def test_draining_closes_streams_with_a_retry_hint(cluster: Cluster) -> None:
    node = cluster.sites["eu"][1]
    s = stream(cluster, [ANN], node=1)
    try:
        s.next(lambda e: e.event == "presence")
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGTERM)
        hint: SseEvent = s.next(lambda e: e.event == "draining", timeout=20)
        assert (
            hint.data["retryMilliseconds"] > 0 and s.retries[-1] == hint.data["retryMilliseconds"]
        )
        assert s.ended.wait(20)
    finally:
        s.close()
        node.stop()
