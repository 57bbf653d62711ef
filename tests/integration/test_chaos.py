"""Chaos: one fault at a time under a small load, with real processes, and what must hold.

Three sites of real `cas serve` nodes over TLS: `eu` (the entry node, its own redis-server and
an old server for two legacy mailboxes), `us` (two nodes, one of which gets killed) and `ap`
(whose Radicale gets stopped). Two client threads ask the entry node for every mailbox of every
site at once, over and over, while one part fails: ap's Radicale hangs (SIGSTOP), the old
server hangs (SIGSTOP), eu's Redis is killed, a us node is killed. Between faults the part is
given back and the test waits until every answer is whole again.

What must hold in every answer of every phase:

* no healthy mailbox is lost: outside the failed part each mailbox is `NoError`, with exactly
  the free/busy its calendar has (worked out here from the events written);
* no unknown time is shown as free: any `NoError` answer is exactly right, also for the failed
  part (stale data is the same calendar, marked `stale-cache`);
* the hung part's mailboxes are answered within the query window: a mailbox the cache has is
  served stale, one it has not gets `ErrorFreeBusyGenerationFailed` for its site (never the
  whole site's `ErrorProxyRequestProcessingFailed`), its backend named in the message or, for
  details a client is not told, in the entry node's log under the request id; and every
  request is answered by its deadline;
* each failure opens its breaker once: one log line per dependency that went down.

Bounded: each phase sends at most `LOAD_REQUESTS` lookups per thread for `LOAD_SECONDS`.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.process import LegacyServer
from caslab.redis import RedisProcess, find_redis_server
from tests.support.cluster import Cluster, Node, start_cluster
from tests.support.node import make_test_ca
from tests.support.redis import MISSING

DAY = datetime(2024, 3, 4, tzinfo=UTC)
START, END = "2024-03-04T08:00:00Z", "2024-03-04T12:00:00Z"  # four hourly digits
SITES = {"eu": ["a", "b"], "us": ["a", "b"], "ap": ["a", "b", "cold"]}
NODES = {"eu": 1, "us": 2, "ap": 1}
BUSY_HOUR = {  # each mailbox is busy for one hour of the window
    "eu-a": 8, "eu-b": 9, "us-a": 10, "us-b": 11, "ap-a": 8, "ap-b": 9, "ap-cold": 10,
    "eu-old": 9, "eu-oldcold": 11,
}  # fmt: skip
LEGACY = ["eu-old", "eu-oldcold"]
COLD = {"ap-cold", "eu-oldcold"}  # first asked while their backend hangs: nothing cached
REQUEST_TIMEOUT = 5.0
REFRESH = 0.5  # cached data older than this makes the node ask its backend again
SETTINGS = {
    "request_timeout_seconds": REQUEST_TIMEOUT,
    "cache_refresh_seconds": REFRESH,
    "cache_query_window_seconds": 1.0,
    "remote_cache_seconds": 0,  # the entry node asks the other sites every time
    "breaker_failures": 2,
    "breaker_open_seconds": 1.0,
    "breaker_max_open_seconds": 2.0,
    "breaker_slow_seconds": 1.5,
    "throttle_rate": 0,  # the load is one requester asking far more than its share
}
LOAD_THREADS = 2
LOAD_SECONDS = 5.0
LOAD_REQUESTS = 40  # per thread and phase
SETTLE_SECONDS = 20.0
# A request is answered by its deadline; the client waits that long and a little more (the
# way back), so a node that overruns its own deadline fails the test, not a slow machine.
CLIENT_TIMEOUT = REQUEST_TIMEOUT + 5.0


def address(local: str) -> str:
    return f"{local}@contoso.test"


def expected(local: str) -> str:
    """The merged string of `local` over the window, from its one busy hour."""
    return "".join("2" if 8 + slot == BUSY_HOUR[local] else "0" for slot in range(4))


def event(local: str) -> str:
    hour = BUSY_HOUR[local]
    return f"""
