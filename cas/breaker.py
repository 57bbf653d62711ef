"""A circuit breaker: stop calling a dependency that keeps failing, and try it again later.

One `CircuitBreaker` guards one dependency: the site's Redis, a CalDAV backend, an old server,
or one node of another site. It is a pure state machine over an injectable clock, after
Envoy's outlier detection; it does no I/O and raises nothing. A caller asks `allow()` before
each call and reports the outcome with `record_success()`, `record_failure(reason, weight)` or,
for a call its own caller cancelled, `release_trial()`. A refused call fails at once without
touching the dependency.

Theory of operation
-------------------
::

    closed ──(failure_threshold consecutive failures or timeouts)──▶ open
    open ──(its open time elapsed, seen on the next allow() or state read)──▶ half-open
    half-open: the first allow() is the one probe; others are refused while it runs
      probe succeeds ──▶ closed        probe fails ──▶ open again, for longer
      probe cancelled (release_trial) ──▶ half-open, the next allow() is a new probe

The open time is `reset_seconds` times the number of opens in a row, at most
`max_reset_seconds` (Envoy's ejection time), so a dependency that stays down is probed less and
less often. `weight` lets one call count as several failures (a batch of mailboxes that all
timed out). Outcomes of calls that started before the circuit opened are ignored while it is
open, so a burst of late failures does not push the probe further away, and a late success
does not close it without a probe. Every state change is reported to the listeners (metrics,
the log line of `cas.breaker_board`), which read the episode's counts from the breaker.
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
    """Closed → open after `failure_threshold` consecutive failures → half-open after the
    open time → one probe decides.

    `clock` returns seconds (monotonic); `on_change(state)` is called after each transition
    (more listeners with `add_listener`). Listener errors are logged, never raised.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
        *,
        max_reset_seconds: float | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds < 0:
            raise ValueError("reset_seconds must not be negative")
        if max_reset_seconds is not None and max_reset_seconds < reset_seconds:
            raise ValueError("max_reset_seconds must not be less than reset_seconds")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.max_reset_seconds = reset_seconds if max_reset_seconds is None else max_reset_seconds
        self._clock = clock
        self._listeners: list[Callable[[str], None]] = [on_change] if on_change else []
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        # the current episode (from the first open to the next close)
        self.opens = 0  # opens in a row: 1 when it first opened, +1 per failed probe
        self.down_since: float | None = None
        self.refused = 0  # calls refused while open
        self.last_failure = ""

    # --- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state now: "closed", "open", or "half-open" (open, and its time is up)."""
        self._advance()
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    @property
    def available(self) -> bool:
        """Would `allow()` let a call through now? (Reading this claims no probe.)"""
        state = self.state
        return state == "closed" or (state == "half-open" and not self._trial_running)

    @property
    def open_seconds(self) -> float:
        """How long the circuit stays open this time before a probe."""
        return min(self.max_reset_seconds, self.reset_seconds * max(1, self.opens))

    def probe_in(self) -> float:
        """Seconds until the next probe may go (0 when one may go now)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - self._clock())

    def down_for(self) -> float:
        """Seconds since the circuit first opened in this episode (0 when closed)."""
        return 0.0 if self.down_since is None else self._clock() - self.down_since

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Also call `callback(state)` on every transition."""
        self._listeners.append(callback)

    # --- the protocol a caller follows -----------------------------------------------------

    def allow(self) -> bool:
        """May a call go ahead now? In half-open, True once: the caller is the probe."""
        self._advance()
        if self._state == "closed":
            return True
        if self._state == "half-open" and not self._trial_running:
            self._trial_running = True
            return True
        self.refused += 1
        return False

    def record_success(self) -> None:
        """A call that `allow()` let through succeeded."""
        if self._state == "open":
            return
        self._failures = 0
        self._trial_running = False
        if self._state == "half-open":
            self._set("closed")

    def record_failure(self, reason: str = "", weight: int = 1) -> None:
        """A call that `allow()` let through failed or timed out; `weight` counts it as that
        many failures (a batch whose every mailbox failed)."""
        if self._state == "open":
            return
        if reason:
            self.last_failure = reason
        if self._state == "half-open":
            self._trip()
            return
        self._failures += max(1, weight)
        if self._failures >= self.failure_threshold:
            self._trip()

    def release_trial(self) -> None:
        """A call ended without a verdict (cancelled by its caller): free the probe slot."""
        if self._state == "half-open":
            self._trial_running = False

    # --- internals -------------------------------------------------------------------------

    def _advance(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
            self._trial_running = False
            self._set("half-open")

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._trial_running = False
        self.opens += 1
        if self.down_since is None:
            self.down_since = self._opened_at
        self._set("open")

    def _set(self, state: BreakerState) -> None:
        if state == self._state:
            return
        self._state = state
        for listener in self._listeners:
            try:
                listener(state)
            except Exception:  # a metrics or log hook must never break a call
                logger.exception("circuit breaker listener failed")
        if state == "closed":  # the episode is over; listeners have read its counts
            self.opens = 0
            self.down_since = None
            self.refused = 0
            self.last_failure = ""

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state!r}, failures={self._failures}, "
            f"threshold={self.failure_threshold}, open={self.open_seconds:g}s)"
        )
