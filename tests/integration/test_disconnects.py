"""A client that goes away costs the node a debug line, at every door: never an ERROR, a
traceback or an abandoned task in its log.

A real `cas serve` process over TLS. Each door gets an upload cut short (the headers promise
more body than is sent, then the connection closes), and an EWS lookup is abandoned while the
node is still reading a slow backend (a fault proxy delays the CalDAV server).
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import Cluster, start_cluster
from tests.support.node import make_test_ca
from tests.unit.test_ews_endpoint import availability

WAIT = 20.0  # bound on waiting for the node to have handled a request
BACKEND_DELAY = 1.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root: Path = tmp_path_factory.mktemp("disconnects")
    ca = make_test_ca(root / "tls")
    cluster = start_cluster(root, ca, {"eu": ["a"]}, nodes_per_site=1, caldav_proxy=True)
    try:
        yield cluster
    finally:
        cluster.stop()


def node_log(cluster: Cluster) -> str:
    return cluster.sites["eu"][0].log.read_text(errors="replace")


def answered(cluster: Cluster, endpoint: str, status: str = "") -> float:
    """How many answers the node counted for a door (with that status, if given)."""
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=10) as client:
        text = client.get(cluster.sites["eu"][0].direct_url + "/metrics").text
    prefix = f'cas_requests_total{{endpoint="{endpoint}",status="{status}'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT} s"
        time.sleep(0.05)


def send_and_leave(cluster: Cluster, head: bytes, body: bytes) -> None:
    context = ssl.create_default_context(cafile=str(cluster.ca.ca_pem))
    port = cluster.sites["eu"][0].port
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(head + body)
            time.sleep(0.2)  # the node reads what was sent, then the client is gone


def basic(cluster: Cluster) -> bytes:
    user, password = cluster.client
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


XML = ("text/xml", b"<?xml version='1.0'?><s:Envelope")
JSON = ("application/json", b'{"mailboxes": [{"address": "eu-a@contoso.test"')
DOORS = [
    ("ews", "POST", "/EWS/Exchange.asmx", "basic", XML),
    ("autodiscover", "POST", "/autodiscover/autodiscover.svc", "basic", XML),
    ("autodiscover", "POST", "/autodiscover/autodiscover.xml", "basic", XML),
    ("json", "POST", "/api/v1/availability", "basic", JSON),
    ("json", "POST", "/api/v1/availability", "basic", XML),  # the wrong type, cut short too
    ("admin", "POST", "/api/v1/cache/invalidate", "bearer", JSON),
]


@pytest.mark.parametrize(("endpoint", "method", "path", "auth", "upload"), DOORS)
def test_an_upload_cut_short_costs_no_error(
    cluster: Cluster, endpoint: str, method: str, path: str, auth: str, upload: tuple[str, bytes]
) -> None:
    before, count = node_log(cluster), answered(cluster, endpoint, "400")
    credentials = basic(cluster) if auth == "basic" else b"Bearer " + cluster.admin_token.encode()
    content_type, partial = upload
    head = (
        (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Content-Length: 5000\r\n"
        ).encode()
        + b"Authorization: "
        + credentials
        + b"\r\n\r\n"
    )
    send_and_leave(cluster, head, partial)
    # the client-gone answer (400) that nobody reads
    wait_for(lambda: answered(cluster, endpoint, "400") > count, f"the node handled {path}")
    new = node_log(cluster)[len(before) :]
    assert " ERROR " not in new and "Traceback" not in new, new


def test_a_lookup_abandoned_while_the_backend_is_slow_costs_no_error(cluster: Cluster) -> None:
    cluster.caldav_proxies["eu"].delay(BACKEND_DELAY)
    try:
        before, count = node_log(cluster), answered(cluster, "ews")
        body = availability(["eu-a@contoso.test"])
        head = (
            (
                "POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            ).encode()
            + b"Authorization: "
            + basic(cluster)
            + b"\r\n\r\n"
        )
        send_and_leave(cluster, head, body)
        wait_for(lambda: answered(cluster, "ews") > count, "the node finished the lookup")
    finally:
        cluster.caldav_proxies["eu"].pass_through()
    new = node_log(cluster)[len(before) :]
    assert " ERROR " not in new and "Traceback" not in new, new
    assert "GetUserAvailability" in new  # the lookup was done, and its answer dropped quietly
