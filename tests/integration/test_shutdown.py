"""Graceful shutdown of a real node process: SIGTERM mid-lookup.

The node's CalDAV backend sits behind a fault proxy adding 2 s, so a lookup is in flight when
SIGTERM arrives (sent once the proxy has seen the node's backend call). The node must leave
readiness at once, still finish that lookup correctly, then stop accepting and exit by itself
within its grace period.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import Cluster, start_cluster
from tests.support.node import make_test_ca
from tests.unit.test_ews_endpoint import availability

DRAIN = 3.0  # long enough to ask /readyz after the node has seen SIGTERM, on a loaded machine
GRACE = 10.0
WAIT = 20.0  # bound on waiting for an event the test expects


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    ca = make_test_ca(tmp_path / "tls")
    cluster = start_cluster(
        tmp_path, ca, {"eu": ["a"]}, nodes_per_site=1, caldav_proxy=True,
        settings={"shutdown_drain_seconds": DRAIN, "shutdown_grace_seconds": GRACE,
                  "request_timeout_seconds": 8},
    )  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.stop()


def test_sigterm_drains_then_finishes_requests_in_flight_then_exits(cluster: Cluster) -> None:
    ca = cluster.ca
    cluster.write_events(
        "eu-a@contoso.test",
        [
            f"""
BEGIN:VEVENT
UID:{uuid.uuid4()}
DTSTAMP:20240101T000000Z
DTSTART:20240304T090000Z
DTEND:20240304T100000Z
SUMMARY:busy
END:VEVENT"""
        ],
    )
    [node] = cluster.sites["eu"]
    backend = cluster.caldav_proxies["eu"]
    backend.delay(2.0)
    calls_before = backend.connections
    answer: dict[str, httpx.Response] = {}
    answered_at: list[float] = []

    def lookup() -> None:
        with httpx.Client(verify=str(ca.ca_pem), trust_env=False, timeout=20) as client:
            answer["r"] = client.post(
                node.direct_url + "/EWS/Exchange.asmx",
                auth=cluster.client,
                content=availability(
                    ["eu-a@contoso.test"],
                    start="2024-03-04T08:00:00Z",
                    end="2024-03-04T12:00:00Z",
                    interval="60",
                ),
            )
        answered_at.append(time.monotonic())

    in_flight = threading.Thread(target=lookup)
    in_flight.start()
    wait_until(lambda: backend.connections > calls_before, "the lookup reaching the backend")
    assert node.process is not None
    node.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_until(lambda: "not ready any more" in node.log.read_text(), "the node seeing SIGTERM")

    with httpx.Client(verify=str(ca.ca_pem), trust_env=False, timeout=2) as client:
        ready = client.get(node.direct_url + "/readyz")
    assert ready.status_code == 503 and "draining" in ready.text

    in_flight.join(timeout=WAIT)
    assert not in_flight.is_alive(), "the lookup in flight was never answered"
    assert answered_at[0] > sent  # it was answered after SIGTERM: it was in flight
    r = answer["r"]
    assert r.status_code == 200 and b"<t:MergedFreeBusy>0200</t:MergedFreeBusy>" in r.content

    node.process.wait(timeout=GRACE + 5)
    assert time.monotonic() - sent < DRAIN + GRACE
    assert node.process.returncode in (0, -signal.SIGTERM)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", node.port)) != 0
    log = node.log.read_text()
    assert "not ready any more" in log and "Finished server process" in log
