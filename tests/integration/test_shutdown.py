"""Graceful shutdown of a real node process: SIGTERM mid-lookup.

The node's CalDAV backend sits behind a fault proxy adding 2 s, so a lookup is in flight when
SIGTERM arrives. The node must leave readiness at once, still finish that lookup correctly,
then stop accepting and exit by itself within its grace period.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid

import httpx

from tests.support.cluster import start_cluster
from tests.support.node import make_test_ca
from tests.unit.test_ews_endpoint import availability

DRAIN = 1.0
GRACE = 10.0


def test_sigterm_drains_then_finishes_requests_in_flight_then_exits(tmp_path) -> None:
    ca = make_test_ca(tmp_path / "tls")
    cluster = start_cluster(
        tmp_path, ca, {"eu": ["a"]}, nodes_per_site=1, caldav_proxy=True,
        settings={"shutdown_drain_seconds": DRAIN, "shutdown_grace_seconds": GRACE,
                  "request_timeout_seconds": 8},
    )  # fmt: skip
    try:
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
        cluster.caldav_proxies["eu"].delay(2.0)
        answer: dict[str, httpx.Response] = {}

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

        in_flight = threading.Thread(target=lookup)
        in_flight.start()
        time.sleep(0.5)
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()

        with httpx.Client(verify=str(ca.ca_pem), trust_env=False, timeout=2) as client:
            ready = client.get(node.direct_url + "/readyz")
        assert ready.status_code == 503 and "draining" in ready.text

        in_flight.join(timeout=15)
        r = answer["r"]
        assert r.status_code == 200 and b"<t:MergedFreeBusy>0200</t:MergedFreeBusy>" in r.content

        node.process.wait(timeout=GRACE + 5)
        assert time.monotonic() - sent < DRAIN + GRACE
        assert node.process.returncode in (0, -signal.SIGTERM)
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", node.port)) != 0
        log = node.log.read_text()
        assert "not ready any more" in log and "Finished server process" in log
    finally:
        cluster.stop()