BEGIN:VEVENT
UID:{uuid.uuid4()}
DTSTAMP:20240101T000000Z
DTSTART:20240304T{hour:02d}0000Z
DTEND:20240304T{hour + 1:02d}0000Z
SUMMARY:{local}
END:VEVENT"""


@dataclass(frozen=True)
class Answer:
    code: str  # "NoError" or the error's responseCode; "transport" when no answer came
    view: str | None
    source: str | None
    message: str
    site: str | None = None  # the site an error names


@dataclass
class Chaos:
    cluster: Cluster
    redis: RedisProcess
    legacy: LegacyServer

    @property
    def entry(self) -> str:
        return self.cluster.sites["eu"][0].direct_url

    def log(self, site: str, index: int = 0) -> str:
        return self.cluster.sites[site][index].log.read_text(errors="replace")


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    if find_redis_server() is None:
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("chaos")
    ca = make_test_ca(root / "tls")
    directory = {
        address(local): DirectoryEntry(f"/o=Contoso/ou=EU/cn=Recipients/cn={local}", local)
        for local in LEGACY
    }
    with ExitStack() as stack:
        redis = RedisProcess(root / "redis")
        stack.callback(redis.stop)
        redis.start()
        legacy = LegacyServer(root / "legacy", directory)
        stack.callback(legacy.stop)
        legacy.start()
        for local in LEGACY:
            hour = BUSY_HOUR[local]
            legacy.publish(
                address(local),
                busy=[(DAY.replace(hour=hour), DAY.replace(hour=hour + 1))],
                publish_start=DAY,
                publish_end=DAY.replace(day=5),
            )
        cluster = start_cluster(
            root, ca, SITES, nodes_per_site=NODES, settings=SETTINGS,
            site_fields={"eu": {"redis": redis.url, "legacy": {"url": legacy.public_url}}},
            extra_mailboxes=[
                {"address": address(local), "site": "eu", "kind": "legacy",
                 "legacy_dn": directory[address(local)].legacy_dn}
                for local in LEGACY
            ],
        )  # fmt: skip
        stack.callback(cluster.stop)
        for site, locals_ in SITES.items():
            for local in locals_:
                cluster.write_events(address(f"{site}-{local}"), [event(f"{site}-{local}")])
        yield Chaos(cluster, redis, legacy)


# --- asking ------------------------------------------------------------------------------------


def ask(client: httpx.Client, chaos: Chaos, locals_: list[str]) -> dict[str, Answer]:
    body = {
        "schedules": [address(local) for local in locals_],
        "startTime": {"dateTime": START, "timeZone": "UTC"},
        "endTime": {"dateTime": END, "timeZone": "UTC"},
        "availabilityViewInterval": 60,
        "view": "FreeBusyMerged",
    }
    try:
        r = client.post(chaos.entry + "/api/v1/availability", json=body, auth=chaos.cluster.client)
    except httpx.TransportError as exc:
        return {local: Answer("transport", None, None, repr(exc)) for local in locals_}
    assert r.status_code == 200, r.text
    answers: dict[str, Answer] = {}
    for local, item in zip(locals_, r.json()["value"], strict=True):
        assert item["scheduleId"] == address(local)
        if "error" in item:
            error = item["error"]
            code, message = error["responseCode"], error["message"]
            answers[local] = Answer(code, None, None, message, error["site"])
        else:
            fresh = item["freshness"]
            answers[local] = Answer("NoError", item["availabilityView"], fresh["source"], "")
    return answers


def client(chaos: Chaos) -> httpx.Client:
    return httpx.Client(
        verify=str(chaos.cluster.ca.ca_pem), trust_env=False, timeout=CLIENT_TIMEOUT
    )


def mailboxes(*, but: Collection[str] = ()) -> list[str]:
    """Every mailbox of the cluster (local parts), less `but`."""
    every = [f"{site}-{local}" for site, locals_ in SITES.items() for local in locals_] + LEGACY
    return [local for local in every if local not in but]


def load(chaos: Chaos, locals_: list[str]) -> list[dict[str, Answer]]:
    """Every answer of `LOAD_THREADS` threads asking for `locals_` for a while (bounded)."""
    results: list[dict[str, Answer]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + LOAD_SECONDS

    def worker() -> None:
        with client(chaos) as http:
            for _ in range(LOAD_REQUESTS):
                if time.monotonic() >= stop_at:
                    return
                answers = ask(http, chaos, locals_)
                with lock:
                    results.append(answers)

    threads = [threading.Thread(target=worker) for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT * LOAD_REQUESTS)
    assert not any(t.is_alive() for t in threads), "a load thread did not finish"
    return results


def settle(chaos: Chaos, locals_: list[str]) -> None:
    """Wait until one lookup of `locals_` is whole and right (again)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    with client(chaos) as http:
        while True:
            answers = ask(http, chaos, locals_)
            wrong = {
                k: a for k, a in answers.items() if (a.code, a.view) != ("NoError", expected(k))
            }
            if not wrong:
                return
            assert time.monotonic() < deadline, f"not whole again after the fault: {wrong}"
            time.sleep(0.3)


# --- what must hold ----------------------------------------------------------------------------


def blamed(answer: Answer, blame: str, entry_log: str) -> bool:
    """Does the error name `blame` ("Site 'ap', CalDAV backend")? In its message when the
    reason is plain; else in the entry node's log line for the request id the message gives
    (a client is told the code, the site and the request id; the details are logged)."""
    if blame in answer.message:
        return True
    rid = re.search(r"\(request ([^)\s]+)\)", answer.message)
    assert rid is not None, answer
    return any(f" rid={rid[1]} " in line and blame in line for line in entry_log.splitlines())


