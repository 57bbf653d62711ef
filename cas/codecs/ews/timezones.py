"""EWS time-zone wire formats: SerializableTimeZone, Windows zone ids and GetServerTimeZones.

This module owns reading a request's `t:TimeZone` into a `RuleTimeZone`, writing an IANA zone's
rules for one year as a `SerializableTimeZone` (WorkingHours), the Windows ↔ IANA id mapping
(from `tzlocal.windows_tz`, a dependency) and the GetServerTimeZones operation, whose answer
exchangelib turns into the `TimeZone` of its next GetUserAvailability request
(docs/protocols.md §6).

GetServerTimeZones answers one `TimeZoneDefinition` per Windows id with one transition group per
run of years that share rules (`tzdb.rule_groups`), from `year - YEARS_BACK` to
`year + YEARS_AHEAD`. Group ids are the run's first year, so exchangelib (which sorts the
`Transitions` by their target id as a string) meets them in time order and picks the group of
the window's year. Known ids share one Success message; if any requested id is unknown, every
id gets its own message in request order and the unknown ones are `ErrorTimeZone` errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from zoneinfo import ZoneInfo

from lxml import etree
from tzlocal.windows_tz import tz_win, win_tz

from cas.codecs.ews.soap import (
    SoapRequest,
    child,
    children,
    element,
    local_name,
    m,
    render_envelope,
    sub,
    t,
    text_of,
)
from cas.codecs.ews.tzdb import rule_groups, rules_for_year, standard_offset, zone
from cas.codecs.ews.tzrules import (
    LAST,
    NO_DST_DAYLIGHT,
    NO_DST_STANDARD,
    RuleTimeZone,
    TransitionRule,
    ZoneRules,
)
from cas.errors import InvalidValue
from cas.model.freebusy import WEEKDAYS

YEARS_BACK = 10
YEARS_AHEAD = 5

# ---- Windows ids ------------------------------------------------------------------------------


def windows_to_iana(windows_id: str) -> str | None:
    """The IANA zone for a Windows zone id (`W. Europe Standard Time` → `Europe/Berlin`)."""
    return win_tz.get(windows_id.strip())


def iana_to_windows(name: str) -> str | None:
    """The Windows zone id for an IANA zone name, or None if CLDR has no mapping."""
    return tz_win.get(name.strip())


def zone_for_windows_id(windows_id: str) -> tzinfo | None:
    """A `zoneinfo` zone for a Windows id (the TimeZoneContext fallback), or None."""
    name = windows_to_iana(windows_id)
    return ZoneInfo(name) if name else None


# ---- SerializableTimeZone ---------------------------------------------------------------------

_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$")


def _int(parent: etree._Element, name: str, default: int | None = None) -> int:
    text = text_of(parent, name)
    if text is None or text == "":
        if default is not None:
            return default
        raise InvalidValue(f"{local_name(parent)} has no {name} element.")
    try:
        return int(text)
    except ValueError:
        where = f"{local_name(parent)}/{name}"
        raise InvalidValue(f"{where} must be an integer, got {text!r}.") from None


def _parse_transition(elem: etree._Element) -> TransitionRule | None:
    """One StandardTime/DaylightTime; None for Windows' "no transition" (Month 0)."""
    where = local_name(elem)
    month = _int(elem, "Month")
    if month == 0:
        return None
    day_order = _int(elem, "DayOrder")
    if day_order == -1:  # some servers write -1 for "last" (docs/protocols.md §6)
        day_order = LAST
    time_text = text_of(elem, "Time") or ""
    match = _TIME.match(time_text)
    weekday = text_of(elem, "DayOfWeek") or ""
    if match is None:
        raise InvalidValue(f"{where}/Time must be hh:mm:ss, got {time_text!r}.")
    if weekday not in WEEKDAYS:
        raise InvalidValue(f"{where}/DayOfWeek must be a day name, got {weekday!r}.")
    year_text = text_of(elem, "Year")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    try:
        return TransitionRule(
            bias=_int(elem, "Bias", 0),
            time=timedelta(hours=hours, minutes=minutes, seconds=seconds),
            day_order=day_order,
            month=month,
            weekday=WEEKDAYS.index(weekday),
            year=int(year_text) if year_text and year_text.isdigit() else None,
        )
    except ValueError as exc:
        raise InvalidValue(f"{where}: {exc}.") from None


def parse_serializable_time_zone(elem: etree._Element) -> RuleTimeZone:
    """A request's `t:TimeZone` as a tzinfo; the raw values stay in `.rules`.

    Clients send the same zone with every request, so the result is kept per canonical form
    of the element (a bounded cache; a RuleTimeZone is immutable and safe to share).
    """
    return _parse_serializable_time_zone_cached(etree.tostring(elem, method="c14n"), elem)


