"""Running doctor checks: all at once, under one deadline, with no limit on their number.

A `Check` names what is checked (site, kind, target) and holds its probe, an async function
that answers an `Outcome`: passed or not, and why, in words. A probe may find more to check
(the nodes a DNS SRV name gives): its outcome carries them as `follow_ups`, which start at
once under the same deadline and are reported right after it.

`run_checks` answers one `CheckResult` per check, in the order they were planned. A probe
still running at the deadline is cancelled and reported as failed, "no answer within N s"; a
probe that raises (probes should not) is reported as failed with the error in words.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from cas.doctor.words import describe_error, within

__all__ = ["Check", "CheckResult", "Outcome", "Probe", "failed", "passed", "run_checks"]

CANCEL_GRACE_SECONDS = 1.0
"""How long cancelled probes get to unwind after the deadline before they are left behind."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a probe found: `ok`, the reason in words, and further checks it discovered."""

    ok: bool
    detail: str
    follow_ups: tuple[Check, ...] = ()


Probe = Callable[[], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Check:
    """One thing to check. `site` is None for what belongs to no one site (domain names)."""

    site: str | None
    kind: str
    target: str
    probe: Probe = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One row of the report."""

    site: str | None
    kind: str
    target: str
    ok: bool
    latency_ms: float
    detail: str

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL"


def passed(detail: str, follow_ups: Sequence[Check] = ()) -> Outcome:
    return Outcome(True, detail, tuple(follow_ups))


def failed(detail: str) -> Outcome:
    return Outcome(False, detail)


def _result(check: Check, ok: bool, started: float, detail: str) -> CheckResult:
    elapsed_ms = (time.monotonic() - started) * 1000
    return CheckResult(check.site, check.kind, check.target, ok, round(elapsed_ms, 1), detail)


def _outcome(task: asyncio.Task[Outcome]) -> Outcome:
    error = task.exception()
    if error is not None:
        return failed(describe_error(error))
    return task.result()


Key = tuple[int, ...]


class _Run:
    """The checks in flight, and the results of those that finished, by planning order."""

    def __init__(self) -> None:
        self.pending: dict[asyncio.Task[Outcome], tuple[Key, Check, float]] = {}
        self.results: dict[Key, CheckResult] = {}

    def launch(self, check: Check, key: Key) -> None:
        task = asyncio.ensure_future(check.probe())
        self.pending[task] = (key, check, time.monotonic())

    def finish(self, task: asyncio.Task[Outcome]) -> None:
        key, check, started = self.pending.pop(task)
        outcome = _outcome(task)
        self.results[key] = _result(check, outcome.ok, started, outcome.detail)
        for index, follow_up in enumerate(outcome.follow_ups):
            self.launch(follow_up, (*key, index))

    async def abandon(self, reason: str) -> None:
        """Fail and cancel everything still running."""
        for task, (key, check, started) in self.pending.items():
            task.cancel()
            self.results[key] = _result(check, False, started, reason)
        tasks = list(self.pending)
        self.pending.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS)

    def ordered(self) -> list[CheckResult]:
        return [self.results[key] for key in sorted(self.results)]


async def run_checks(checks: Sequence[Check], timeout: float) -> list[CheckResult]:
    """Run every check (and what they discover) in parallel until `timeout` seconds pass."""
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    deadline = time.monotonic() + timeout
    run = _Run()
    try:
        for index, check in enumerate(checks):
            run.launch(check, (index,))
        while run.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done, _ = await asyncio.wait(
                run.pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                run.finish(task)
    finally:
        await run.abandon(within(timeout))
    return run.ordered()