def check_phase(
    results: list[dict[str, Answer]], failed: set[str], blame: str | None, entry_log: str
) -> list[Answer]:
    """The rules of the module docstring over one phase; the failed part's answers."""
    assert results, "no lookup was answered during the fault"
    of_failed: list[Answer] = []
    for answers in results:
        for local, answer in answers.items():
            if answer.code == "NoError":
                # exact, so no busy or unknown time reads as free (stale data included)
                assert answer.view == expected(local), (local, answer)
            else:
                assert local in failed, f"healthy mailbox {local} lost: {answer}"
                # blamed on the backend that failed, never on a node or the whole site
                assert answer.code == "ErrorFreeBusyGenerationFailed", (local, answer)
                assert answer.site == local.split("-")[0], (local, answer)
                assert blame is not None and blamed(answer, blame, entry_log), (local, answer)
            if local in failed:
                of_failed.append(answer)
            if local in COLD & failed:
                assert answer.code != "NoError", (local, answer)  # nothing to serve it from
            elif local in failed:
                assert answer.code == "NoError", (local, answer)  # the cache has it: stale
    return of_failed


def served_stale(answers: list[Answer]) -> bool:
    return any(a.code == "NoError" and a.source == "stale-cache" for a in answers)


def opened_once(log_before: str, log_after: str, key: str) -> None:
    new = log_after[len(log_before) :]
    lines = [line for line in new.splitlines() if f" breaker {key} open: " in line]
    assert len(lines) == 1, f"breaker {key}: {lines}"


def phase(
    chaos: Chaos,
    fault: Callable[[], None],
    repair: Callable[[], None],
    failed: set[str],
    blame: str | None,
    ask_for: list[str],
) -> list[Answer]:
    """Under load: break a part, give it back, check the answers, wait until all is well."""
    time.sleep(REFRESH + 0.1)  # what the cache holds is due for a refresh: the part is asked
    fault()
    try:
        results = load(chaos, ask_for)
    finally:
        repair()
    of_failed = check_phase(results, failed, blame, chaos.log("eu"))
    settle(chaos, ask_for)
    return of_failed


def signal_pid(pid: int | None, signum: signal.Signals) -> Callable[[], None]:
    assert pid is not None

    def send() -> None:
        os.kill(pid, signum)

    return send


def serving_node(chaos: Chaos, site: str) -> Node:
    """The node of `site` that has answered the most lookups so far (the one the entry node
    forwards to: killing it makes the entry node fail over)."""
    nodes = chaos.cluster.sites[site]
    return max(nodes, key=lambda n: n.log.read_text(errors="replace").count("GetUserAvailability"))


# --- the phases, in one test so the cluster is started once ------------------------------------


def test_one_fault_at_a_time_costs_only_the_failed_part(chaos: Chaos) -> None:
    ap_radicale, legacy = chaos.cluster.radicales["ap"], chaos.legacy
    settle(chaos, mailboxes(but=COLD))  # every other mailbox is in its site's cache from here

    # a hung CalDAV server: its cached mailboxes stale, the cold one blamed on the backend
    before = chaos.log("ap")
    hung = phase(
        chaos,
        signal_pid(ap_radicale.pid, signal.SIGSTOP),
        signal_pid(ap_radicale.pid, signal.SIGCONT),
        failed={"ap-a", "ap-b", "ap-cold"},
        blame="Site 'ap', CalDAV backend",
        ask_for=mailboxes(but={"eu-oldcold"}),
    )
    assert served_stale(hung), "the hung backend's cached mailboxes were not served stale"
    opened_once(before, chaos.log("ap"), "caldav:ap")

    # a hung old server: the same, for the legacy mailboxes only
    before = chaos.log("eu")
    hung = phase(
        chaos,
        signal_pid(legacy.pid, signal.SIGSTOP),
        signal_pid(legacy.pid, signal.SIGCONT),
        failed=set(LEGACY),
        blame="Site 'eu', old server",
        ask_for=mailboxes(),
    )
    assert served_stale(hung), "the old server's cached mailbox was not served stale"
    opened_once(before, chaos.log("eu"), "oldserver:eu")

    # a killed Redis: nothing is lost at all
    before = chaos.log("eu")
    phase(chaos, chaos.redis.kill, chaos.redis.start, set(), None, mailboxes())
    opened_once(before, chaos.log("eu"), "redis:eu")

    # a killed node: the entry node fails over to the site's other node, and stops trying it
    victim = serving_node(chaos, "us")
    before = chaos.log("eu")
    phase(chaos, victim.kill, lambda: None, set(), None, mailboxes())
    opened_once(before, chaos.log("eu"), f"peer:{victim.url}")
