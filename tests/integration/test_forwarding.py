"""Cross-site forwarding between real node processes over TLS, with faults between them.

Three sites of two `cas serve` processes each, every site with its own Radicale; each node is
reached through a fault proxy. Each mailbox has one busy hour at a distinct time, written with
a CalDAV client, so every answer identifies exactly one mailbox.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from cas.trust import ForwardClaims, sign_request
from tests.support.cluster import Cluster, start_cluster
from tests.support.ews_schema import validate_ews_body
from tests.support.node import ThreadedServer, make_test_ca
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
SITES = {"eu": ["a", "b", "c"], "us": ["a", "b", "c"], "ap": ["a", "b", "c"]}
OFFSET = {"eu": 0, "us": 3, "ap": 6}
START, END = "2024-03-04T08:00:00Z", "2024-03-04T20:00:00Z"  # 12 hourly slots
TIMEOUT = 3.0  # request_timeout_seconds of every node
# An answer that honours the deadline comes TIMEOUT plus a little after the request; one that
# does not waits for the client's own timeout (30 s). The bound sits far from both.
DEADLINE_BOUND = 3 * TIMEOUT
ROUNDS = 8  # lookups in the node-killed test (the node dies before the fourth)
LOOP_SECONDS = 120.0  # a safety cap on those rounds, not an expectation


def busy_hour(site: str, local: str) -> int:
    return OFFSET[site] + "abc".index(local)


def expected_merged(address: str) -> str:
    site, local = address.split("@")[0].split("-")
    hour = busy_hour(site, local)
    return "".join("2" if i == hour else "0" for i in range(12))


def all_addresses() -> list[str]:
    return [f"{s}-{m}@contoso.test" for s, ms in SITES.items() for m in ms]


class Garbage:
    """A peer that answers nonsense, or a body far over any sane size."""

    mode = "garbage"

    async def __call__(self, request):  # type: ignore[no-untyped-def]
        if self.mode == "huge":
            return Response(b"<" + b"x" * (40 * 1024 * 1024), media_type="text/xml")
        return Response(b"this is not SOAP", media_type="text/xml")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    ca = make_test_ca(root / "tls")
    garbage = Garbage()
    app = Starlette(routes=[Route("/EWS/Exchange.asmx", garbage, methods=["POST"])])
    with ThreadedServer(app, ca) as bad_node:
        cluster = start_cluster(
            root, ca, SITES,
            # remote_cache_seconds 0: every request really crosses to the other sites
            settings={"request_timeout_seconds": TIMEOUT, "max_peer_response_bytes": 1_000_000,
                      "remote_cache_seconds": 0},
            extra_sites=[{"name": "zz", "nodes": [bad_node.url], "x-mailboxes": ["g"]}],
        )  # fmt: skip
        try:
            for site, locals_ in SITES.items():
                for local in locals_:
                    hour = 8 + busy_hour(site, local)
                    cluster.write_events(
                        f"{site}-{local}@contoso.test",
                        [
                            f"""
