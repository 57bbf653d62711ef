"""`cas lookup` without a network: options, output (plain snapshot, colours, JSON) and the
discovery → GetUserSettings → GetUserAvailability orchestration against a mock transport that
answers with the server codecs.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from cas.cli import build_parser, main
from cas.client.lookup import Attendee, LookupResult, lookup_availability
from cas.client.options import LookupFailed, LookupOptions, options_from_args
from cas.client.render import lookup_document, print_json, print_timeline, render_timeline
from cas.codecs import ews
from cas.codecs.autodiscover import (
    NotFound,
    Redirect,
    UserSettings,
    parse_get_user_settings,
    render_get_user_settings,
)
from cas.errors import MailboxError
from cas.model.availability import FreeBusyView
from cas.model.freebusy import BusyType, Event, EventDetails, MailboxData, Window

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
URL = "https://127.0.0.1:8443/EWS/Exchange.asmx"


def b(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def options(addresses: tuple[str, ...], **overrides: object) -> LookupOptions:
    values: dict[str, object] = dict(
        addresses=addresses, window=Window(b(2024, 3, 4), b(2024, 3, 5)), interval_minutes=60,
        view=FreeBusyView.DETAILED_MERGED, tz=BERLIN, tz_name="Europe/Berlin",
    )  # fmt: skip
    values.update(overrides)
    return LookupOptions(**values)  # type: ignore[arg-type]


# ---- output ----------------------------------------------------------------------------------

ANN = MailboxData(events=(
    Event(b(2024, 3, 4, 9), b(2024, 3, 4, 10), BusyType.BUSY, EventDetails(subject="Design review", location="Room 1")),
    Event(b(2024, 3, 4, 13, 30), b(2024, 3, 4, 14), BusyType.TENTATIVE, EventDetails(subject="Maybe lunch")),
    Event(b(2024, 3, 4, 15), b(2024, 3, 4, 16), BusyType.BUSY, EventDetails(is_private=True)),
))  # fmt: skip
FIXED = LookupResult(
    options(("ann@contoso.test", "bob@contoso.test", "carol@contoso.test", "dave@contoso.test")),
    (
        Attendee("ann@contoso.test", ANN, URL, "ann@contoso.test", "Ann Example"),
        Attendee(
            "bob@contoso.test", MailboxData(merged="00000000333333330000", merged_only=True), URL
        ),
        Attendee(
            "carol@contoso.test", MailboxError("ErrorNoFreeBusyAccess", "No access.", "us"), URL
        ),
        Attendee("dave@contoso.test", MailboxData(coverage=()), URL),
    ),
)

SNAPSHOT = """\
Free/busy 2024-03-04 00:00 → 2024-03-05 00:00 (Europe/Berlin), 60-minute slots, DetailedMerged

Mon 04 Mar 2024
                    00 03 06 09 12 15 18 21
ann@contoso.test    ·········█···░·█········
bob@contoso.test    ········▓▓▓▓▓▓▓▓····????
carol@contoso.test  ✗ ErrorNoFreeBusyAccess
dave@contoso.test   ????????????????????????

· free  ░ tentative  █ busy  ▓ out of office  ? no data  ✗ error

ann@contoso.test (Ann Example)  via https://127.0.0.1:8443/EWS/Exchange.asmx
  09:00–10:00  Busy             Design review @ Room 1
  13:30–14:00  Tentative        Maybe lunch
  15:00–16:00  Busy             [private]

bob@contoso.test  via https://127.0.0.1:8443/EWS/Exchange.asmx
  (only merged free/busy is known; no event list)

carol@contoso.test  via https://127.0.0.1:8443/EWS/Exchange.asmx
  ✗ ErrorNoFreeBusyAccess: No access. [site us]

dave@contoso.test  via https://127.0.0.1:8443/EWS/Exchange.asmx
  (no data)