_ZONE_CACHE: dict[bytes, RuleTimeZone] = {}
_ZONE_CACHE_SIZE = 256


def _parse_serializable_time_zone_cached(key: bytes, elem: etree._Element) -> RuleTimeZone:
    found = _ZONE_CACHE.get(key)
    if found is None:
        found = _parse_serializable_time_zone(elem)
        if len(_ZONE_CACHE) >= _ZONE_CACHE_SIZE:
            _ZONE_CACHE.pop(next(iter(_ZONE_CACHE)))
        _ZONE_CACHE[key] = found
    return found


def _parse_serializable_time_zone(elem: etree._Element) -> RuleTimeZone:
    standard_elem, daylight_elem = child(elem, "StandardTime"), child(elem, "DaylightTime")
    standard = _parse_transition(standard_elem) if standard_elem is not None else None
    daylight = _parse_transition(daylight_elem) if daylight_elem is not None else None
    if standard is None or daylight is None:
        standard = daylight = None
    try:
        rules = ZoneRules(_int(elem, "Bias"), standard, daylight)
    except ValueError as exc:
        raise InvalidValue(f"TimeZone: {exc}.") from None
    return RuleTimeZone(rules)


def _clock(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render_zone_rules(
    parent: etree._Element, rules: ZoneRules, tag: str = "TimeZone"
) -> etree._Element:
    """Append `rules` as a SerializableTimeZone element `t:<tag>` to `parent`."""
    tz_elem = sub(parent, t(tag))
    sub(tz_elem, t("Bias"), str(rules.bias))
    for name, rule in (("StandardTime", rules.standard), ("DaylightTime", rules.daylight)):
        if rule is None:  # the schema requires both; equal biases say "no DST"
            rule = NO_DST_STANDARD if name == "StandardTime" else NO_DST_DAYLIGHT
        part = sub(tz_elem, t(name))
        sub(part, t("Bias"), str(rule.bias))
        sub(part, t("Time"), _clock(rule.time))
        sub(part, t("DayOrder"), str(rule.day_order))
        sub(part, t("Month"), str(rule.month))
        sub(part, t("DayOfWeek"), rule.weekday_name)
        if rule.year is not None:
            sub(part, t("Year"), str(rule.year))
    return tz_elem


def render_serializable_time_zone(
    parent: etree._Element, tz_name_iana: str, year: int, tag: str = "TimeZone"
) -> etree._Element:
    """Append the SerializableTimeZone of IANA zone `tz_name_iana` in `year`.

    Raises ValueError for a zone the IANA database does not know.
    """
    return render_zone_rules(parent, rules_for_year(tz_name_iana, year), tag)


# ---- GetServerTimeZones -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeZonesQuery:
    """Which Windows zone ids a client asks for (None = all) and whether with full data."""

    ids: tuple[str, ...] | None = None
    return_full_data: bool = True


_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}


def parse_get_server_time_zones(req: SoapRequest) -> TimeZonesQuery:
    elem = req.element
    if elem.tag != m("GetServerTimeZones"):
        raise InvalidValue(f"Expected m:GetServerTimeZones, got {elem.tag}.")
    flag = (elem.get("ReturnFullTimeZoneData") or "true").strip().lower()
    if flag not in _BOOLEAN:
        raise InvalidValue(f"ReturnFullTimeZoneData must be a boolean, got {flag!r}.")
    ids_elem = child(elem, "Ids")
    ids = None
    if ids_elem is not None:
        ids = tuple((i.text or "").strip() for i in children(ids_elem, "Id")) or None
    return TimeZonesQuery(ids, _BOOLEAN[flag])


