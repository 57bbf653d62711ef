"""The EWS GetUserAvailability request: SOAP → `AvailabilityRequest`.

This module owns how free/busy questions are read (docs/protocols.md §1, §6): window times
(naive = wall time in the request's `TimeZone`, `Z` or an offset = that instant), mailboxes,
views and options. It checks types, not limits (`cas.model.availability.check_limits` does
that). The answer is written by `cas.codecs.ews.answer`.
"""

from __future__ import annotations

from datetime import UTC, tzinfo

from lxml import etree

from cas.codecs.ews.soap import (
    SoapRequest,
    child,
    children,
    m,
    require,
    text_of,
)
from cas.codecs.ews.suggestions import (
    parse_suggestions_window,
    wants_suggestions,
)
from cas.codecs.ews.times import parse_datetime
from cas.codecs.ews.timezones import (
    parse_serializable_time_zone,
    zone_for_windows_id,
)
from cas.errors import (
    InvalidFreeBusyViewType,
    InvalidTimeInterval,
    InvalidValue,
)
from cas.model.availability import (
    VIEW_CONTENTS,
    AvailabilityRequest,
    FreeBusyView,
    MailboxQuery,
)
from cas.model.freebusy import (
    Window,
)

DEFAULT_INTERVAL_MINUTES = 30
# RequestedView is optional in the schema; the EWS Managed API's default is Detailed.
DEFAULT_VIEW = FreeBusyView.DETAILED
ATTENDEE_TYPES = ("Organizer", "Required", "Optional", "Room", "Resource")
_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}
_INVALID_WINDOW = "The time duration specified for FreeBusyViewOptions.TimeWindow is invalid."

# ---- reading ---------------------------------------------------------------------------------


def _boolean(text: str | None, where: str, default: bool) -> bool:
    if text is None or text == "":
        return default
    try:
        return _BOOLEAN[text.lower()]
    except KeyError:
        raise InvalidValue(f"{where} must be a boolean (true/false/1/0), got {text!r}.") from None


def _request_tz(elem: etree._Element, req: SoapRequest) -> tzinfo:
    """The body's TimeZone; else the TimeZoneContext header's zone; else UTC."""
    tz_elem = child(elem, "TimeZone")
    if tz_elem is not None:
        return parse_serializable_time_zone(tz_elem)
    if req.tz_context:
        context = zone_for_windows_id(req.tz_context)
        if context is not None:
            return context
    return UTC


def _mailbox(elem: etree._Element) -> MailboxQuery:
    email = require(elem, "Email")
    address = text_of(email, "Address")
    if not address:
        raise InvalidValue("MailboxData/Email/Address is missing or empty.")
    attendee = text_of(elem, "AttendeeType") or "Required"
    if attendee not in ATTENDEE_TYPES:
        raise InvalidValue(
            f"MailboxData/AttendeeType must be one of {', '.join(ATTENDEE_TYPES)}, "
            f"got {attendee!r}."
        )
    return MailboxQuery(
        address=address,
        attendee_type=attendee,
        exclude_conflicts=_boolean(
            text_of(elem, "ExcludeConflicts"), "MailboxData/ExcludeConflicts", False
        ),
        routing_type=text_of(email, "RoutingType") or "SMTP",
        name=text_of(email, "Name") or None,
    )


_VIEW_BY_CONTENTS = {contents: view for view, contents in VIEW_CONTENTS.items()}


def _requested_view(text: str | None) -> FreeBusyView:
    """RequestedView; the schema makes it a list, so several names combine their contents."""
    if text is None:
        return DEFAULT_VIEW
    names = text.split()
    merged = events = details = False
    for name in names:
        try:
            view = FreeBusyView(name)
        except ValueError:
            allowed = ", ".join(v.value for v in FreeBusyView if v is not FreeBusyView.NONE)
            raise InvalidValue(
                f"FreeBusyViewOptions/RequestedView must be one of {allowed}, got {name!r}."
            ) from None
        merged, events, details = (
            merged or view.has_merged,
            events or view.has_events,
            details or view.has_details,
        )
    if not (merged or events):
        raise InvalidFreeBusyViewType(
            f"RequestedView {text.strip() or '(empty)'!r} is not valid in a request; ask for "
            "MergedOnly, FreeBusy, FreeBusyMerged, Detailed or DetailedMerged."
        )
    return _VIEW_BY_CONTENTS[(merged, events or details, details)]


def _view_options(options: etree._Element, tz: tzinfo) -> tuple[Window, int, FreeBusyView]:
    window_elem = require(options, "TimeWindow")
    times = []
    for name in ("StartTime", "EndTime"):
        text = text_of(window_elem, name)
        if text is None:
            raise InvalidValue(f"FreeBusyViewOptions/TimeWindow has no {name} element.")
        times.append(parse_datetime(text, f"TimeWindow/{name}", tz))
    start, end = times
    if not start < end:
        raise InvalidTimeInterval(_INVALID_WINDOW)
    interval_text = text_of(options, "MergedFreeBusyIntervalInMinutes")
    if interval_text is None or interval_text == "":
        interval = DEFAULT_INTERVAL_MINUTES
    else:
        try:
            interval = int(interval_text)
        except ValueError:
            raise InvalidValue(
                "FreeBusyViewOptions/MergedFreeBusyIntervalInMinutes must be an integer, "
                f"got {interval_text!r}."
            ) from None
    return Window(start, end), interval, _requested_view(text_of(options, "RequestedView"))


def parse_get_user_availability(req: SoapRequest) -> AvailabilityRequest:
    """The availability question in a GetUserAvailabilityRequest (limits not applied)."""
    elem = req.element
    if elem.tag != m("GetUserAvailabilityRequest"):
        raise InvalidValue(f"Expected m:GetUserAvailabilityRequest, got {elem.tag}.")
    tz = _request_tz(elem, req)
    array = child(elem, "MailboxDataArray")
    if array is None:
        raise InvalidValue("GetUserAvailabilityRequest has no MailboxDataArray element.")
    mailboxes = tuple(_mailbox(md) for md in children(array, "MailboxData"))
    suggestions = wants_suggestions(elem)
    options = child(elem, "FreeBusyViewOptions")
    if options is None:
        if not suggestions:
            raise InvalidValue(
                "GetUserAvailabilityRequest has neither FreeBusyViewOptions nor "
                "SuggestionsViewOptions."
            )
        window = parse_suggestions_window(elem, tz)
        return AvailabilityRequest(
            mailboxes,
            window,
            DEFAULT_INTERVAL_MINUTES,
            FreeBusyView.NONE,
            tz,
            req.server_version,
            free_busy=False,
            suggestions=True,
        )
    window, interval, view = _view_options(options, tz)
    return AvailabilityRequest(
        mailboxes, window, interval, view, tz, req.server_version, suggestions=suggestions
    )


__all__ = [
    "ATTENDEE_TYPES",
    "DEFAULT_INTERVAL_MINUTES",
    "DEFAULT_VIEW",
    "parse_get_user_availability",
]
