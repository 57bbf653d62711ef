"""The client side of EWS GetUserAvailability: an `AvailabilityRequest` out, results back in.

Pure functions over lxml and the model, no I/O; used by `cas lookup` and by node-to-node
forwarding. The request is written the way exchangelib 5.6.0 writes it (docs/protocols.md
§1), except that the window is sent as UTC `Z` instants, so nothing depends on how the server
reads the `TimeZone`. The answer becomes one `MailboxData | MailboxError` per
`FreeBusyResponse`, in order; naive event times are wall times in the request's zone.

Errors, as a tree::

    EwsClientError                  the answer cannot be used as a whole
    ├── EwsFaultError(code, message)    the server answered with a SOAP fault
    └── EwsProtocolError                not XML, not SOAP, not this operation, wrong counts

Trouble inside one mailbox's view (an unreadable date, an unknown busy type) costs only that
mailbox: it becomes `ErrorFreeBusyGenerationFailed` with the reason, never free time.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import tzinfo
from functools import lru_cache

from lxml import etree
from tzlocal.windows_tz import tz_win, win_tz

from cas.codecs.ews.client_request import render_get_user_availability_request
from cas.codecs.ews.freshness import parse_freshness_header
from cas.codecs.ews.soap import (
    ERRORS_NS,
    SOAP_NS,
    TYPES_NS,
    child,
    children,
    local_name,
    m,
    s,
    text_of,
)
from cas.codecs.ews.times import parse_datetime
from cas.codecs.ews.timezones import (
    parse_serializable_time_zone,
)
from cas.codecs.ews.tzdb import rules_for_year
from cas.codecs.ews.tzrules import ZoneRules
from cas.codecs.ews.xmlsafe import declares_dtd
from cas.errors import MAILBOX_ERROR_CODES, CasError, MailboxError, RequestFault
from cas.model.availability import AvailabilityRequest, FreeBusyView
from cas.model.freebusy import (
    WEEKDAYS,
    BusyType,
    Event,
    EventDetails,
    MailboxData,
    WorkingHours,
    WorkingPeriod,
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


class EwsClientError(CasError):
    """An EWS answer that cannot be used as a whole."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EwsProtocolError(EwsClientError):
    """The answer is not XML, not SOAP, not a GetUserAvailabilityResponse, or miscounted."""


class EwsFaultError(EwsClientError):
    """The server refused the whole request with a SOAP fault carrying an EWS `code`."""

    def __init__(self, code: str, message: str, back_off_ms: int = 0) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.back_off_ms = back_off_ms  # `BackOffMilliseconds` of an ErrorServerBusy fault


