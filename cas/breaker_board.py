"""The node's breakers, one per dependency, and what an operator sees of them.

A `BreakerBoard` makes and keeps one `CircuitBreaker` (`cas.breaker`) per dependency of the
node: each backend and old server of its site (`caldav:eu`, `oldserver:eu`), each node of
another site (`peer:https://…`), and the site's Redis (`redis:eu`). It outlives configuration
reloads, so a reload neither forgets that a backend is down nor starts it over.

For every breaker it writes **one log line per transition**, and none per request::

    WARNING breaker caldav:eu open: CalDAV backend of site eu is down after 5 failures in a
            row (last: ...); its calls fail at once, next probe in 5s
    INFO    breaker caldav:eu still-open: ... probe failed (...) after 12s down; 340 calls
            failed at once so far; next probe in 10s
    INFO    breaker caldav:eu closed: ... is back after 31s down: 911 calls failed at once,
            2 probes failed

(the half-open step is a debug line: it is a timer, not news). The first words, `breaker
KIND:TARGET STATE:`, are stable for tools that follow the log (`cas lab` shows each transition
once, however many nodes report it). The same transitions go to `/metrics`
(`cas_breaker_state`, `cas_breaker_transitions_total`), and `snapshot()` is what `/healthz`
tells `cas doctor`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cas.breaker import CircuitBreaker

__all__ = ["BreakerBoard", "BreakerPolicy"]

log = logging.getLogger(__name__)


class BreakerMetrics(Protocol):
    def breaker_known(self, kind: str, target: str) -> None: ...

    def breaker_transition(self, kind: str, target: str, state: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """How breakers of backends, old servers and peers behave (the `breaker_*` settings)."""

    failures: int = 5
    open_seconds: float = 5.0
    max_open_seconds: float = 60.0
    slow_seconds: float = 3.0


@dataclass
class _Entry:
    kind: str
    target: str
    subject: str  # in words: "CalDAV backend of site eu"
    breaker: CircuitBreaker

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.target}"


class BreakerBoard:
    """Every breaker of one node, by (kind, target); see the module docstring."""

    def __init__(
        self,
        policy: BreakerPolicy = BreakerPolicy(),
        *,
        metrics: BreakerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def breaker(
        self,
        kind: str,
        target: str,
        subject: str,
        *,
        failures: int | None = None,
        open_seconds: float | None = None,
        max_open_seconds: float | None = None,
    ) -> CircuitBreaker:
        """The breaker of `kind:target`, made on first use with the policy (or the values
        given); `subject` names the dependency in log lines."""
        entry = self._entries.get((kind, target))
        if entry is not None:
            entry.subject = subject
            return entry.breaker
        base = self.policy.open_seconds if open_seconds is None else open_seconds
        breaker = CircuitBreaker(
            failure_threshold=self.policy.failures if failures is None else failures,
            reset_seconds=base,
            clock=self.clock,
            max_reset_seconds=max(
                base, self.policy.max_open_seconds if max_open_seconds is None else max_open_seconds
            ),
        )
        entry = _Entry(kind, target, subject, breaker)
        self._entries[(kind, target)] = entry
        breaker.add_listener(lambda state: self._changed(entry, state))
        if self.metrics is not None:
            self.metrics.breaker_known(kind, target)
        return breaker

    def snapshot(self) -> list[dict[str, Any]]:
        """Every breaker's state and counts, for `/healthz` and `cas doctor`."""
        rows = []
        for entry in self._entries.values():
            b = entry.breaker
            rows.append(
                {
                    "kind": entry.kind,
                    "target": entry.target,
                    "subject": entry.subject,
                    "state": b.state,
                    "down_seconds": round(b.down_for(), 1),
                    "refused": b.refused,
                    "last_failure": b.last_failure,
                    "probe_in_seconds": round(b.probe_in(), 1),
                }
            )
        return sorted(rows, key=lambda r: (r["kind"], r["target"]))

    # --- transitions --------------------------------------------------------------------------

    def _changed(self, entry: _Entry, state: str) -> None:
        if self.metrics is not None:
            self.metrics.breaker_transition(entry.kind, entry.target, state)
        b = entry.breaker
        head = f"breaker {entry.key}"
        if state == "half-open":
            log.debug("%s half-open: %s: one probe may go", head, entry.subject)
        elif state == "open" and b.opens == 1:
            log.warning(
                "%s open: %s is down after %d failures in a row (last: %s); "
                "its calls fail at once, next probe in %gs",
                head, entry.subject, b.failure_threshold, b.last_failure or "?", b.open_seconds,
            )  # fmt: skip
        elif state == "open":
            log.info(
                "%s still-open: %s: probe failed (%s) after %.0fs down; %d calls failed at once "
                "so far; next probe in %gs",
                head, entry.subject, b.last_failure or "?", b.down_for(), b.refused,
                b.open_seconds,
            )  # fmt: skip
        elif state == "closed":
            log.info(
                "%s closed: %s is back after %.0fs down: %d calls failed at once, "
                "%d probes failed",
                head, entry.subject, b.down_for(), b.refused, max(0, b.opens - 1),
            )  # fmt: skip