"""


def test_plain_timeline_snapshot() -> None:
    out = io.StringIO()  # not a terminal: plain text, no escape codes
    print_timeline(FIXED, out)
    assert out.getvalue() == SNAPSHOT
    assert "\x1b" not in out.getvalue()


def test_a_terminal_gets_colours() -> None:
    out = io.StringIO()
    print_timeline(FIXED, out, color=True)
    assert "\x1b[" in out.getvalue()


def test_views_without_details_list_only_errors_and_ruler_follows_dst() -> None:
    result = LookupResult(
        options(("ann@contoso.test", "x@contoso.test"), window=Window(b(2024, 3, 31), b(2024, 4, 1)),
                view=FreeBusyView.FREE_BUSY, interval_minutes=30),
        (Attendee("ann@contoso.test", ANN), Attendee("x@contoso.test", MailboxError.of("ErrorMailRecipientNotFound"))),
    )  # fmt: skip
    lines = [t.plain for t in render_timeline(result)]
    assert (
        lines[3]
        == " " * 18
        + "00  02  04  06  08  10  12  14  16  18  20  22"[:2]
        + "  03  05  07  09  11  13  15  17  19  21  23"
    )
    assert len(lines[4]) == 18 + 46  # 23 hours on the day clocks go forward
    assert not any("Design review" in line for line in lines)
    assert lines[-1].startswith("  ✗ ErrorMailRecipientNotFound: No mailbox")


def test_json_document_shape() -> None:
    out = io.StringIO()
    print_json(FIXED, out)
    doc = json.loads(out.getvalue())
    assert doc == lookup_document(FIXED)
    assert doc["window"] == {
        "start": "2024-03-03T23:00:00Z",
        "end": "2024-03-04T23:00:00Z",
        "timezone": "Europe/Berlin",
    }
    assert (doc["interval_minutes"], doc["view"]) == (60, "DetailedMerged")
    ann, bob, carol, dave = doc["attendees"]
    assert ann == {
        "address": "ann@contoso.test", "mailbox": "ann@contoso.test", "display_name": "Ann Example",
        "ews_url": URL, "status": "ok", "message": None, "site": None,
        "merged": "000000000200010200000000",
        "events": [
            {"start": "2024-03-04T08:00:00Z", "end": "2024-03-04T09:00:00Z", "busy_type": "Busy",
             "subject": "Design review", "location": "Room 1", "private": False, "meeting": False,
             "recurring": False, "exception": False},
            {"start": "2024-03-04T12:30:00Z", "end": "2024-03-04T13:00:00Z", "busy_type": "Tentative",
             "subject": "Maybe lunch", "location": None, "private": False, "meeting": False,
             "recurring": False, "exception": False},
            {"start": "2024-03-04T14:00:00Z", "end": "2024-03-04T15:00:00Z", "busy_type": "Busy",
             "subject": None, "location": None, "private": True, "meeting": False,
             "recurring": False, "exception": False},
        ],
        "view": "DetailedMerged",
    }  # fmt: skip
    assert bob["merged"] == "000000003333333300004444"  # short answer padded with no data
    assert (carol["status"], carol["message"], carol["site"], carol["merged"]) == (
        "ErrorNoFreeBusyAccess",
        "No access.",
        "us",
        None,
    )
    assert carol["view"] == "None"
    assert dave["merged"] == "4" * 24


def test_a_times_only_answer_says_so_in_the_timeline_and_the_json() -> None:
    seen = MailboxData(events=tuple(e.__class__(e.start, e.end, e.busy_type) for e in ANN.events),
                       times_only=True)  # fmt: skip
    result = LookupResult(
        options(("ann@contoso.test",)), (Attendee("ann@contoso.test", seen, URL),)
    )
    text = "\n".join(line.plain for line in render_timeline(result))
    assert "(times only: this login may not see subjects)" in text
    assert "Design review" not in text
    [ann] = lookup_document(result)["attendees"]
    assert ann["view"] == "FreeBusyMerged" and {e["subject"] for e in ann["events"]} == {None}


# ---- options ---------------------------------------------------------------------------------

NOW = u(2024, 3, 31, 10)


def parse(*argv: str, environ: dict[str, str] | None = None) -> LookupOptions:
    args = build_parser().parse_args(["lookup", *argv])
    return options_from_args(args, now=NOW, environ=environ or {})


def test_default_window_is_today_in_the_zone_and_days_are_wall_clock_days() -> None:
    opts = parse("ann@contoso.test", "--tz", "Europe/Berlin")
    assert opts.window == Window(u(2024, 3, 30, 23), u(2024, 3, 31, 22))  # 23 hours: DST starts
    assert (opts.interval_minutes, opts.view, opts.ews_url, opts.dns) == (
        30,
        FreeBusyView.DETAILED_MERGED,
        None,
        None,
    )
    assert parse("a@x.test", "--tz", "UTC", "--days", "2").window == Window(
        u(2024, 3, 31), u(2024, 4, 2)
    )
    assert parse(
        "a@x.test", "--tz", "Europe/Berlin", "--start", "2024-03-04T08:00"
    ).window == Window(u(2024, 3, 4, 7), u(2024, 3, 5, 7))
    opts = parse(
        "a@x.test",
        "--tz",
        "Australia/Sydney",
        "--start",
        "2024-03-04T08:00Z",
        "--end",
        "2024-03-04T10:00+01:00",
    )
    assert opts.window == Window(u(2024, 3, 4, 8), u(2024, 3, 4, 9))


def test_urls_dns_and_credentials() -> None:
    assert parse("a@x.test", "--url", "https://127.0.0.1:8443/").ews_url == URL
    assert (
        parse("a@x.test", "--url", "https://h/ews/exchange.asmx").ews_url
        == "https://h/ews/exchange.asmx"
    )
    assert parse("a@x.test", "--dns", "127.0.0.1:5353").dns == ("127.0.0.1", 5353)
    assert parse("a@x.test", "--dns", "[::1]:5300").dns == ("::1", 5300)
    assert parse("a@x.test", "--dns", "127.0.0.2").dns == ("127.0.0.2", 53)
    opts = parse("a@x.test", "--user", "sched", "--password-env", "PW", environ={"PW": "s3cret"})
    assert (opts.username, opts.password) == ("sched", "s3cret")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--end", "2024-03-05"], "--end needs --start"),
        (["--start", "2024-03-04", "--end", "2024-03-05", "--days", "2"], "exclude each other"),
        (["--days", "0"], "at least 1"),
        (["--start", "tomorrow"], "not an ISO date"),
        (["--start", "2024-03-05", "--end", "2024-03-04"], "is not before"),
        (["--tz", "Mars/Olympus_Mons"], "unknown time zone"),
        (["--interval", "4"], "--interval 4: must be 5..1440"),
        (["--start", "2024-03-04T00:00", "--end", "2024-03-04T01:00", "--interval", "90"], "longer than the window"),
        (["--user", "sched"], "--password-env"),
        (["--user", "sched", "--password-env", "NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE: the variable is not set"),
        (["--password-env", "PW"], "needs --user"),
        (["--ca", "/nonexistent/ca.pem"], "no such file"),
        (["--url", "ftp://127.0.0.1/"], "--url ftp://127.0.0.1/"),
        (["--dns", "127.0.0.1:99999"], "port 1..65535"),
        (["--timeout", "0"], "must be positive"),
        (["--manifest", "/nonexistent/lab.json"], "cannot read it"),
    ],
)  # fmt: skip
def test_bad_options_are_one_clear_message(argv: list[str], words: str) -> None:
    with pytest.raises(LookupFailed, match=words.replace("(", r"\(").replace(".", r"\.")):
        parse("ann@contoso.test", *argv, environ={"PW": "x"})


def test_a_non_address_is_refused() -> None:
    with pytest.raises(LookupFailed, match="'ann' is not an email address"):
        parse("ann")


def test_the_manifest_fills_what_the_command_line_leaves_open(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not read here")
    manifest = tmp_path / "lab.json"
    manifest.write_text(json.dumps({
        "domain": "contoso.test", "dns": {"host": "127.0.0.1", "port": 5353}, "ca_cert": "ca.pem",
        "client": {"username": "sched", "password": "pw"},
        "sites": [{"name": "eu", "nodes": ["https://127.0.0.1:1"]}, {"name": "us", "nodes": ["https://127.0.0.1:2"]}],
    }))  # fmt: skip
    opts = parse("a@contoso.test", "--manifest", str(manifest))
    assert (opts.dns, opts.ca_file) == (("127.0.0.1", 5353), str(tmp_path / "ca.pem"))
    assert (opts.username, opts.password) == ("sched", "pw")
    assert opts.manifest_nodes == ("https://127.0.0.1:1", "https://127.0.0.1:2")
    opts = parse("a@contoso.test", "--manifest", str(manifest), "--dns", "127.0.0.1:53",
                 "--user", "other", "--password-env", "PW", environ={"PW": "pw2"})  # fmt: skip
    assert (opts.dns, opts.username, opts.password) == (("127.0.0.1", 53), "other", "pw2")


def test_user_may_name_a_requester_of_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "lab.json"
    manifest.write_text(json.dumps({
        "client": {"username": "sched", "password": "pw"},
        "requesters": [{"username": "sched", "password": "pw", "level": "FullDetails"},
                       {"username": "viewer", "password": "v-pw", "level": "FreeBusyTimeOnly"}],
    }))  # fmt: skip
    opts = parse("a@contoso.test", "--manifest", str(manifest), "--user", "viewer")
    assert (opts.username, opts.password) == ("viewer", "v-pw")
    opts = parse("a@contoso.test", "--manifest", str(manifest), "--user", "sched")
    assert (opts.username, opts.password) == ("sched", "pw")
    with pytest.raises(LookupFailed, match="or a requester the --manifest names"):
        parse("a@contoso.test", "--manifest", str(manifest), "--user", "stranger")


@pytest.mark.parametrize(
    ("content", "words"),
    [("{not json", "not a JSON document"), ("[1]", "expected a JSON object"),
     ('{"dns": {"host": "127.0.0.1", "port": "53"}}', "dns.port must be a int"),
     ('{"sites": [{"nodes": "https://x"}]}', r"sites\[0\].nodes"),
     ('{"requesters": [{"username": "viewer"}]}', r"requesters\[0\] must have a username and a password")],
)  # fmt: skip
def test_a_bad_manifest_is_named(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "lab.json"
    path.write_text(content)
    with pytest.raises(LookupFailed, match=words):
        parse("a@contoso.test", "--manifest", str(path))


def test_the_cli_prints_usage_problems_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["lookup", "ann@contoso.test", "--tz", "Nowhere/Land"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("cas lookup: --tz Nowhere/Land: unknown time zone")
        and "Traceback" not in err
    )
    with pytest.raises(SystemExit) as exit_:
        main(["lookup", "ann@contoso.test", "--url", "https://x", "--autodiscover"])
    assert exit_.value.code == 2


# ---- orchestration against a mock transport ---------------------------------------------------

NODES = ("https://127.0.0.1:9001", "https://127.0.0.1:9002")
EWS = {
    "eu": "https://127.0.0.1:9002/EWS/Exchange.asmx",
    "us": "https://127.0.0.1:9003/EWS/Exchange.asmx",
}
BUSY = MailboxData(events=(Event(b(2024, 3, 4, 9), b(2024, 3, 4, 10), BusyType.BUSY),))
DIRECTORY = {  # address -> Autodiscover answer
    "ann@contoso.test": UserSettings("ann@contoso.test", EWS["eu"], "Ann"),
    "bob@contoso.test": UserSettings("bob@contoso.test", EWS["us"], "Bob"),
    "robert@old.test": Redirect("bob@contoso.test"),
    "loop1@contoso.test": Redirect("loop2@contoso.test"),
    "loop2@contoso.test": Redirect("LOOP1@contoso.test"),
}


class FakeCluster:
    """Autodiscover on NODES[1] (NODES[0] is down) and two EWS servers, all via the codecs."""

    def __init__(
        self, *, down: set[str] | None = None, fault: set[str] | None = None, status: int = 200
    ) -> None:
        self.down, self.fault, self.status = down or {NODES[0]}, fault or set(), status
        self.calls: Counter[str] = Counter()
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.calls[url] += 1
        if any(url.startswith(d) for d in self.down):
            raise httpx.ConnectError("connection refused", request=request)
        if url.endswith("/autodiscover/autodiscover.svc"):
            asked = parse_get_user_settings(request.content)
            answers = [DIRECTORY.get(m.lower(), NotFound()) for m in asked.mailboxes]
            return httpx.Response(200, content=render_get_user_settings(asked, answers))
        if url in self.fault:
            return httpx.Response(
                500, content=ews.render_fault_code("ErrorServerBusy", "Try later.")
            )
        if self.status != 200:
            return httpx.Response(self.status, text="no")
        asked_ews = ews.parse_get_user_availability(ews.parse_envelope(request.content))
        results = [BUSY if q.address in ("ann@contoso.test", "bob@contoso.test") or q.address.startswith("u")
                   else MailboxError.of("ErrorMailRecipientNotFound") for q in asked_ews.mailboxes]  # fmt: skip
        return httpx.Response(200, content=ews.render_get_user_availability(asked_ews, results))


def answered(attendee: Attendee) -> bool:
    """The attendee got BUSY's events back (and the merged string the server computed)."""
    data = attendee.result
    return (
        isinstance(data, MailboxData)
        and data.events == BUSY.events
        and data.merged == "0" * 9 + "2" + "0" * 14
    )