def parse_answer_xml(body: bytes, *, error: type[Exception] = EwsProtocolError) -> etree._Element:
    """The root of an untrusted answer: no DTD, no entities, no network; `error` otherwise."""
    if not body or not body.strip():
        raise error("The answer is empty; a SOAP envelope was expected.")
    if declares_dtd(body):
        raise error("The answer declares a DTD, which SOAP forbids; it was not read.")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
        remove_comments=True, remove_pis=True,
    )  # fmt: skip
    try:
        root = etree.fromstring(body, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise error(f"The answer is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise error("The answer declares a DTD, which SOAP forbids; it was not read.")
    return root


def first_body_element(envelope: etree._Element) -> etree._Element | None:
    """The first element inside a SOAP 1.1 envelope's Body, or None."""
    body = envelope.find(s("Body"))
    return None if body is None else next((c for c in body if isinstance(c.tag, str)), None)


# ---- the response -----------------------------------------------------------------------------


class _Unreadable(CasError):
    """One mailbox's view cannot be read; it becomes that mailbox's error."""


def _fault(fault: etree._Element) -> EwsFaultError:
    detail = fault.find("detail")
    code = message = None
    if detail is not None:
        code = (detail.findtext(f"{{{ERRORS_NS}}}ResponseCode") or "").strip() or None
        message = (detail.findtext(f"{{{ERRORS_NS}}}Message") or "").strip() or None
    if code is None:
        raw = (fault.findtext("faultcode") or "").strip()
        code = raw.rpartition(":")[2] or "ErrorInternalServerError"
    if message is None:
        message = (fault.findtext("faultstring") or "").strip()
    back_off = 0
    if detail is not None:
        for value in detail.iter(f"{{{TYPES_NS}}}Value"):
            text = (value.text or "").strip()
            if value.get("Name") == "BackOffMilliseconds" and text.isdigit():
                back_off = min(int(text), 600_000)
    return EwsFaultError(code, message, back_off)


def _boolean(elem: etree._Element, name: str) -> bool:
    text = text_of(elem, name)
    if not text:
        return False
    try:
        return _BOOLEAN[text.lower()]
    except KeyError:
        raise _Unreadable(f"{name} must be a boolean, got {text!r}") from None


def _details(elem: etree._Element) -> EventDetails:
    return EventDetails(
        id=text_of(elem, "ID") or None,
        subject=text_of(elem, "Subject") or None,
        location=text_of(elem, "Location") or None,
        is_meeting=_boolean(elem, "IsMeeting"),
        is_recurring=_boolean(elem, "IsRecurring"),
        is_exception=_boolean(elem, "IsException"),
        is_reminder_set=_boolean(elem, "IsReminderSet"),
        is_private=_boolean(elem, "IsPrivate"),
    )


def _event(elem: etree._Element, tz: tzinfo) -> Event:
    times = []
    for name in ("StartTime", "EndTime"):
        text = text_of(elem, name)
        if not text:
            raise _Unreadable(f"a CalendarEvent has no {name}")
        try:
            times.append(parse_datetime(text, f"CalendarEvent/{name}", tz))
        except RequestFault as exc:
            raise _Unreadable(exc.message) from None
    busy_text = text_of(elem, "BusyType") or ""
    try:
        busy = BusyType(busy_text)
    except ValueError:
        raise _Unreadable(f"unknown CalendarEvent/BusyType {busy_text!r}") from None
    info = child(elem, "CalendarEventDetails")
    try:
        return Event(times[0], times[1], busy, _details(info) if info is not None else None)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None


@lru_cache(maxsize=1)
def _cldr_zones() -> list[str]:
    """CLDR's zone for each Windows id, regional variants ("... (Mexico)") last and otherwise
    the ids with the most IANA aliases first, so Europe/Berlin comes before Europe/Budapest and
    America/Los_Angeles before America/Tijuana. A heuristic: equal rules are equal answers."""
    aliases = Counter(tz_win.values())
    ids = sorted(win_tz, key=lambda wid: ("(" in wid, -aliases[wid], wid))
    return list(dict.fromkeys(win_tz[wid] for wid in ids))


@lru_cache(maxsize=256)
def _iana_for(rules: ZoneRules, year: int, hint: str | None) -> str | None:
    """An IANA zone whose rules in `year` equal `rules`: `hint` first; for a zone without DST
    the honest `UTC` / `Etc/GMT±h`; else the first of CLDR's zones that matches."""
    candidates = [hint] if hint else []
    if not rules.has_dst:
        hours, rest = divmod(-rules.bias, 60)
        if rules.bias == 0:
            candidates.append("UTC")
        elif rest == 0 and -14 <= hours <= 12:
            candidates.append(f"Etc/GMT{-hours:+d}")  # POSIX signs: Etc/GMT-9 is UTC+9
    candidates += _cldr_zones()
    for name in candidates:
        try:
            if rules_for_year(name, year).equivalent_in(rules, year):
                return name
        except ValueError:
            continue
    return None


def _working_hours(elem: etree._Element, request: AvailabilityRequest) -> WorkingHours | None:
    """The mailbox owner's working hours, or None when the zone or periods cannot be named."""
    tz_elem = child(elem, "TimeZone")
    if tz_elem is None:
        return None
    try:
        rules = parse_serializable_time_zone(tz_elem).rules
        periods = []
        array = child(elem, "WorkingPeriodArray")
        for period in children(array if array is not None else elem, "WorkingPeriod"):
            days: list[str] = []
            for word in (text_of(period, "DayOfWeek") or "").split():
                days += _DAY_GROUPS.get(word, (word,))
            periods.append(
                WorkingPeriod(
                    tuple(dict.fromkeys(days)),
                    int(text_of(period, "StartTimeInMinutes") or ""),
                    int(text_of(period, "EndTimeInMinutes") or ""),
                )
            )
    except (RequestFault, ValueError):
        return None
    hint = getattr(request.tz, "key", None)
    name = _iana_for(rules, request.window.start.year, hint if isinstance(hint, str) else None)
    return WorkingHours(name, tuple(periods)) if name and periods else None


def _view(view: etree._Element, request: AvailabilityRequest) -> MailboxData:
    type_text = (text_of(view, "FreeBusyViewType") or "").split()
    try:
        kind = FreeBusyView(type_text[0]) if type_text else FreeBusyView.NONE
    except ValueError:
        raise _Unreadable(f"unknown FreeBusyViewType {type_text[0]!r}") from None
    merged = text_of(view, "MergedFreeBusy")
    if merged is not None and not _MERGED.match(merged):
        raise _Unreadable(f"MergedFreeBusy must be digits 0-4, got {merged[:40]!r}")
    array = child(view, "CalendarEventArray")
    items = children(array, "CalendarEvent") if array is not None else iter(())
    events = tuple(_event(item, request.tz) for item in items)
    hours_elem = child(view, "WorkingHours")
    known = kind is not FreeBusyView.NONE or merged is not None or events
    return MailboxData(
        events=events,
        working_hours=_working_hours(hours_elem, request) if hours_elem is not None else None,
        coverage=None if known else (),  # a view of type None says nothing: no data, not free
        merged=merged or None,
        merged_only=kind is FreeBusyView.MERGED_ONLY,
        # a Detailed view asked for and a FreeBusy view answered: the owner allows times only
        times_only=request.view.has_details and kind.has_events and not kind.has_details,
    )


def _error(message: etree._Element, code: str) -> MailboxError:
    text = text_of(message, "MessageText") or ""
    site = None
    details = child(message, "MessageXml")
    if details is not None:
        for value in children(details, "Value"):
            if value.get("Name") == "Site" and (value.text or "").strip():
                site = (value.text or "").strip()
    if site and text.endswith(f" (site: {site})"):
        text = text.removesuffix(f" (site: {site})")
    if code in MAILBOX_ERROR_CODES:
        return MailboxError(code, text or MAILBOX_ERROR_CODES[code], site)
    shown = code or "(no ResponseCode)"
    return MailboxError(FALLBACK_CODE, f"{shown}: {text}" if text else shown, site)


def _result(item: etree._Element, request: AvailabilityRequest) -> MailboxData | MailboxError:
    message = child(item, "ResponseMessage")
    if message is None:
        raise EwsProtocolError("A FreeBusyResponse has no ResponseMessage.")
    klass = message.get("ResponseClass", "")
    code = text_of(message, "ResponseCode") or ""
    view = child(item, "FreeBusyView")
    if klass == "Error" or (klass not in ("Success", "Warning") and code != "NoError"):
        return _error(message, code)
    if view is None:
        if klass == "Warning":
            return _error(message, code)
        return MailboxData(coverage=())
    try:
        return _view(view, request)
    except _Unreadable as exc:
        return MailboxError(FALLBACK_CODE, f"The server's answer could not be read: {exc}.")


def answer_of(body: bytes, operation: str) -> tuple[etree._Element, etree._Element]:
    """The envelope of an answer and its Body's `operation` element (e.g. "ConvertIdResponse");
    `EwsFaultError` for a SOAP fault, `EwsProtocolError` for anything else."""
    root = parse_answer_xml(body)
    if root.tag != s("Envelope"):
        raise EwsProtocolError(
            f"Expected a SOAP 1.1 Envelope ({{{SOAP_NS}}}Envelope), got {root.tag}."
        )
    first = first_body_element(root)
    if first is None:
        raise EwsProtocolError("The SOAP answer has no Body content.")
    if first.tag == s("Fault"):
        raise _fault(first)
    if first.tag != m(operation):
        raise EwsProtocolError(f"Expected a {operation}, got {local_name(first)}.")
    return root, first


def parse_get_user_availability_response(
    body: bytes, request: AvailabilityRequest
) -> list[MailboxData | MailboxError]:
    """One result per mailbox of `request`, in order; `EwsFaultError`/`EwsProtocolError`."""
    root, first = answer_of(body, "GetUserAvailabilityResponse")
    array = child(first, "FreeBusyResponseArray")
    if array is None:
        raise EwsProtocolError("The GetUserAvailabilityResponse has no FreeBusyResponseArray.")
    items = list(children(array, "FreeBusyResponse"))
    if len(items) != len(request.mailboxes):
        raise EwsProtocolError(
            f"The answer has {len(items)} FreeBusyResponse elements for "
            f"{len(request.mailboxes)} mailboxes asked about."
        )
    results = [_result(item, request) for item in items]
    freshness = parse_freshness_header(root)
    return [
        replace(r, freshness=freshness[i]) if isinstance(r, MailboxData) and i in freshness else r
        for i, r in enumerate(results)
    ]


__all__ = [
    "EwsClientError",
    "EwsFaultError",
    "EwsProtocolError",
    "answer_of",
    "first_body_element",
    "parse_answer_xml",
    "parse_get_user_availability_response",
    "render_get_user_availability_request",
]
