"""The node's breakers: one log line per transition with the episode's counts, the metrics,
and what `/healthz` tells `cas doctor`."""

from __future__ import annotations

import logging

import pytest

from cas.breaker_board import BreakerBoard, BreakerPolicy
from cas.observability import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


POLICY = BreakerPolicy(failures=2, open_seconds=4.0, max_open_seconds=10.0)


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "cas.breaker_board"]


def test_an_outage_is_one_line_down_lines_per_failed_probe_and_one_line_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cas.breaker_board")
    clock = FakeClock()
    board = BreakerBoard(POLICY, clock=clock)
    breaker = board.breaker("caldav", "eu", "CalDAV backend of site eu")
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure("connection refused")
    for _ in range(30):  # a burst of lookups while it is down: no line each
        assert not breaker.allow()
    clock.now += 4
    assert breaker.allow()
    breaker.record_failure("still refused")
    clock.now += 8
    assert breaker.allow()
    breaker.record_success()
    assert lines(caplog) == [
        (
            "WARNING",
            "breaker caldav:eu open: CalDAV backend of site eu is down after 2 failures in a "
            "row (last: connection refused); its calls fail at once, next probe in 4s",
        ),
        (
            "INFO",
            "breaker caldav:eu still-open: CalDAV backend of site eu: probe failed (still "
            "refused) after 4s down; 30 calls failed at once so far; next probe in 8s",
        ),
        (
            "INFO",
            "breaker caldav:eu closed: CalDAV backend of site eu is back after 12s down: "
            "30 calls failed at once, 1 probes failed",
        ),
    ]


def test_transitions_reach_the_metrics_and_the_snapshot() -> None:
    clock = FakeClock()
    metrics = Metrics()
    board = BreakerBoard(POLICY, metrics=metrics, clock=clock)
    peer = board.breaker("peer", "https://127.0.0.1:9", "node https://127.0.0.1:9 of site us")
    board.breaker("redis", "eu", "Redis of site eu", failures=3, open_seconds=5, max_open_seconds=5)

    def state(kind: str, target: str) -> float | None:
        labels = {"kind": kind, "target": target}
        return metrics.registry.get_sample_value("cas_breaker_state", labels)

    assert (state("peer", "https://127.0.0.1:9"), state("redis", "eu")) == (0, 0)
    for _ in range(2):
        peer.allow()
        peer.record_failure("ConnectError")
    assert state("peer", "https://127.0.0.1:9") == 2
    labels = {"kind": "peer", "target": "https://127.0.0.1:9", "state": "open"}
    assert metrics.registry.get_sample_value("cas_breaker_transitions_total", labels) == 1
    clock.now += 3
    peer.allow()
    rows = board.snapshot()
    assert [(r["kind"], r["target"], r["state"]) for r in rows] == [
        ("peer", "https://127.0.0.1:9", "open"),
        ("redis", "eu", "closed"),
    ]
    assert rows[0]["down_seconds"] == 3.0 and rows[0]["probe_in_seconds"] == 1.0
    assert rows[0]["refused"] == 1 and rows[0]["last_failure"] == "ConnectError"


def test_the_same_dependency_gets_the_same_breaker_across_reloads() -> None:
    board = BreakerBoard(POLICY)
    first = board.breaker("oldserver", "eu", "old server of site eu")
    again = board.breaker("oldserver", "eu", "old server of site eu")
    assert first is again
    assert board.breaker("oldserver", "us", "old server of site us") is not first
