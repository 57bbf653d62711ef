"""RuleTimeZone: Windows-style rules written by hand, checked hour by hour against zoneinfo."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.codecs.ews.tzrules import LAST, RuleTimeZone, TransitionRule, ZoneRules, rule_on

SUN = 0  # WEEKDAYS index
H = timedelta(hours=1)


def rule(bias: int, hour: int, order: int, month: int, weekday: int = SUN) -> TransitionRule:
    return TransitionRule(bias, hour * H, order, month, weekday)


NO_DST = (rule(0, 0, 1, 1, 1), rule(0, 0, LAST, 12, SUN))  # what exchangelib sends

# The rules Windows publishes for these zones, typed in from the zones' public definitions.
HAND_WRITTEN = {
    "Europe/Berlin": ZoneRules(-60, rule(0, 3, LAST, 10), rule(-60, 2, LAST, 3)),
    "America/Los_Angeles": ZoneRules(480, rule(0, 2, 1, 11), rule(-60, 2, 2, 3)),
    "Australia/Sydney": ZoneRules(-600, rule(0, 3, 1, 4), rule(-60, 2, 1, 10)),
    "Asia/Tokyo": ZoneRules(-540, *NO_DST),
    "America/Sao_Paulo": ZoneRules(180, *NO_DST),
    "Europe/Moscow": ZoneRules(-180),  # no StandardTime/DaylightTime at all
}


def hours_of(year: int) -> list[datetime]:
    start = datetime(year, 1, 1, tzinfo=UTC)
    count = (datetime(year + 1, 1, 1) - datetime(year, 1, 1)) // H
    return [start + i * H for i in range(count)]


def mismatches(tz: RuleTimeZone, reference: ZoneInfo, year: int) -> list[str]:
    """Every hour of `year`: UTC → wall (with fold) and wall (fold 0 and 1) → offset."""
    found = []
    for moment in hours_of(year):
        ours, theirs = moment.astimezone(tz), moment.astimezone(reference)
        if (ours.replace(tzinfo=None), ours.fold) != (theirs.replace(tzinfo=None), theirs.fold):
            found.append(f"fromutc {moment}: {ours}/{ours.fold} vs {theirs}/{theirs.fold}")
        wall = moment.replace(tzinfo=None)  # every wall-clock hour, gaps included
        for fold in (0, 1):
            a = wall.replace(tzinfo=tz, fold=fold).utcoffset()
            b = wall.replace(tzinfo=reference, fold=fold).utcoffset()
            if a != b:
                found.append(f"utcoffset {wall} fold={fold}: {a} vs {b}")
    return found


@pytest.mark.parametrize("year", [2024, 2026])
@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_every_hour_matches_zoneinfo(name: str, year: int) -> None:
    assert mismatches(RuleTimeZone(HAND_WRITTEN[name]), ZoneInfo(name), year)[:5] == []


@pytest.mark.parametrize(
    ("rule_", "year", "expected"),
    [
        (rule(0, 2, LAST, 3), 2024, date(2024, 3, 31)),
        (rule(0, 2, LAST, 10), 2026, date(2026, 10, 25)),
        (rule(0, 2, 2, 3), 2024, date(2024, 3, 10)),
        (rule(0, 2, 1, 11), 2026, date(2026, 11, 1)),
        (rule(0, 2, 1, 4), 2024, date(2024, 4, 7)),
        (rule(0, 2, 4, 2), 2026, date(2026, 2, 22)),  # 4th Sunday is also the last
        (rule(0, 2, LAST, 2), 2024, date(2024, 2, 25)),
        (rule(0, 0, 1, 1, 1), 2024, date(2024, 1, 1)),  # first Monday
        (rule(0, 0, LAST, 3, 5), 2024, date(2024, 3, 29)),  # last Friday
    ],
)
def test_day_in_picks_the_nth_or_last_weekday(
    rule_: TransitionRule, year: int, expected: date
) -> None:
    assert rule_.day_in(year) == expected


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 3, 31, 2),
        datetime(2024, 3, 10, 2),
        datetime(2026, 2, 22, 0, 30),
        datetime(2024, 12, 31, 23, 59),
        datetime(2025, 1, 1),
        datetime(2024, 2, 29, 12),
    ],
)
def test_rule_on_selects_the_same_moment_again(moment: datetime) -> None:
    assert rule_on(moment).wall_time_in(moment.year) == moment


@pytest.mark.parametrize(
    "kwargs",
    [
        {"day_order": 0},
        {"day_order": 6},
        {"month": 0},
        {"month": 13},
        {"weekday": 7},
        {"time": timedelta(hours=25)},
        {"time": -H},
        {"bias": 24 * 60},
    ],
)
def test_transition_rule_rejects_out_of_range_values(kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {"bias": 0, "time": H, "day_order": 1, "month": 3, "weekday": SUN}
    values.update(kwargs)
    with pytest.raises(ValueError):
        TransitionRule(**values)  # type: ignore[arg-type]


def test_equal_biases_mean_no_dst() -> None:
    rules = ZoneRules(-60, rule(-60, 3, LAST, 10), rule(-60, 2, LAST, 3))
    assert not rules.has_dst and rules.transitions_utc(2024) is None
    assert RuleTimeZone(rules).utcoffset(datetime(2024, 7, 1)) == 2 * H


def test_standard_bias_is_added_to_the_base_bias() -> None:
    # Unusual but legal: the base bias is 0 and the standard period carries -60.
    rules = ZoneRules(0, rule(-60, 3, LAST, 10), rule(-120, 2, LAST, 3))
    tz = RuleTimeZone(rules)
    assert tz.utcoffset(datetime(2024, 1, 15)) == H
    assert tz.utcoffset(datetime(2024, 7, 15)) == 2 * H


BERLIN = RuleTimeZone(HAND_WRITTEN["Europe/Berlin"])
SYDNEY = RuleTimeZone(HAND_WRITTEN["Australia/Sydney"])


@pytest.mark.parametrize(
    ("tz", "utc", "wall", "fold"),
    [
        (BERLIN, datetime(2024, 10, 27, 0, 30), datetime(2024, 10, 27, 2, 30), 0),
        (BERLIN, datetime(2024, 10, 27, 1, 30), datetime(2024, 10, 27, 2, 30), 1),
        (BERLIN, datetime(2024, 3, 31, 1, 0), datetime(2024, 3, 31, 3, 0), 0),
        (SYDNEY, datetime(2024, 4, 6, 15, 30), datetime(2024, 4, 7, 2, 30), 0),
        (SYDNEY, datetime(2024, 4, 6, 16, 30), datetime(2024, 4, 7, 2, 30), 1),
        (SYDNEY, datetime(2024, 12, 31, 13, 0), datetime(2025, 1, 1, 0, 0), 0),  # DST over new year
    ],
)
def test_fromutc_sets_fold_on_the_repeated_hour(
    tz: RuleTimeZone, utc: datetime, wall: datetime, fold: int
) -> None:
    local = utc.replace(tzinfo=UTC).astimezone(tz)
    assert (local.replace(tzinfo=None), local.fold) == (wall, fold)
    assert local.astimezone(UTC).replace(tzinfo=None) == utc


def test_skipped_hour_reads_with_the_offset_before_the_jump_like_zoneinfo() -> None:
    gap = datetime(2024, 3, 31, 2, 30)
    assert gap.replace(tzinfo=BERLIN).utcoffset() == H  # fold=0: before the jump
    assert gap.replace(tzinfo=BERLIN, fold=1).utcoffset() == 2 * H
    assert gap.replace(tzinfo=BERLIN).astimezone(UTC) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)


def test_dst_tzname_and_value_semantics() -> None:
    summer, winter = datetime(2024, 7, 1, tzinfo=BERLIN), datetime(2024, 1, 1, tzinfo=BERLIN)
    assert (summer.dst(), winter.dst()) == (H, timedelta(0))
    assert (summer.tzname(), winter.tzname()) == ("UTC+02:00", "UTC+01:00")
    assert RuleTimeZone(HAND_WRITTEN["Europe/Berlin"], name="Berlin").tzname(None) == "Berlin"
    assert RuleTimeZone(HAND_WRITTEN["Europe/Berlin"]) == BERLIN and hash(BERLIN) == hash(
        RuleTimeZone(HAND_WRITTEN["Europe/Berlin"])
    )
    assert BERLIN != SYDNEY
    for clone in (pickle.loads(pickle.dumps(BERLIN)), copy.deepcopy(BERLIN)):
        assert clone == BERLIN and clone.utcoffset(datetime(2024, 7, 1)) == 2 * H


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2050, 12, 31)),
    st.sampled_from([BERLIN, SYDNEY, RuleTimeZone(HAND_WRITTEN["America/Los_Angeles"])]),
)
def test_utc_round_trip_is_exact(moment: datetime, tz: RuleTimeZone) -> None:
    aware = moment.replace(tzinfo=UTC)
    local = aware.astimezone(tz)
    assert local.astimezone(UTC) == aware
    assert local.utcoffset() in {tz.rules.std_offset, tz.rules.dst_offset}
