"""The EWS GetUserAvailability answer: results → SOAP.

This module owns what each returned view carries (docs/protocols.md §1), event times written
as naive wall times in the requester's zone, per-mailbox errors that stay per mailbox, and the
freshness header outside the Body. The request is read by `cas.codecs.ews.availability`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, tzinfo

from lxml import etree

from cas.codecs.ews.freshness import FRESHNESS_NS
from cas.codecs.ews.soap import (
    MESSAGES_NS,
    SERVER_VERSION_INFO,
    SOAP_NS,
    TYPES_NS,
    t,
    xml_text,
)
from cas.codecs.ews.suggestions import (
    SUGGESTIONS_RESPONSE,
)
from cas.codecs.ews.timezones import (
    render_zone_rules,
)
from cas.codecs.ews.tzdb import rules_for_year, zone
from cas.errors import (
    MailboxError,
)
from cas.model.availability import (
    AvailabilityRequest,
    FreeBusyView,
    view_for,
)
from cas.model.freebusy import (
    BusyType,
    Event,
    MailboxData,
    Window,
    WorkingHours,
    events_in_window,
    merged_free_busy,
)

# ---- writing ---------------------------------------------------------------------------------

# Request schema versions whose LegacyFreeBusyType has no WorkingElsewhere (Exchange 2013 added
# it). No RequestServerVersion header means Exchange2007 in EWS.
_PRE_2013 = ("Exchange2007", "Exchange2010")


def wire_busy_type(busy_type: BusyType, server_version: str | None) -> BusyType:
    """The busy type a client of `server_version` can read."""
    if busy_type is BusyType.WORKING_ELSEWHERE and (
        server_version is None or server_version.startswith(_PRE_2013)
    ):
        return BusyType.FREE
    return busy_type


def wall_time(moment: datetime, tz: tzinfo) -> str:
    """`moment` as a naive xs:dateTime in `tz` (how EWS writes times in the requester's zone)."""
    return moment.astimezone(tz).replace(tzinfo=None).isoformat(timespec="seconds")


def _bool(value: bool) -> str:
    return "true" if value else "false"


# --- the answer ---------------------------------------------------------------------------------
#
# The answer is written as text, not built as an lxml tree: it is the hot path of every lookup
# and its shape is fixed by the schema. Every text and attribute value goes through `_text` /
# `_attr`, which drop characters XML cannot carry and escape the rest; the schema tests, the
# golden files and exchangelib's own parser check the result.

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_ENVELOPE_START = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}">'
    "<s:Header><t:ServerVersionInfo "
    + " ".join(f'{name}="{value}"' for name, value in SERVER_VERSION_INFO)
    + "/>"
)


def _text(value: str) -> str:
    return xml_text(value).translate(_ESCAPES)


def _attr(value: str) -> str:
    return xml_text(value).translate(_ATTR_ESCAPES)


def _event(out: list[str], event: Event, request: AvailabilityRequest, details: bool) -> None:
    busy = wire_busy_type(event.busy_type, request.server_version).value
    out.append(
        f"<t:CalendarEvent><t:StartTime>{wall_time(event.start, request.tz)}</t:StartTime>"
        f"<t:EndTime>{wall_time(event.end, request.tz)}</t:EndTime><t:BusyType>{busy}</t:BusyType>"
    )
    if details and event.details is not None:
        d = event.details
        out.append("<t:CalendarEventDetails>")
        for name, text in (("ID", d.id), ("Subject", d.subject), ("Location", d.location)):
            if text is not None:
                out.append(f"<t:{name}>{_text(text)}</t:{name}>")
        out.append(
            f"<t:IsMeeting>{_bool(d.is_meeting)}</t:IsMeeting>"
            f"<t:IsRecurring>{_bool(d.is_recurring)}</t:IsRecurring>"
            f"<t:IsException>{_bool(d.is_exception)}</t:IsException>"
            f"<t:IsReminderSet>{_bool(d.is_reminder_set)}</t:IsReminderSet>"
            f"<t:IsPrivate>{_bool(d.is_private)}</t:IsPrivate></t:CalendarEventDetails>"
        )
    out.append("</t:CalendarEvent>")


@functools.lru_cache(maxsize=256)
def _zone_text(timezone_name: str, year: int) -> str | None:
    """The SerializableTimeZone of a zone for a year, as `<t:TimeZone>` text (once per pair)."""
    try:
        rules = rules_for_year(timezone_name, year)
    except ValueError:
        return None
    holder = etree.Element(t("WorkingHours"), nsmap={"t": TYPES_NS})
    rendered: str = etree.tostring(render_zone_rules(holder, rules), encoding="unicode")
    return rendered.replace(f' xmlns:t="{TYPES_NS}"', "", 1)


