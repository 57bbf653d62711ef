"""The fault proxy, observed from a plain socket client talking to an echo server through it."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
import trustme

from caslab.faultproxy import FaultProxy, Mode


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn = self.request
        if self.server.tls is not None:  # type: ignore[attr-defined]
            conn = self.server.tls.wrap_socket(conn, server_side=True)  # type: ignore[attr-defined]
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.tls = tls
        self.thread = threading.Thread(target=self.serve_forever, name="echo", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as running:
        yield running


def connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def round_trip(sock: socket.socket, data: bytes = b"ping") -> tuple[bytes, float]:
    start = time.perf_counter()
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received, time.perf_counter() - start


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the peer closed or reset the connection (within the socket's timeout)."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_pass_through_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello" * 50_000)[0] == b"hello" * 50_000
        assert proxy.open_connections == 1
    assert proxy.connections == 1 and proxy.mode is Mode.PASS
    assert proxy.url_for("https") == f"https://127.0.0.1:{proxy.port}"


def test_half_close_is_forwarded(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(100):
            received += chunk
    assert received == b"last words"


DELAY = 0.5


def test_delay_slows_new_and_open_connections(proxy: FaultProxy) -> None:
    with connect(proxy, timeout=10) as before:
        round_trip(before)
        proxy.delay(DELAY)
        with connect(proxy, timeout=10) as after:
            for sock in (before, after):
                data, elapsed = round_trip(sock)
                # the round trip carries the delay once (half each way), not once per direction
                assert data == b"ping" and DELAY <= elapsed < 2 * DELAY
        proxy.pass_through()
        assert round_trip(before)[1] < DELAY  # the same connection is no longer delayed


def test_cut_closes_open_connections_and_new_ones_at_once(proxy: FaultProxy) -> None:
    with connect(proxy) as open_before:
        round_trip(open_before)
        proxy.cut()
        assert closed_by_peer(open_before)  # closed, not left to run into the socket timeout
        with connect(proxy) as new:
            assert closed_by_peer(new)
    proxy.pass_through()
    with connect(proxy) as sock:
        assert round_trip(sock)[0] == b"ping"


def test_reset_sends_rst_to_new_and_open_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as open_before:
        round_trip(open_before)
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            open_before.recv(1)
    with pytest.raises(ConnectionResetError):  # the RST may already beat connect() back
        with connect(proxy) as new:
            new.recv(1)


def test_blackhole_never_answers(proxy: FaultProxy) -> None:
    with connect(proxy) as open_before:
        round_trip(open_before)
        proxy.blackhole()
        with connect(proxy, timeout=0.3) as new:
            for sock in (open_before, new):
                sock.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    round_trip(sock)
        proxy.pass_through()
        open_before.settimeout(2)
        assert round_trip(open_before)[0] == b"ping"  # the same connection answers again


def test_idle_connections_are_closed(echo: EchoServer) -> None:
    with FaultProxy("127.0.0.1", echo.port, idle_timeout=0.2) as proxy, connect(proxy) as sock:
        round_trip(sock)
        assert sock.recv(1) == b""  # closed by the proxy, well before the socket's 2 s timeout
        deadline = time.monotonic() + 1
        while proxy.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.open_connections == 0


def test_unreachable_target_looks_like_a_refusal() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead_port = spare.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy, pytest.raises(ConnectionResetError):
        with connect(proxy) as sock:
            sock.recv(1)


def test_tls_passes_through_and_verifies_the_target() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("node.example").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = EchoServer(tls=server_context)
    try:
        with FaultProxy("127.0.0.1", server.port) as proxy:
            proxy.delay(0.05)
            with client_context.wrap_socket(connect(proxy), server_hostname="node.example") as tls:
                data, elapsed = round_trip(tls)
                assert data == b"ping" and elapsed >= 0.05
    finally:
        server.close()


def test_stop_closes_everything_and_leaves_no_threads(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port)
    with pytest.raises(RuntimeError):
        proxy.port
    proxy.start()
    sock = connect(proxy)
    round_trip(sock)
    proxy.stop()
    proxy.stop()  # idempotent
    try:
        assert closed_by_peer(sock)
    finally:
        sock.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("faultproxy")]
    with pytest.raises(OSError):
        connect(proxy, timeout=0.5).close()


def test_modes_switch_from_other_threads(proxy: FaultProxy) -> None:
    switcher = threading.Thread(target=proxy.cut)
    switcher.start()
    switcher.join()
    with connect(proxy) as sock:
        assert closed_by_peer(sock)
    with pytest.raises(ValueError):
        proxy.delay(-1)