def _duration(offset: timedelta) -> str:
    """An xs:duration in minutes (seconds only if needed): PT180M, -PT60M."""
    seconds = int(offset.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    tail = f"{seconds % 60}S" if seconds % 60 else ""
    return f"{sign}PT{seconds // 60}M{tail}"


def _offset_label(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _period_id(kind: str, offset: timedelta) -> str:
    return f"{kind}/{_offset_label(offset)}"


def display_name(iana: str, year: int) -> str:
    return f"({_offset_label(standard_offset(iana, year))}) {iana}"


def _recurring(parent: etree._Element, period: str, rule: TransitionRule) -> None:
    transition = sub(parent, t("RecurringDayTransition"))
    sub(transition, t("To"), period, {"Kind": "Period"})
    sub(transition, t("TimeOffset"), _duration(rule.time))
    sub(transition, t("Month"), str(rule.month))
    sub(transition, t("DayOfWeek"), rule.weekday_name)
    sub(transition, t("Occurrence"), "-1" if rule.day_order == LAST else str(rule.day_order))


def render_time_zone_definition(
    parent: etree._Element, windows_id: str, iana: str, year: int, *, full: bool = True
) -> etree._Element:
    """Append the `t:TimeZoneDefinition` of `windows_id` (rules of IANA zone `iana`)."""
    attrib = {"Id": windows_id, "Name": display_name(iana, year)}
    definition = sub(parent, t("TimeZoneDefinition"), None, attrib)
    if not full:
        return definition
    groups = rule_groups(iana, year - YEARS_BACK, year + YEARS_AHEAD)
    periods = sub(definition, t("Periods"))
    seen: set[str] = set()
    for _, rules in groups:
        kinds = [("Standard", "Std", rules.std_offset)]
        if rules.has_dst:
            kinds.append(("Daylight", "Dlt", rules.dst_offset))
        for name, kind, offset in kinds:
            period_id = _period_id(kind, offset)
            if period_id not in seen:
                seen.add(period_id)
                attrib = {"Bias": _duration(-offset), "Name": name, "Id": period_id}
                sub(periods, t("Period"), None, attrib)
    groups_elem = sub(definition, t("TransitionsGroups"))
    for first_year, rules in groups:
        group = sub(groups_elem, t("TransitionsGroup"), None, {"Id": str(first_year)})
        std_id = _period_id("Std", rules.std_offset)
        if rules.has_dst and rules.standard is not None and rules.daylight is not None:
            _recurring(group, std_id, rules.standard)
            _recurring(group, _period_id("Dlt", rules.dst_offset), rules.daylight)
        else:
            sub(sub(group, t("Transition")), t("To"), std_id, {"Kind": "Period"})
    transitions = sub(definition, t("Transitions"))
    for index, (first_year, _) in enumerate(groups):
        if index == 0:
            sub(sub(transitions, t("Transition")), t("To"), str(first_year), {"Kind": "Group"})
        else:
            moved = sub(transitions, t("AbsoluteDateTransition"))
            sub(moved, t("To"), str(first_year), {"Kind": "Group"})
            sub(moved, t("DateTime"), f"{first_year:04d}-01-01T00:00:00")
    return definition


def _message(parent: etree._Element, error: str | None) -> etree._Element:
    attrib = {"ResponseClass": "Error" if error else "Success"}
    msg = sub(parent, m("GetServerTimeZonesResponseMessage"), None, attrib)
    if error:
        sub(msg, m("MessageText"), error)
        sub(msg, m("ResponseCode"), "ErrorTimeZone")
        sub(msg, m("DescriptiveLinkKey"), "0")
    else:
        sub(msg, m("ResponseCode"), "NoError")
    return sub(msg, m("TimeZoneDefinitions"))


def _known(windows_id: str) -> str | None:
    iana = windows_to_iana(windows_id)
    if iana is None:
        return None
    try:
        zone(iana)
    except ValueError:
        return None
    return iana


def render_get_server_time_zones(query: TimeZonesQuery, *, year: int) -> bytes:
    """The full GetServerTimeZonesResponse envelope for `query`, with rules around `year`."""
    response = element(m("GetServerTimeZonesResponse"))
    messages = sub(response, m("ResponseMessages"))
    if query.ids is None:
        known = sorted(
            ((wid, iana) for wid in win_tz if (iana := _known(wid))),
            key=lambda pair: (standard_offset(pair[1], year), pair[0]),
        )
        targets: list[tuple[str, str | None]] = list(known)
    else:
        targets = [(wid, _known(wid)) for wid in query.ids]
    if all(iana is not None for _, iana in targets):
        definitions = _message(messages, None)
        for wid, iana in targets:
            assert iana is not None
            render_time_zone_definition(definitions, wid, iana, year, full=query.return_full_data)
    else:  # one message per id, in order, so the known ones are still answered
        for wid, iana in targets:
            if iana is None:
                _message(messages, f"The time zone id {wid!r} is not known to this server.")
            else:
                definitions = _message(messages, None)
                render_time_zone_definition(
                    definitions, wid, iana, year, full=query.return_full_data
                )
    return render_envelope(response)


__all__ = [
    "YEARS_AHEAD",
    "YEARS_BACK",
    "TimeZonesQuery",
    "display_name",
    "iana_to_windows",
    "parse_get_server_time_zones",
    "parse_serializable_time_zone",
    "render_get_server_time_zones",
    "render_serializable_time_zone",
    "render_time_zone_definition",
    "render_zone_rules",
    "windows_to_iana",
    "zone_for_windows_id",
]
