"""Fixtures for the sitemap tests: a real DNS responder on loopback and a clock tests move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from caslab.dnsserver import DnsResponder


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def responder() -> Iterator[DnsResponder]:
    with DnsResponder() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