def _working_hours(out: list[str], hours: WorkingHours, window: Window) -> None:
    try:
        year = window.start.astimezone(zone(hours.timezone)).year
    except ValueError:
        return  # an unknown zone: no WorkingHours rather than wrong ones
    rendered = _zone_text(hours.timezone, year)
    if rendered is None:
        return
    out.append(f"<t:WorkingHours>{rendered}<t:WorkingPeriodArray>")
    for period in hours.periods:
        out.append(
            f"<t:WorkingPeriod><t:DayOfWeek>{' '.join(period.days)}</t:DayOfWeek>"
            f"<t:StartTimeInMinutes>{period.start_minute}</t:StartTimeInMinutes>"
            f"<t:EndTimeInMinutes>{period.end_minute}</t:EndTimeInMinutes></t:WorkingPeriod>"
        )
    out.append("</t:WorkingPeriodArray></t:WorkingHours>")


def _data(out: list[str], request: AvailabilityRequest, data: MailboxData) -> None:
    view = view_for(request.view, data)
    out.append(
        '<m:ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        f"</m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>{view.value}</t:FreeBusyViewType>"
    )
    if view.has_merged:
        merged = data.merged
        if merged is None:
            merged = merged_free_busy(
                data.events, request.window, request.interval_minutes, data.coverage
            )
        out.append(f"<t:MergedFreeBusy>{_text(merged)}</t:MergedFreeBusy>")
    if view.has_events:
        out.append("<t:CalendarEventArray>")
        for event in events_in_window(data.events, request.window):
            _event(out, event, request, view.has_details)
        out.append("</t:CalendarEventArray>")
        if data.working_hours is not None:
            _working_hours(out, data.working_hours, request.window)
    out.append("</m:FreeBusyView>")


def _error(out: list[str], error: MailboxError) -> None:
    text = f"{error.message} (site: {error.site})" if error.site else error.message
    out.append(
        '<m:ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{_text(text)}</m:MessageText>"
        f"<m:ResponseCode>{_text(error.code)}</m:ResponseCode>"
        "<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
    )
    if error.site:
        out.append(
            f'<m:MessageXml><t:Value Name="Site">{_text(error.site)}</t:Value></m:MessageXml>'
        )
    out.append(
        f"</m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>{FreeBusyView.NONE.value}"
        "</t:FreeBusyViewType></m:FreeBusyView>"
    )


def _freshness(out: list[str], results: Sequence[MailboxData | MailboxError]) -> None:
    rows = [
        (i, r.freshness)
        for i, r in enumerate(results)
        if isinstance(r, MailboxData) and r.freshness is not None
    ]
    if not rows:
        return
    out.append(f'<f:Freshness xmlns:f="{FRESHNESS_NS}">')
    for index, f in rows:
        site = f' site="{_attr(f.site)}"' if f.site else ""
        validated = (
            f' validated="{f.validated_seconds:.1f}"' if f.validated_seconds is not None else ""
        )
        version = f' version="{_attr(f.version)}"' if f.version else ""
        out.append(
            f'<f:Mailbox index="{index}" source="{f.source}" age="{f.age_seconds:.1f}"'
            f"{site}{validated}{version}/>"
        )
    out.append("</f:Freshness>")


def render_get_user_availability(
    request: AvailabilityRequest, results: Sequence[MailboxData | MailboxError]
) -> bytes:
    """The GetUserAvailabilityResponse envelope: one FreeBusyResponse per mailbox, in order,
    then the SuggestionsResponse when suggestions were asked for (an error, until they exist).

    A request for suggestions alone has no free/busy part: `results` is then empty."""
    expected = len(request.mailboxes) if request.free_busy else 0
    if len(results) != expected:
        raise ValueError(f"{len(results)} results for {expected} mailboxes; they must pair up")
    out = [_ENVELOPE_START]
    _freshness(out, results)
    out.append("</s:Header><s:Body><m:GetUserAvailabilityResponse>")
    if request.free_busy:
        out.append("<m:FreeBusyResponseArray>")
        for result in results:
            out.append("<m:FreeBusyResponse>")
            if isinstance(result, MailboxError):
                _error(out, result)
            else:
                _data(out, request, result)
            out.append("</m:FreeBusyResponse>")
        out.append("</m:FreeBusyResponseArray>")
    if request.suggestions:
        out.append(SUGGESTIONS_RESPONSE)
    out.append("</m:GetUserAvailabilityResponse></s:Body></s:Envelope>")
    return "".join(out).encode("utf-8")


__all__ = ["render_get_user_availability", "wall_time", "wire_busy_type"]
