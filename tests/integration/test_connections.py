"""Bounded client connections on a real `cas serve` process over TLS.

Connections that never send a request (TLS handshake done, or never started), a request whose
headers trickle in, and a kept-alive connection left idle are all closed by the node; past
`max_connections`, a new connection's request is answered 503 and closed. Each wait below is a
bound on waiting for the close, far above the node's timeouts, never a measure of speed.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import Cluster, start_cluster
from tests.support.node import make_test_ca

IDLE, HEADERS, KEEPALIVE = 1.0, 1.0, 1.0
MAX_CONNECTIONS = 6
WAIT = 20.0  # bound on waiting for the node to close a connection


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root: Path = tmp_path_factory.mktemp("connections")
    ca = make_test_ca(root / "tls")
    cluster = start_cluster(
        root, ca, {"eu": ["a"]}, nodes_per_site=1,
        settings={"http_idle_timeout_seconds": IDLE, "http_header_timeout_seconds": HEADERS,
                  "http_keepalive_seconds": KEEPALIVE, "max_connections": MAX_CONNECTIONS},
    )  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.stop()


def port(cluster: Cluster) -> int:
    return cluster.sites["eu"][0].port


def tls_connection(cluster: Cluster) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cluster.ca.ca_pem))
    raw = socket.create_connection(("127.0.0.1", port(cluster)), timeout=WAIT)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_node(sock: socket.socket) -> bool:
    """Read until the node closes the connection (EOF or reset), within WAIT seconds."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def dropped(cluster: Cluster, reason: str) -> float:
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=10) as client:
        text = client.get(cluster.sites["eu"][0].direct_url + "/metrics").text
    prefix = f'cas_connections_dropped_total{{reason="{reason}"}} '
    return next(
        (float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0
    )


def test_connections_that_never_send_a_request_are_closed(cluster: Cluster) -> None:
    before = dropped(cluster, "idle")
    after_handshake = [tls_connection(cluster) for _ in range(3)]
    no_handshake = socket.create_connection(("127.0.0.1", port(cluster)), timeout=WAIT)
    try:
        assert all(closed_by_node(s) for s in after_handshake)
        assert closed_by_node(no_handshake)
    finally:
        for sock in [*after_handshake, no_handshake]:
            sock.close()
    assert dropped(cluster, "idle") >= before + 3


def test_headers_that_trickle_in_get_the_connection_closed(cluster: Cluster) -> None:
    before = dropped(cluster, "headers")
    sock = tls_connection(cluster)
    try:
        sock.sendall(b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert closed_by_node(sock)
    finally:
        sock.close()
    assert dropped(cluster, "headers") == before + 1


def test_an_idle_kept_alive_connection_is_closed_after_an_answer(cluster: Cluster) -> None:
    sock = tls_connection(cluster)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(WAIT)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        assert closed_by_node(sock)
    finally:
        sock.close()


def test_past_max_connections_a_request_gets_503_and_the_connection_closes(
    cluster: Cluster,
) -> None:
    held = [tls_connection(cluster) for _ in range(MAX_CONNECTIONS)]
    extra = tls_connection(cluster)
    try:
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        extra.settimeout(WAIT)
        answer = b""
        while chunk := extra.recv(4096):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert b"connection: close" in head.lower() and b"retry-after: 1" in head.lower()
        assert b"Too many connections" in body
    finally:
        for sock in [*held, extra]:
            sock.close()
    assert dropped(cluster, "too-many") >= 1