async def run(cluster: FakeCluster, *addresses: str, **overrides: object) -> LookupResult:
    opts = options(addresses, manifest_nodes=NODES, **overrides)
    return await lookup_availability(opts, transport=cluster.transport)


async def test_discovery_fails_over_follows_redirects_and_groups_by_ews_url() -> None:
    cluster = FakeCluster()
    result = await run(
        cluster,
        "bob@contoso.test",
        "nobody@contoso.test",
        "robert@old.test",
        "ann@contoso.test",
        "loop1@contoso.test",
    )
    bob, nobody, robert, ann, loop = result.attendees
    assert (bob.ews_url, bob.mailbox, bob.display_name) == (EWS["us"], "bob@contoso.test", "Bob")
    assert (robert.ews_url, robert.mailbox) == (EWS["us"], "bob@contoso.test")
    assert ann.ews_url == EWS["eu"]
    assert answered(bob) and answered(robert) and answered(ann)
    assert (
        isinstance(nobody.result, MailboxError)
        and nobody.result.code == "ErrorMailRecipientNotFound"
    )
    assert "does not know nobody@contoso.test" in nobody.result.message
    assert isinstance(loop.result, MailboxError) and "loop" in loop.result.message
    assert "loop1@contoso.test → loop2@contoso.test → LOOP1@contoso.test" in loop.result.message
    assert result.exit_code == 1
    assert (
        cluster.calls[NODES[0] + "/autodiscover/autodiscover.svc"] == 1
    )  # skipped for good after one failure
    assert cluster.calls[EWS["eu"]] == 1 and cluster.calls[EWS["us"]] == 1  # one request per URL


