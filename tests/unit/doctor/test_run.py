"""Gathering doctor checks: all in flight at once, one deadline, results in planning order.

Probes here are fakes (the gathering is pure orchestration); the parallelism tests cannot pass
unless the probes really run at the same time: each waits for the others to start.
"""

from __future__ import annotations

import asyncio

import pytest

from cas.doctor.run import Check, Outcome, failed, passed, run_checks

DEADLINE = 0.3


def check(name: str, probe, site: str | None = "eu", kind: str = "fake") -> Check:  # type: ignore[no-untyped-def]
    return Check(site, kind, name, probe)


def answering(detail: str, ok: bool = True, follow_ups: tuple[Check, ...] = ()):  # type: ignore[no-untyped-def]
    async def probe() -> Outcome:
        return Outcome(ok, detail, follow_ups)

    return probe


async def test_probes_waiting_for_each_other_pass_only_because_they_run_together() -> None:
    count = 300  # no limit on the number of servers: all of them in flight at once
    barrier = asyncio.Barrier(count)

    def probe_for(i: int):  # type: ignore[no-untyped-def]
        async def probe() -> Outcome:
            await barrier.wait()
            return passed(f"answer {i}")

        return probe

    results = await run_checks([check(f"t{i}", probe_for(i)) for i in range(count)], 10.0)
    assert [r.detail for r in results] == [f"answer {i}" for i in range(count)]
    assert all(r.ok for r in results)


async def test_results_keep_planning_order_and_follow_ups_come_right_after_their_parent() -> None:
    gates = {name: asyncio.Event() for name in ("a", "b", "c")}

    def gated(name: str, follow_ups: tuple[Check, ...] = ()):  # type: ignore[no-untyped-def]
        async def probe() -> Outcome:
            await gates[name].wait()
            return passed(name, follow_ups)

        return probe

    async def opener() -> Outcome:  # finish in the order c, b, a
        for name in ("c", "b", "a"):
            gates[name].set()
            await asyncio.sleep(0)
        return passed("opener")

    children = (check("a.1", answering("a.1")), check("a.2", answering("a.2", ok=False)))
    plan = [check("a", gated("a", children)), check("b", gated("b")), check("c", gated("c"))]
    results = await run_checks([*plan, check("opener", opener)], 10.0)
    assert [r.target for r in results] == ["a", "a.1", "a.2", "b", "c", "opener"]
    assert [r.status for r in results] == ["ok", "ok", "FAIL", "ok", "ok", "ok"]


async def test_what_does_not_answer_by_the_deadline_fails_and_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def silent() -> Outcome:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def late_parent() -> Outcome:
        return passed("found one", (check("child", silent, kind="child"),))

    results = await run_checks(
        [check("quiet", silent), check("fine", answering("pong")), check("p", late_parent)],
        DEADLINE,
    )
    by_target = {r.target: r for r in results}
    assert by_target["quiet"].ok is False
    assert by_target["quiet"].detail == f"no answer within {DEADLINE:g} s"
    assert by_target["child"].detail == f"no answer within {DEADLINE:g} s"
    assert by_target["fine"].ok and by_target["fine"].detail == "pong"
    assert by_target["p"].ok
    assert cancelled.is_set()
    assert by_target["quiet"].latency_ms >= by_target["fine"].latency_ms


async def test_a_probe_that_raises_is_a_failure_in_words_not_a_crash() -> None:
    async def refused() -> Outcome:
        raise ConnectionRefusedError(111, "Connect call failed")

    async def broken() -> Outcome:
        raise RuntimeError("bug in a probe")

    results = await run_checks([check("r", refused), check("b", broken)], 10.0)
    assert [(r.ok, r.detail) for r in results] == [
        (False, "connection refused"),
        (False, "RuntimeError: bug in a probe"),
    ]


async def test_result_values_carry_the_check_names() -> None:
    (result,) = await run_checks([check("x", answering("fine"), site=None, kind="dns")], 10.0)
    assert (result.site, result.kind, result.target, result.ok, result.detail) == (
        None,
        "dns",
        "x",
        True,
        "fine",
    )
    assert result.latency_ms >= 0


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
async def test_the_deadline_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        await run_checks([], timeout)


async def test_no_checks_is_an_empty_report() -> None:
    assert await run_checks([], 1.0) == []


def test_outcome_helpers() -> None:
    assert passed("x") == Outcome(True, "x", ())
    assert failed("y") == Outcome(False, "y", ())
