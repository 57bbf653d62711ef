"""Rules derived from the IANA database: exact for their year, grouped where years agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cas.codecs.ews.tzdb import rule_groups, rules_for_year, shifts_in
from cas.codecs.ews.tzrules import LAST, RuleTimeZone

H = timedelta(hours=1)


def offsets_differ(name: str, year: int, step: timedelta = H) -> list[str]:
    """UTC instants of `year` (every `step`) where the derived rules disagree with zoneinfo."""
    tz, reference = RuleTimeZone(rules_for_year(name, year)), ZoneInfo(name)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    found = []
    while moment < end:
        if moment.astimezone(tz).utcoffset() != moment.astimezone(reference).utcoffset():
            found.append(moment.isoformat())
        moment += step
    return found


CASES = [
    ("Europe/Berlin", 2024),
    ("America/Los_Angeles", 2026),
    ("Australia/Sydney", 2024),  # daylight time over the new year
    ("America/Sao_Paulo", 2018),  # southern DST, abolished in 2019
    ("America/Asuncion", 2024),  # last year with DST
    ("America/Asuncion", 2026),  # permanent UTC-3
    ("Africa/Casablanca", 2024),  # "negative DST" in Ramadan
    ("Africa/Cairo", 2024),  # DST reintroduced in 2023
    ("Asia/Almaty", 2024),  # one switch only: UTC+6 -> UTC+5 on 1 March
    ("America/Nuuk", 2024),  # switches on Saturday evening local time
    ("Australia/Lord_Howe", 2024),  # 30-minute DST
    ("Pacific/Chatham", 2026),  # UTC+12:45
    ("Europe/Dublin", 2024),  # negative DST in IANA, ordinary DST for Windows
    ("Asia/Jerusalem", 2026),  # Friday before the last Sunday
    ("Europe/Moscow", 2011),  # moved to permanent UTC+4 in March 2011
    ("Asia/Tokyo", 2024),
    ("Etc/UTC", 2026),
]


@pytest.mark.parametrize(("name", "year"), CASES)
def test_derived_rules_are_exact_for_their_year(name: str, year: int) -> None:
    assert offsets_differ(name, year)[:5] == []


def test_berlin_rules_are_the_published_windows_rules() -> None:
    rules = rules_for_year("Europe/Berlin", 2024)
    assert rules.bias == -60
    assert rules.standard is not None and rules.daylight is not None
    std, dst = rules.standard, rules.daylight
    assert (std.bias, std.time, std.day_order, std.month, std.weekday_name) == (
        0,
        3 * H,
        LAST,
        10,
        "Sunday",
    )
    assert (dst.bias, dst.time, dst.day_order, dst.month, dst.weekday_name) == (
        -60,
        2 * H,
        LAST,
        3,
        "Sunday",
    )


def test_zones_without_dst_use_exchangelib_dummies() -> None:
    rules = rules_for_year("Asia/Tokyo", 2026)
    assert rules.bias == -540 and not rules.has_dst
    assert rules.standard is not None and rules.daylight is not None
    assert (rules.standard.month, rules.standard.day_order, rules.standard.weekday_name) == (
        1,
        1,
        "Monday",
    )
    assert (rules.daylight.month, rules.daylight.day_order, rules.daylight.weekday_name) == (
        12,
        LAST,
        "Sunday",
    )
    assert rules.standard.bias == rules.daylight.bias == 0


def test_shifts_are_found_to_the_minute() -> None:
    shifts = shifts_in("America/Los_Angeles", 2024)
    assert [(s.at, s.before, s.after) for s in shifts] == [
        (datetime(2024, 3, 10, 10), -8 * H, -7 * H),
        (datetime(2024, 11, 3, 9), -7 * H, -8 * H),
    ]
    assert [s.wall for s in shifts] == [datetime(2024, 3, 10, 2), datetime(2024, 11, 3, 2)]


def test_groups_merge_years_with_the_same_instants() -> None:
    assert [year for year, _ in rule_groups("Europe/Berlin", 2016, 2031)] == [2016]
    asuncion = rule_groups("America/Asuncion", 2016, 2031)
    assert [year for year, _ in asuncion] == [2016, 2019, 2025]
    assert asuncion[-1][1].has_dst is False and asuncion[0][1].has_dst is True


def test_unknown_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        rules_for_year("Mars/Olympus_Mons", 2024)
