"""Serve an app with a real uvicorn over TLS on loopback, in a background thread.

Synchronous clients (exchangelib, requests) can then call it from the test's own thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvicorn

STOP_GRACE = 2.0


@dataclass(frozen=True)
class TestCA:
    """The files of a trustme CA and of one server certificate it issued."""

    __test__ = False  # a helper named Test*, not a test class: pytest must not collect it

    ca: trustme.CA
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_test_ca(directory: Path, *extra_names: str) -> TestCA:
    """A trustme CA and a server certificate for 127.0.0.1 / localhost (and `extra_names`,
    e.g. the SRV target names of nodes), written to files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", *extra_names)
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "node.pem", directory / "node.key"
    ca.cert_pem.write_to_path(str(ca_pem))
    server.private_key_and_cert_chain_pem.write_to_path(str(cert_pem))
    server.private_key_pem.write_to_path(str(key_pem))
    return TestCA(ca, ca_pem, cert_pem, key_pem)


class ThreadedServer:
    """`with ThreadedServer(app, tls) as server: server.url` — HTTPS on a free loopback port."""

    def __init__(self, app, tls: TestCA | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            ssl_certfile=str(tls.cert_pem) if tls else None,
            ssl_keyfile=str(tls.key_pem) if tls else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test node did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop gracefully; after `STOP_GRACE` seconds stop waiting for open connections (a
        client's idle keep-alive or an unanswered TLS close), as uvicorn does on a second ^C."""
        self.server.should_exit = True
        self.thread.join(timeout=STOP_GRACE)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=10)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"test server {self.url} did not stop")
