"""A second EWS client: ews-javascript-api (npm, run with node) against a real node over
verified HTTPS, next to exchangelib on the same requests.

Both clients ask for the same mailboxes, window, interval and view; both must see the same
merged strings and the same events (UTC instants, busy types, subjects), and those are the
hand-written expectations of `test_ews_exchangelib`. ews-javascript-api asks for meeting
suggestions by default: the free/busy part must survive that, with the suggestions part an
error. Autodiscover goes through the same client, at the node's SOAP endpoint (never a DNS
guess, so nothing leaves loopback).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_autodiscover import CLIENT as AUTODISCOVER_CLIENT
from tests.integration.test_autodiscover import (
    cluster as cluster,  # the SRV-published node of test_autodiscover
)
from tests.integration.test_ews_exchangelib import (
    ALICE_EXPECTED,
    CLIENT,
    DAVE_EXPECTED,
    UTC,
    Node,
    free_busy,
    monkeypatch_module,  # noqa: F401  (a fixture the node fixture uses)
    oracle_merged,
    overlapping,
    to_utc,
)
from tests.integration.test_ews_exchangelib import (
    node as node,  # the module's node fixture, shared with exchangelib's tests
)

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "ews_client.js"
RUN_TIMEOUT = 60

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "ews-javascript-api").is_dir(),
    reason="node or tests/js/node_modules missing: run scripts/setup",
)


def run_js(request: dict, ca_pem: Path) -> dict:
    env = {**os.environ, "TZ": "UTC", "NODE_EXTRA_CA_CERTS": str(ca_pem)}
    done = subprocess.run(
        ["node", str(SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        env=env,
        timeout=RUN_TIMEOUT,
    )
    answer = json.loads(done.stdout or "{}")
    assert done.returncode == 0 and "error" not in answer, (done.stdout, done.stderr[-2000:])
    return answer


def js_availability(
    node: Node, addresses: list[str], start: dt.datetime, end: dt.datetime, interval: int,
    view: str, *, suggestions: bool,
) -> dict:  # fmt: skip
    return run_js(
        {
            "operation": "availability",
            "url": node.url + "/EWS/Exchange.asmx",
            "username": CLIENT[0],
            "password": CLIENT[1],
            "attendees": addresses,
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": end.isoformat().replace("+00:00", "Z"),
            "interval": interval,
            "view": view,
            "suggestions": suggestions,
        },
        node.ca_pem,
    )


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def js_events(answer: dict) -> list[tuple[dt.datetime, dt.datetime, str, str | None]]:
    return [
        (instant(e["start"]), instant(e["end"]), e["busyType"], e["subject"])
        for e in answer["events"]
    ]


def exchangelib_events(view) -> list[tuple[dt.datetime, dt.datetime, str, str | None]]:
    return [
        (to_utc(e.start), to_utc(e.end), e.busy_type, e.details.subject if e.details else None)
        for e in (view.calendar_events or [])
    ]


# The EWS Managed API family sends whole days from midnight in its own zone (TZ=UTC here), so
# both clients ask from midnight UTC: a working week, and the week of the 2024 spring DST
# change in Berlin (dave's daily series).
WINDOWS = [
    (dt.datetime(2024, 3, 4, tzinfo=UTC), dt.timedelta(days=4)),
    (dt.datetime(2024, 3, 28, tzinfo=UTC), dt.timedelta(days=7)),
]


@pytest.mark.parametrize("view", ["DetailedMerged", "FreeBusyMerged", "MergedOnly"])
@pytest.mark.parametrize("suggestions", [False, True], ids=["free-busy", "with-suggestions"])
@pytest.mark.parametrize("window", WINDOWS, ids=["week", "dst-week"])
def test_both_clients_see_the_same_answer(
    node: Node, view: str, suggestions: bool, window: tuple[dt.datetime, dt.timedelta]
) -> None:
    start, length = window
    end = start + length
    addresses = [node.alice, node.dave]
    js = js_availability(node, addresses, start, end, 30, view, suggestions=suggestions)
    py = free_busy(node, addresses, "UTC", start, end, 30, view)
    assert len(js["attendees"]) == len(py) == 2
    for expected, js_answer, py_answer in zip((ALICE_EXPECTED, DAVE_EXPECTED), js["attendees"], py):
        assert js_answer["result"] == "Success"
        assert js_answer["viewType"] == py_answer.view_type == view
        assert js_answer["merged"] == py_answer.merged == oracle_merged(expected, start, end, 30)
        events = js_events(js_answer)
        assert events == exchangelib_events(py_answer)
        if view != "MergedOnly":
            assert [(s, e, b) for s, e, b, _ in events] == [
                (x.start, x.end, x.busy) for x in overlapping(expected, start, end)
            ]
    if suggestions:
        assert js["suggestions"] == {
            "result": "Error",
            "errorCode": "ErrorMeetingSuggestionGenerationFailed",
        }
    else:
        assert js["suggestions"] is None


def test_an_unknown_mailbox_is_an_error_for_that_mailbox_only(node: Node) -> None:
    start = dt.datetime(2024, 3, 4, tzinfo=UTC)
    end = start + dt.timedelta(days=1)
    js = js_availability(
        node, [node.alice, "nobody@contoso.test", node.broken], start, end, 60, "FreeBusyMerged",
        suggestions=True,
    )  # fmt: skip
    alice, nobody, broken = js["attendees"]
    assert alice["result"] == "Success" and alice["merged"] == oracle_merged(
        ALICE_EXPECTED, start, end, 60
    )
    assert (nobody["result"], nobody["errorCode"]) == ("Error", "ErrorMailRecipientNotFound")
    assert (broken["result"], broken["errorCode"]) == ("Error", "ErrorFreeBusyGenerationFailed")


def test_autodiscover_through_the_second_client(cluster) -> None:
    """GetUserSettings at the node's SOAP endpoint, in the cluster whose site's nodes come from
    DNS SRV (test_autodiscover's): the EWS URL is that node's, as exchangelib finds it there."""
    server, tls, _ = cluster
    answer = run_js(
        {
            "operation": "autodiscover",
            "url": server.url + "/autodiscover/autodiscover.svc",
            "username": AUTODISCOVER_CLIENT[0],
            "password": AUTODISCOVER_CLIENT[1],
            "email": "alice@contoso.test",
        },
        tls.ca_pem,
    )
    assert answer["errorCode"] == "NoError", answer
    assert set(answer["settings"].values()) == {server.url + "/EWS/Exchange.asmx"}, answer
