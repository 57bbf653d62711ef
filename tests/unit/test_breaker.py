"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from cas.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[str]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[str]) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3, reset_seconds=5.0, clock=clock, on_change=changes.append
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_starts_closed_and_allows_calls(breaker: CircuitBreaker) -> None:
    assert breaker.state == "closed"
    assert breaker.allow()


def test_opens_after_threshold_consecutive_failures(
    breaker: CircuitBreaker, changes: list[str]
) -> None:
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"
    assert changes == ["open"]
    assert not breaker.allow()


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert breaker.allow()
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_half_open_after_reset_seconds(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[str]
) -> None:
    fail(breaker, 3)
    clock.now += 4.999
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.state == "half-open"
    assert changes == ["open", "half-open"]


def test_half_open_allows_one_trial_at_a_time(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 5
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()


def test_trial_success_closes(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[str]
) -> None:
    fail(breaker, 3)
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert changes == ["open", "half-open", "closed"]
    assert breaker.allow() and breaker.allow()


def test_trial_failure_reopens_and_restarts_the_timer(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_cancelled_trial_frees_the_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 5
    assert breaker.allow()
    breaker.release_trial()
    assert breaker.state == "half-open"
    assert breaker.allow()


def test_late_outcomes_while_open_are_ignored(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 3
    breaker.record_failure()  # a call that started before the circuit opened
    clock.now += 2
    assert breaker.state == "half-open"  # the timer was not pushed back
    fail(breaker, 1)
    breaker.record_success()  # late success while open does not close it
    assert breaker.state == "open"


def test_threshold_of_one(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=0, clock=clock)
    fail(breaker, 1)
    assert breaker.state == "half-open"  # reset 0: the next call is the trial


def test_listener_errors_do_not_escape(clock: FakeClock) -> None:
    seen: list[str] = []

    def broken(state: str) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker(failure_threshold=1, clock=clock, on_change=broken)
    breaker.add_listener(seen.append)
    fail(breaker, 1)
    assert seen == ["open"]


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"reset_seconds": -1}])
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


# --- outlier detection: growing open time, weighted failures, the episode's counts ------------


def test_each_failed_probe_keeps_it_open_longer_up_to_the_cap(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1, reset_seconds=2.0, max_reset_seconds=5.0, clock=clock
    )
    fail(breaker, 1)
    waits = []
    for _ in range(4):
        waits.append(breaker.probe_in())
        clock.now += breaker.probe_in()
        assert breaker.allow()  # the probe
        breaker.record_failure("still down")
    assert waits == [2.0, 4.0, 5.0, 5.0]
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.probe_in() == 2.0  # a new episode starts from the base again


def test_a_weighted_failure_counts_as_that_many(breaker: CircuitBreaker) -> None:
    assert breaker.allow()
    breaker.record_failure("a batch of two timed out", weight=2)
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure("one more", weight=1)
    assert breaker.state == "open"
    assert breaker.last_failure == "one more"


def test_the_episode_counts_refusals_and_failed_probes_until_it_closes(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    seen: list[tuple[str, int, int, float]] = []
    breaker.add_listener(
        lambda state: seen.append((state, breaker.refused, breaker.opens, breaker.down_for()))
    )
    fail(breaker, 3)
    for _ in range(4):
        assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure("probe failed")
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert seen == [
        ("open", 0, 1, 0.0),
        ("half-open", 4, 1, 5.0),
        ("open", 4, 2, 5.0),
        ("half-open", 5, 2, 10.0),
        ("closed", 5, 2, 10.0),
    ]
    assert (breaker.refused, breaker.opens, breaker.down_for()) == (0, 0, 0.0)


def test_available_tells_without_claiming_the_probe(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    assert breaker.available
    fail(breaker, 3)
    assert not breaker.available
    clock.now += 5
    assert breaker.available and breaker.available  # reading claims nothing
    assert breaker.allow()
    assert not breaker.available  # the probe is running
