"""The contract's request limits (docs/contract.md) and the view table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cas import errors
from cas.model.availability import (
    AvailabilityRequest,
    FreeBusyView,
    Limits,
    MailboxQuery,
    check_limits,
    view_for,
)
from cas.model.freebusy import MailboxData, Window

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def request(count: int = 1, window: timedelta = timedelta(days=1), interval: int = 30):
    return AvailabilityRequest(
        mailboxes=tuple(MailboxQuery(f"u{i}@contoso.test") for i in range(count)),
        window=Window(T0, T0 + window),
        interval_minutes=interval,
        view=FreeBusyView.DETAILED_MERGED,
        tz=UTC,
    )


@pytest.mark.parametrize(
    ("req", "fault", "text"),
    [
        (request(count=0), errors.MailboxDataArrayEmpty, "no mailboxes"),
        (
            request(count=101),
            errors.MailboxDataArrayTooBig,
            "allowed size = 100; actual size = 101",
        ),
        (
            request(window=timedelta(days=63)),
            errors.TimeIntervalTooBig,
            "allowed limit = 62 days; the actual limit = 63 days",
        ),
        (request(interval=4), errors.InvalidMergedInterval, "between 5 and 1440"),
        (request(interval=1441), errors.InvalidMergedInterval, "between 5 and 1440"),
        (
            request(window=timedelta(minutes=20), interval=30),
            errors.InvalidMergedInterval,
            "longer than the time window",
        ),
    ],
)
def test_limits_raise_the_contract_fault(req, fault, text) -> None:
    with pytest.raises(fault) as info:
        check_limits(req, Limits())
    assert text in info.value.message


@pytest.mark.parametrize(
    "req",
    [
        request(count=100),
        request(window=timedelta(days=62, hours=23)),  # whole days, as Exchange counts
        request(interval=5),
        request(window=timedelta(days=1), interval=1440),
    ],
)
def test_limits_accept_the_edges(req) -> None:
    check_limits(req, Limits())


def test_limits_are_configurable() -> None:
    with pytest.raises(errors.MailboxDataArrayTooBig):
        check_limits(request(count=11), Limits(max_mailboxes=10))
    check_limits(request(window=timedelta(days=200)), Limits(max_window_days=208))


def test_merged_only_sources_answer_every_view_with_merged_only() -> None:
    legacy = MailboxData(merged="0022", merged_only=True)
    for view in FreeBusyView:
        assert view_for(view, legacy) is FreeBusyView.MERGED_ONLY
    assert view_for(FreeBusyView.DETAILED, MailboxData()) is FreeBusyView.DETAILED


def test_view_contents_table() -> None:
    assert [v.value for v in FreeBusyView if v.has_merged] == [
        "MergedOnly",
        "FreeBusyMerged",
        "DetailedMerged",
    ]
    assert [v.value for v in FreeBusyView if v.has_details] == ["Detailed", "DetailedMerged"]
    assert not FreeBusyView.MERGED_ONLY.has_events
