"""A circuit breaker for the cache store: stop calling a Redis that keeps failing, retry later.

The breaker is a pure state machine over an injectable clock; it does no I/O and raises nothing.
`RedisStore` asks `allow()` before every call and reports the outcome with `record_success()`,
`record_failure()` or, for a call that was cancelled by its caller, `release_trial()`. A refused
call fails fast with `CacheUnavailable("circuit open")` without touching Redis.

Theory of operation
-------------------
::

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(reset_seconds elapsed, seen on the next allow() or state read)──▶ half-open
    half-open: the first allow() is the one trial call; others are refused while it runs
      trial succeeds ──▶ closed        trial fails ──▶ open (the reset timer starts again)
      trial cancelled (release_trial) ──▶ half-open, the next allow() is a new trial

Outcomes of calls that started before the circuit opened are ignored while it is open, so a
burst of late failures does not push the reset further away, and a late success does not close
it without a trial. Every state change is reported to the `on_change` listeners (metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]
logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed → open after `failure_threshold` consecutive failures → half-open after
    `reset_seconds` → one trial call decides.

    `clock` returns seconds (monotonic); `on_change(state)` is called after each transition
    (more listeners with `add_listener`). Listener errors are logged, never raised.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds < 0:
            raise ValueError("reset_seconds must not be negative")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._listeners: list[Callable[[str], None]] = [on_change] if on_change else []
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    # --- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state now: "closed", "open", or "half-open" (open, and its reset time has come)."""
        self._advance()
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Also call `callback(state)` on every transition."""
        self._listeners.append(callback)

    # --- the protocol a caller follows -----------------------------------------------------

    def allow(self) -> bool:
        """May a call go ahead now? In half-open, True once: the caller is the trial."""
        self._advance()
        if self._state == "closed":
            return True
        if self._state == "half-open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        """A call that `allow()` let through succeeded."""
        if self._state == "open":
            return
        self._failures = 0
        self._trial_running = False
        if self._state == "half-open":
            self._set("closed")

    def record_failure(self) -> None:
        """A call that `allow()` let through failed (error or timeout)."""
        if self._state == "open":
            return
        if self._state == "half-open":
            self._trip()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._trip()

    def release_trial(self) -> None:
        """A call ended without a verdict (cancelled by its caller): free the trial slot."""
        if self._state == "half-open":
            self._trial_running = False

    # --- internals -------------------------------------------------------------------------

    def _advance(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_seconds:
            self._trial_running = False
            self._set("half-open")

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._trial_running = False
        self._set("open")

    def _set(self, state: BreakerState) -> None:
        if state == self._state:
            return
        self._state = state
        for listener in self._listeners:
            try:
                listener(state)
            except Exception:  # a metrics hook must never break a cache call
                logger.exception("circuit breaker listener failed")

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state!r}, failures={self._failures}, "
            f"threshold={self.failure_threshold}, reset={self.reset_seconds:g}s)"
        )
