"""The forwarder's retry, back-off, failover and deadline rules, against scripted peers.

Peers are httpx mock transports that answer with the real server codec, so what is scripted is
only *how* each node behaves (503, busy, refusal, garbage, silence), call by call.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from cas.breaker_board import BreakerBoard, BreakerPolicy
from cas.codecs import ews
from cas.errors import MailboxError, RequestFault
from cas.model.ask import Ask
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import BusyType, Event, MailboxData, Window
from cas.model.projection import Requester
from cas.observability import Metrics
from cas.sources.peers import Forwarder
from cas.trust import PeerTrust
from sitemap.discovery import SiteNodes, SrvResolver
from sitemap.model import Mailbox, Site, Sitemap

UTC = UTC
SECRET = b"s" * 40
T0 = datetime(2024, 3, 4, 8, tzinfo=UTC)
NODES = ("https://127.0.0.1:1001", "https://127.0.0.1:1002")
SITEMAP = Sitemap(
    source="test",
    sites=(Site("eu"), Site("us", nodes=NODES)),
    mailboxes=tuple(
        Mailbox(f"u{i}@contoso.test", "us", legacy_dn=f"/o=C/cn=u{i}") for i in range(6)
    ),
)
REQUEST = AvailabilityRequest(
    mailboxes=tuple(MailboxQuery(m.address) for m in SITEMAP.mailboxes),
    window=Window(T0, T0 + timedelta(hours=4)),
    interval_minutes=60,
    view=FreeBusyView.MERGED_ONLY,
    tz=UTC,
)
BUSY = MailboxData(events=(Event(T0 + timedelta(hours=1), T0 + timedelta(hours=2), BusyType.BUSY),))
FAULT_BUSY = RequestFault("The server is busy.")
FAULT_BUSY.code = "ErrorServerBusy"


def answer(request: httpx.Request) -> httpx.Response:
    """What a healthy node says: every asked mailbox busy 09-10."""
    trust = PeerTrust(SECRET, "us")
    trust.verify(
        request.headers["X-CAS-Forwarded"],
        method="POST",
        path=request.url.path,
        body=request.content,
    )
    parsed = ews.parse_get_user_availability(ews.parse_envelope(request.content))
    return httpx.Response(
        200, content=ews.render_get_user_availability(parsed, [BUSY] * len(parsed.mailboxes))
    )


def forwarder(script, *, attempts: int = 3) -> tuple[Forwarder, Metrics, list[str]]:
    calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        calls.append(origin)
        return await script(origin, len([c for c in calls if c == origin]), request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    metrics = Metrics()
    nodes = SiteNodes(SITEMAP, SrvResolver(None), local_site="eu")
    return (
        Forwarder("eu", nodes, client, [SECRET], metrics=metrics, attempts=attempts),
        metrics,
        calls,
    )


async def run(fw: Forwarder, seconds: float = 5.0) -> dict[int, object]:
    """The answers for every mailbox of site us, by its position in `SITEMAP.mailboxes`."""
    ask = Ask.of(REQUEST, Requester("scheduler"), timeout_seconds=seconds, request_id="rid")
    answers = await fw.ask_site("us", SITEMAP.mailboxes, ask)
    assert set(answers) == {m.address for m in SITEMAP.mailboxes}, "every mailbox, once"
    return {i: answers[m.address] for i, m in enumerate(SITEMAP.mailboxes)}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_healthy_peers_answer_every_mailbox_in_one_call_per_node() -> None:
    async def script(origin, n, request):
        return answer(request)

    fw, metrics, calls = forwarder(script)
    results = await run(fw)
    assert sorted(results) == list(range(6))
    assert {r.merged if isinstance(r, MailboxData) else r for r in results.values()} == {"0200"}
    assert sorted(calls) == sorted(set(calls))  # at most one call per node
    assert value(metrics, "cas_forward_retries_total", site="us") == 0


async def test_503_is_retried_on_the_same_node() -> None:
    async def script(origin, n, request):
        return httpx.Response(503) if n == 1 else answer(request)

    fw, metrics, calls = forwarder(script)
    results = await run(fw)
    assert len(results) == 6 and all(isinstance(r, MailboxData) for r in results.values())
    assert value(metrics, "cas_forward_retries_total", site="us") >= 1
    assert value(metrics, "cas_forward_failovers_total", site="us") == 0


async def test_server_busy_back_off_is_honoured() -> None:
    async def script(origin, n, request):
        if n == 1:
            body = ews.render_fault(FAULT_BUSY).replace(
                b"</detail>",
                b'<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
                b'<t:Value Name="BackOffMilliseconds">300</t:Value></t:MessageXml></detail>',
            )
            return httpx.Response(500, content=body)
        return answer(request)

    fw, _, _ = forwarder(script)
    started = time.monotonic()
    results = await run(fw)
    assert time.monotonic() - started >= 0.3
    assert len(results) == 6 and all(isinstance(r, MailboxData) for r in results.values())


async def test_a_node_that_keeps_failing_loses_its_mailboxes_to_the_other() -> None:
    async def script(origin, n, request):
        if origin == NODES[0]:
            raise httpx.ConnectError("refused")
        return answer(request)

    fw, metrics, calls = forwarder(script)
    results = await run(fw)
    assert len(results) == 6 and all(isinstance(r, MailboxData) for r in results.values())
    assert calls.count(NODES[0]) == 3  # the configured attempts, then failover
    assert value(metrics, "cas_forward_failovers_total", site="us") == 1


async def test_a_refusal_is_final_and_named() -> None:
    async def script(origin, n, request):
        return httpx.Response(403, text="bad signature")

    fw, _, calls = forwarder(script)
    results = await run(fw)
    errors = list(results.values())
    assert all(
        isinstance(e, MailboxError) and e.code == "ErrorProxyRequestProcessingFailed"
        for e in errors
    )
    assert "cluster secret" in errors[0].message and errors[0].site == "us"
    assert len(calls) <= 2  # one per node, no retries


async def test_silent_nodes_give_up_at_the_deadline() -> None:
    async def script(origin, n, request):
        await asyncio.sleep(30)
        return answer(request)

    fw, _, _ = forwarder(script)
    started = time.monotonic()
    results = await run(fw, seconds=0.6)
    assert time.monotonic() - started < 1.5
    assert all(isinstance(r, MailboxError) and "'us'" in r.message for r in results.values())


# --- breakers and budgets ---------------------------------------------------------------------


def with_board(fw: Forwarder, failures: int = 1) -> BreakerBoard:
    fw.breakers = BreakerBoard(BreakerPolicy(failures=failures, open_seconds=60.0))
    return fw.breakers


async def test_a_node_whose_breaker_is_open_is_skipped_for_the_next_in_replica_order() -> None:
    async def script(origin, n, request):
        if origin == NODES[0]:
            raise httpx.ConnectError("refused")
        return answer(request)

    fw, metrics, calls = forwarder(script)
    board = with_board(fw)
    await run(fw)
    assert board.breaker("peer", NODES[0], "").state == "open"
    calls.clear()
    failovers = value(metrics, "cas_forward_failovers_total", site="us")
    results = await run(fw)
    assert all(isinstance(r, MailboxData) for r in results.values())
    assert calls == [NODES[1]]  # straight to the next node: no retries, no failover round
    assert value(metrics, "cas_forward_failovers_total", site="us") == failovers


async def test_a_site_whose_every_node_is_open_fails_at_once_and_says_so() -> None:
    async def script(origin, n, request):
        raise httpx.ConnectError("refused")

    fw, _, calls = forwarder(script)
    with_board(fw)
    await run(fw)
    calls.clear()
    results = await run(fw)
    assert calls == []
    for error in results.values():
        assert isinstance(error, MailboxError) and error.code == "ErrorProxyRequestProcessingFailed"
        assert error.site == "us"
        assert "Site 'us': not asked: every node is failing (breakers open for" in error.message


async def test_a_partial_answer_sent_at_the_peers_deadline_still_arrives_in_time() -> None:
    """The peer spends its whole budget (its own sources late) and then answers; the answer
    must arrive before this node gives up, so its healthy mailboxes are not lost."""
    budgets: list[float] = []

    async def script(origin, n, request):
        budget = int(request.headers["X-CAS-Budget-Ms"]) / 1000
        budgets.append(budget)
        await asyncio.sleep(budget + 0.1)  # its deadline, then its grace, writing, sending
        return answer(request)

    fw, _, _ = forwarder(script)
    results = await run(fw, seconds=2.0)
    assert all(isinstance(r, MailboxData) for r in results.values()), results
    assert budgets and all(b <= 2.0 - 0.3 for b in budgets)


async def test_a_cancelled_call_frees_the_probe_of_a_half_open_node() -> None:
    release = asyncio.Event()

    async def script(origin, n, request):
        await release.wait()
        return answer(request)

    fw, _, _ = forwarder(script)
    board = with_board(fw)
    breaker = board.breaker("peer", NODES[0], "")
    breaker.reset_seconds = breaker.max_reset_seconds = 0.0  # half-open at once after opening
    breaker.allow()
    breaker.record_failure("down")
    task = asyncio.create_task(run(fw))
    await asyncio.sleep(0.05)
    assert not breaker.available  # the probe is in flight
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert breaker.state == "half-open" and breaker.available
