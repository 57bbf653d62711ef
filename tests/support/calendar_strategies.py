"""Hypothesis strategies for calendars: RRULE (COUNT or UNTIL, BYHOUR), RDATE, EXDATE in UTC or
in the event's zone, RECURRENCE-ID overrides (moved or cancelled), TZID zones with and without
DST, UTC, floating and all-day times, DTEND or DURATION, and busy-status properties.

Events start around March 2027, when Europe (28 March), the United States (14 March) and
Australia (4 April) change clocks, so DST gaps and overlaps fall inside the compared window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import strategies as st

from tests.support.oracle import ALL_DAY, BUSY_KINDS, FLOATING, UTC_ZONE, GenEvent, Override, Rule

EVENT_ZONES = (
    "Europe/Amsterdam",  # DST on 28 March
    "America/New_York",  # DST on 14 March
    "Australia/Sydney",  # DST ends on 4 April
    "Asia/Kolkata",  # +05:30, no DST
    "Asia/Tokyo",  # no DST
    UTC_ZONE,
    FLOATING,
    ALL_DAY,
)
OWNER_ZONES = ("Europe/Amsterdam", "America/New_York", "Australia/Sydney", "Asia/Kolkata")
FIRST_DAY = datetime(2027, 3, 1)
BUSY = tuple(BUSY_KINDS)


@st.composite
def rules(draw: st.DrawFn, all_day: bool) -> Rule | None:
    if not draw(st.booleans()):
        return None
    freq = draw(st.sampled_from(("DAILY", "WEEKLY")))
    counted = draw(st.booleans())
    return Rule(
        freq=freq,
        interval=draw(st.integers(1, 3)),
        count=draw(st.integers(2, 8)) if counted else None,
        until_days=None if counted else draw(st.integers(1, 30)),
        second_hour=(
            draw(st.none() | st.integers(0, 23)) if freq == "DAILY" and not all_day else None
        ),
    )


@st.composite
def events(draw: st.DrawFn, uid: str) -> GenEvent:
    zone = draw(st.sampled_from(EVENT_ZONES))
    all_day = zone == ALL_DAY
    start = FIRST_DAY + timedelta(
        days=draw(st.integers(0, 40)),
        hours=0 if all_day else draw(st.integers(0, 23)),
        minutes=0 if all_day else draw(st.sampled_from((0, 15, 30, 45))),
    )
    minutes = draw(st.integers(1, 3)) if all_day else draw(st.sampled_from((15, 30, 60, 90, 180)))
    busy = draw(st.sampled_from(BUSY))
    cancelled_master = draw(st.integers(0, 20)) == 0
    overrides = draw(
        st.lists(
            st.builds(
                Override,
                pick=st.integers(0, 20),
                shift_minutes=st.none() | st.sampled_from((-90, -60, 30, 60, 120, 1440)),
                rid_in_utc=st.booleans() if zone not in (FLOATING, ALL_DAY) else st.just(False),
                busy=st.sampled_from(BUSY),
            ),
            max_size=2,
        )
    )
    in_utc = st.booleans() if zone not in (FLOATING, ALL_DAY) else st.just(False)
    return GenEvent(
        uid=uid,
        zone=zone,
        start=start,
        minutes=minutes,
        use_duration=draw(st.booleans()),
        busy=("CANCELLED", "", "") if cancelled_master else busy,
        rule=draw(rules(all_day)),
        rdate_days=tuple(draw(st.lists(st.integers(1, 20), max_size=2, unique=True))),
        exdate_picks=tuple(draw(st.lists(st.tuples(st.integers(0, 20), in_utc), max_size=2))),
        overrides=tuple(overrides),
    )


@st.composite
def calendars(draw: st.DrawFn) -> tuple[str, list[GenEvent]]:
    """(owner zone, events) of one mailbox."""
    owner = draw(st.sampled_from(OWNER_ZONES))
    count = draw(st.integers(1, 5))
    return owner, [draw(events(f"ev{i}")) for i in range(count)]


__all__ = ["OWNER_ZONES", "calendars", "events"]