async def test_redirects_are_followed_at_most_ten_times(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = {f"hop{i}@contoso.test": Redirect(f"hop{i + 1}@contoso.test") for i in range(11)}
    chain["hop10@contoso.test"] = Redirect("ann@contoso.test")  # ten redirects: still followed
    monkeypatch.setitem(DIRECTORY, "start@contoso.test", Redirect("hop1@contoso.test"))
    for address, answer in chain.items():
        monkeypatch.setitem(DIRECTORY, address, answer)
    [ten] = (await run(FakeCluster(), "hop1@contoso.test")).attendees
    assert answered(ten) and ten.mailbox == "ann@contoso.test"
    [eleven] = (await run(FakeCluster(), "start@contoso.test")).attendees
    assert isinstance(eleven.result, MailboxError)
    assert "more than 10 times: start@contoso.test → hop1@contoso.test" in eleven.result.message


async def test_more_than_a_hundred_mailboxes_take_several_requests() -> None:
    cluster = FakeCluster()
    addresses = tuple(f"u{i}@contoso.test" for i in range(150))
    result = await run(cluster, *addresses, ews_url=EWS["eu"])
    assert cluster.calls[EWS["eu"]] == 2 and result.exit_code == 0
    assert [a.address for a in result.attendees] == list(addresses)


async def test_a_fault_costs_only_its_group() -> None:
    cluster = FakeCluster(fault={EWS["us"]})
    ann, bob = (await run(cluster, "ann@contoso.test", "bob@contoso.test")).attendees
    assert answered(ann)
    assert (
        isinstance(bob.result, MailboxError) and "ErrorServerBusy: Try later." in bob.result.message
    )


@pytest.mark.parametrize(
    ("cluster", "words"),
    [
        (FakeCluster(down={NODES[0], NODES[1]}), "no Autodiscover server answered (https://127.0.0.1:9001/autodiscover/autodiscover.svc: connection refused; https://127.0.0.1:9002"),
        (FakeCluster(down={NODES[0], EWS["eu"], EWS["us"]}), "no EWS server answered: https://127.0.0.1:9002/EWS/Exchange.asmx: connection refused"),
        (FakeCluster(status=401), "refused the credentials"),
        (FakeCluster(status=502), "HTTP 502, unreadable answer"),
    ],
)  # fmt: skip
async def test_when_nothing_answers_the_lookup_fails(cluster: FakeCluster, words: str) -> None:
    with pytest.raises(LookupFailed) as caught:
        await run(cluster, "ann@contoso.test", "bob@contoso.test")
    assert words in str(caught.value)
