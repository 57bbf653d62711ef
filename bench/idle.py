"""Idle client connections against one node: what each costs, and whether the node closes them.

Used by `bench/resilience.py`. `idle_cost(url, ca, pid, count)` opens `count` TLS connections
that finish the handshake and never send a request, reads the node's resident memory (from
/proc) before and after, waits past the node's idle timeout, and counts how many the node
still keeps open. `kept_alive(url, ca, count, wait)` does the same for connections that sent
one request (keep-alive) and then went quiet. Only loopback; every socket is closed at the end.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class IdleFigures:
    opened: int
    rss_before_kb: int
    rss_open_kb: int
    still_open: int  # after the wait
    rss_after_kb: int

    @property
    def kb_per_connection(self) -> float:
        return (self.rss_open_kb - self.rss_before_kb) / max(1, self.opened)


def rss_kb(pid: int) -> int:
    """Resident memory of process `pid` in KiB (VmRSS in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def _connect(url: str, context: ssl.SSLContext) -> ssl.SSLSocket:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    if host != "127.0.0.1":
        raise ValueError(f"{url}: the bench only talks to 127.0.0.1")
    raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    return context.wrap_socket(raw, server_hostname=host)


def _open_count(socks: list[ssl.SSLSocket]) -> int:
    """How many of `socks` the other side has not closed: whatever is waiting is read (an
    answer's leftover body) until the socket would block (open) or ends (closed)."""
    readable, _, _ = select.select(socks, [], [], 0)
    closed = 0
    for sock in readable:
        sock.setblocking(False)
        for _ in range(64):  # bounded: a few small records at most
            try:
                if sock.recv(65536) == b"":
                    closed += 1
                    break
            except (ssl.SSLWantReadError, BlockingIOError):
                break  # nothing more for now: still open
            except (ssl.SSLError, OSError):
                closed += 1
                break
    return len(socks) - closed


def _close_all(socks: list[ssl.SSLSocket]) -> None:
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass


def idle_cost(url: str, ca: str, pid: int, count: int, wait: float) -> IdleFigures:
    """`count` connections that never send a request; open again after `wait` seconds?"""
    context = _context(ca)
    before = rss_kb(pid)
    socks: list[ssl.SSLSocket] = []
    try:
        for _ in range(count):
            socks.append(_connect(url, context))
        time.sleep(1.0)  # let the node settle its buffers
        opened = rss_kb(pid)
        time.sleep(wait)
        still = _open_count(socks)
        return IdleFigures(len(socks), before, opened, still, rss_kb(pid))
    finally:
        _close_all(socks)


def kept_alive(url: str, ca: str, count: int, wait: float) -> tuple[int, int]:
    """(answered, still open after `wait` s) of `count` connections that sent one request."""
    context = _context(ca)
    socks: list[ssl.SSLSocket] = []
    answered = 0
    try:
        for _ in range(count):
            sock = _connect(url, context)
            socks.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while b"\r\n\r\n" not in head and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            answered += head.startswith(b"HTTP/1.1 200")
        time.sleep(wait)
        return answered, _open_count(socks)
    finally:
        _close_all(socks)
