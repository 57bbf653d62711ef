"""The request side of the EWS client: an `AvailabilityRequest` as exchangelib writes it.

The window is sent as UTC `Z` instants, so nothing depends on how the server reads the
`TimeZone`; the `TimeZone` element still names the requester's zone, in which the server
writes event times (docs/protocols.md §1). Used by `cas lookup` and node-to-node forwarding.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timezone, tzinfo

from lxml import etree

from cas.codecs.ews.soap import (
    NSMAP,
    m,
    s,
    sub,
    t,
)
from cas.codecs.ews.timezones import (
    iana_to_windows,
    render_serializable_time_zone,
    render_zone_rules,
)
from cas.codecs.ews.tzrules import NO_DST_DAYLIGHT, NO_DST_STANDARD, RuleTimeZone, ZoneRules
from cas.model.availability import AvailabilityRequest, FreeBusyView
from cas.model.freebusy import (
    WEEKDAYS,
)

FALLBACK_CODE = "ErrorFreeBusyGenerationFailed"
_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}
# EWS DaysOfWeekType also allows these group names (MS-OXWSCDATA DayOfWeekType).
_DAY_GROUPS = {
    "Day": WEEKDAYS,
    "Weekday": WEEKDAYS[1:6],
    "WeekendDay": (WEEKDAYS[6], WEEKDAYS[0]),
}
_MERGED = re.compile(r"^[0-4]*$")


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fixed_rules(tz: tzinfo) -> ZoneRules:
    offset = tz.utcoffset(None)
    if offset is None:
        raise ValueError(f"time zone {tz!r} has no fixed UTC offset to send")
    return ZoneRules(-int(offset.total_seconds() // 60), NO_DST_STANDARD, NO_DST_DAYLIGHT)


def _render_time_zone(parent: etree._Element, request: AvailabilityRequest) -> str | None:
    """Append the request's SerializableTimeZone; return its Windows id when one is known."""
    tz = request.tz
    if isinstance(tz, RuleTimeZone):
        render_zone_rules(parent, tz.rules)
        return None
    key = getattr(tz, "key", None)
    if isinstance(key, str) and key:
        year = request.window.start.astimezone(tz).year
        render_serializable_time_zone(parent, key, year)
        return iana_to_windows(key)
    if isinstance(tz, timezone):
        rules = _fixed_rules(tz)
        render_zone_rules(parent, rules)
        return "UTC" if rules.bias == 0 else None
    raise ValueError(
        f"cannot describe time zone {tz!r} to EWS: use a zoneinfo zone, a RuleTimeZone or a "
        "fixed offset"
    )


def render_get_user_availability_request(
    request: AvailabilityRequest, *, server_version: str = "Exchange2016"
) -> bytes:
    """The whole SOAP envelope of a GetUserAvailabilityRequest for `request`."""
    if request.view is FreeBusyView.NONE:
        raise ValueError("RequestedView None is not valid in a request")
    env = etree.Element(s("Envelope"), nsmap=NSMAP)
    header = sub(env, s("Header"))
    sub(header, t("RequestServerVersion"), None, {"Version": server_version})
    operation = sub(sub(env, s("Body")), m("GetUserAvailabilityRequest"))
    windows_id = _render_time_zone(operation, request)
    if windows_id:
        context = sub(header, t("TimeZoneContext"))
        sub(context, t("TimeZoneDefinition"), None, {"Id": windows_id})
    array = sub(operation, m("MailboxDataArray"))
    for query in request.mailboxes:
        item = sub(array, t("MailboxData"))
        email = sub(item, t("Email"))
        if query.name:
            sub(email, t("Name"), query.name)
        sub(email, t("Address"), query.address)
        sub(email, t("RoutingType"), query.routing_type)
        sub(item, t("AttendeeType"), query.attendee_type)
        sub(item, t("ExcludeConflicts"), "1" if query.exclude_conflicts else "0")
    options = sub(operation, t("FreeBusyViewOptions"))
    window = sub(options, t("TimeWindow"))
    sub(window, t("StartTime"), _utc(request.window.start))
    sub(window, t("EndTime"), _utc(request.window.end))
    sub(options, t("MergedFreeBusyIntervalInMinutes"), str(request.interval_minutes))
    sub(options, t("RequestedView"), request.view.value)
    out: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
    return out