BEGIN:VEVENT
UID:{uuid.uuid4()}
DTSTAMP:20240101T000000Z
DTSTART:20240304T{hour:02d}0000Z
DTEND:20240304T{hour + 1:02d}0000Z
SUMMARY:{site}-{local}
END:VEVENT"""
                        ],
                    )
            cluster.garbage = garbage  # type: ignore[attr-defined]
            yield cluster
        finally:
            cluster.stop()


def ask(
    cluster: Cluster, addresses: list[str], *, node=None, timeout: float = 30
) -> tuple[httpx.Response, list]:
    node = node or cluster.sites["eu"][0]
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=timeout) as client:
        r = client.post(
            node.direct_url + "/EWS/Exchange.asmx",
            content=availability(addresses, start=START, end=END, interval="60"),
            auth=cluster.client,
        )
    assert r.status_code == 200, r.text
    validate_ews_body(r.content)
    rows = []
    for item in etree.fromstring(r.content).iter(f"{M}FreeBusyResponse"):
        rows.append(
            (
                item.findtext(f"{M}ResponseMessage/{M}ResponseCode"),
                item.findtext(f".//{T}MergedFreeBusy"),
                item.findtext(f"{M}ResponseMessage/{M}MessageText") or "",
            )
        )
    return r, rows


def test_one_request_to_any_node_answers_every_site_in_order(cluster: Cluster) -> None:
    addresses = all_addresses()[::-1] + ["nobody@contoso.test"]
    for node in (cluster.sites["eu"][1], cluster.sites["ap"][0]):
        response, rows = ask(cluster, addresses, node=node)
        assert [r[0] for r in rows] == ["NoError"] * 9 + ["ErrorMailRecipientNotFound"]
        assert [r[1] for r in rows[:9]] == [expected_merged(a) for a in addresses[:9]]
        assert response.headers["x-request-id"]


def test_a_node_killed_mid_run_costs_no_mailbox(cluster: Cluster) -> None:
    victim = cluster.sites["us"][0]
    failovers = metric(cluster, 'cas_forward_failovers_total{site="us"}')
    failures, rounds, errors = 0, 0, []
    stop_at = time.monotonic() + LOOP_SECONDS
    try:
        while rounds < ROUNDS and time.monotonic() < stop_at:
            if rounds == 3:
                victim.kill()
            _, rows = ask(cluster, all_addresses())
            bad = [r for r in rows if r[0] != "NoError"]
            failures += len(bad)
            errors += bad
            assert [r[1] for r in rows] == [expected_merged(a) for a in all_addresses()] or bad
            rounds += 1
    finally:
        if not victim.running:  # killed above: bring it back for the tests that follow
            victim.start()
            cluster.wait_ready([victim])
    assert rounds == ROUNDS, f"only {rounds} of {ROUNDS} rounds in {LOOP_SECONDS} s"
    assert failures == 0, errors
    assert metric(cluster, 'cas_forward_failovers_total{site="us"}') > failovers


def test_a_whole_site_cut_away_costs_only_its_mailboxes_within_the_deadline(
    cluster: Cluster,
) -> None:
    errors_metric = 'cas_forward_errors_total{code="ErrorProxyRequestProcessingFailed",site="ap"}'
    errors_before = metric(cluster, errors_metric)
    for mode in ("cut", "reset", "blackhole"):
        for node in cluster.sites["ap"]:
            getattr(node.proxy, mode)()
        try:
            started = time.monotonic()
            _, rows = ask(cluster, all_addresses())
            elapsed = time.monotonic() - started
        finally:
            for node in cluster.sites["ap"]:
                node.proxy.pass_through()
        assert elapsed < DEADLINE_BOUND, (mode, elapsed)
        for address, (code, merged, text) in zip(all_addresses(), rows):
            if address.startswith("ap-"):
                assert code == "ErrorProxyRequestProcessingFailed", (mode, text)
                assert "(site: ap)" in text and "127.0.0.1" not in text, (mode, text)
                assert merged is None  # never reported as free
            else:
                assert (code, merged) == ("NoError", expected_merged(address)), mode
    assert metric(cluster, errors_metric) >= errors_before + 9  # 3 modes x 3 mailboxes


def test_slow_site_is_still_answered(cluster: Cluster) -> None:
    for node in cluster.sites["us"]:
        node.proxy.delay(0.4)
    try:
        _, rows = ask(cluster, all_addresses())
    finally:
        for node in cluster.sites["us"]:
            node.proxy.pass_through()
    assert [r[1] for r in rows] == [expected_merged(a) for a in all_addresses()]


@pytest.mark.parametrize("mode", ["garbage", "huge"])
def test_a_peer_answering_garbage_costs_only_its_mailbox_and_is_named(
    cluster: Cluster, mode: str
) -> None:
    cluster.garbage.mode = mode  # type: ignore[attr-defined]
    started = time.monotonic()
    response, rows = ask(cluster, ["zz-g@contoso.test", "us-a@contoso.test"])
    assert time.monotonic() - started < DEADLINE_BOUND
    code, merged, text = rows[0]
    assert code == "ErrorProxyRequestProcessingFailed" and merged is None
    rid = response.headers["x-request-id"]
    assert text.endswith(f"(request {rid}) (site: zz)") and "127.0.0.1" not in text
    # what the client is not told, the entry node logs under the request id
    entry_log = cluster.sites["eu"][0].log
    deadline = time.monotonic() + 5
    while not any(
        f"rid={rid}" in line and "site zz answered" in line and "node https://127.0.0.1:" in line
        for line in entry_log.read_text(errors="replace").splitlines()
    ):
        assert time.monotonic() < deadline, "the entry node did not log the peer's failure"
        time.sleep(0.05)
    assert rows[1][:2] == ("NoError", expected_merged("us-a@contoso.test"))


# --- trust: forged, replayed, altered and looping requests -----------------------------------


def signed(
    cluster: Cluster,
    body: bytes,
    *,
    to: str = "us",
    hop: int = 1,
    key: str | None = None,
    requester: str | None = "scheduler",
) -> str:
    claims = ForwardClaims(
        from_site="eu",
        to_site=to,
        requester=requester,
        hop=hop,
        request_id="testrid000000001",
        issued_at=int(time.time()),
        nonce=uuid.uuid4().hex,
    )
    return sign_request(
        (key or cluster.secret).encode(),
        claims,
        method="POST",
        path="/EWS/Exchange.asmx",
        body=body,
    )


def post_to_us(cluster: Cluster, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=10) as client:
        return client.post(
            cluster.sites["us"][0].direct_url + "/EWS/Exchange.asmx", content=body, headers=headers
        )


def other_site_connections(cluster: Cluster) -> int:
    return sum(n.proxy.connections for s in ("eu", "ap") for n in cluster.sites[s])


def test_forged_requests_are_refused_and_nothing_is_forwarded(cluster: Cluster) -> None:
    body = availability(
        ["us-a@contoso.test", "eu-a@contoso.test"], start=START, end=END, interval="60"
    )
    before = other_site_connections(cluster)
    assert post_to_us(cluster, body, {}).status_code == 401
    wrong_key = signed(cluster, body, key="x" * 40)
    assert post_to_us(cluster, body, {"X-CAS-Forwarded": wrong_key}).status_code == 403
    assert post_to_us(cluster, body, {"X-CAS-Forwarded": "v1;garbage"}).status_code == 401
    good = signed(cluster, body)
    altered_body = body.replace(b"us-a@", b"us-b@")
    assert post_to_us(cluster, altered_body, {"X-CAS-Forwarded": good}).status_code == 403
    altered_identity = good.replace("req=", "req=YWRtaW4")
    assert post_to_us(cluster, body, {"X-CAS-Forwarded": altered_identity}).status_code in (
        401,
        403,
    )
    misaddressed = signed(cluster, body, to="ap")
    assert post_to_us(cluster, body, {"X-CAS-Forwarded": misaddressed}).status_code == 403
    first = post_to_us(cluster, body, {"X-CAS-Forwarded": good})
    assert first.status_code == 200
    assert first.headers["x-request-id"] == "testrid000000001"  # the entry node's id is kept
    replayed = post_to_us(cluster, body, {"X-CAS-Forwarded": good})
    assert replayed.status_code == 403
    assert other_site_connections(cluster) == before


def test_a_forwarded_request_is_answered_only_for_the_receiving_site(cluster: Cluster) -> None:
    body = availability(
        ["us-a@contoso.test", "eu-a@contoso.test"], start=START, end=END, interval="60"
    )
    before = other_site_connections(cluster)
    r = post_to_us(cluster, body, {"X-CAS-Forwarded": signed(cluster, body)})
    assert r.status_code == 200
    tree = etree.fromstring(r.content)
    codes = [c.text for c in tree.iter(f"{M}ResponseCode")]
    assert codes == ["NoError", "ErrorProxyRequestProcessingFailed"]
    assert "hop limit" in etree.tostring(tree).decode()
    assert other_site_connections(cluster) == before


def metric(cluster: Cluster, name: str) -> float:
    """A counter's value on the entry node (0 when not yet exported)."""
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False) as client:
        text = client.get(cluster.sites["eu"][0].direct_url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_request_id_reaches_the_peers_logs(cluster: Cluster) -> None:
    response, _ = ask(cluster, ["us-a@contoso.test", "us-b@contoso.test", "us-c@contoso.test"])
    rid = response.headers["x-request-id"]
    deadline = time.monotonic() + 30  # the peers' log lines are written after they answer
    while time.monotonic() < deadline:
        logs = "".join(n.log.read_text(errors="replace") for n in cluster.sites["us"])
        if f"rid={rid}" in logs:
            break
        time.sleep(0.1)
    assert f"rid={rid}" in logs
