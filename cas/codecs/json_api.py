"""The JSON availability API (`POST /api/v1/availability`), shaped close to Graph `getSchedule`.

Request::

    {"schedules": ["ann@contoso.test", ...],
     "startTime": {"dateTime": "2024-03-04T08:00:00", "timeZone": "Europe/Berlin"},
     "endTime":   {"dateTime": "2024-03-04T18:00:00", "timeZone": "Europe/Berlin"},
     "availabilityViewInterval": 30,          # minutes, default 30
     "view": "DetailedMerged"}                # an EWS view name, default DetailedMerged

`dateTime` is a wall time in `timeZone` (an IANA name, default UTC); a value with `Z` or an
offset is that instant. Answer: one entry per schedule, in order, with `availabilityView`
(the merged digits), `scheduleItems` (times in the request's zone), `workingHours`,
`freshness` (source, age, site) or `error` (the EWS response code and a message).
Pure functions; errors are `InvalidValue` with a message naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cas.errors import InvalidTimeInterval, InvalidValue, MailboxError
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery, view_for
from cas.model.freebusy import MailboxData, Window, merged_free_busy


def _field(doc: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in doc:
        if default is ...:
            raise InvalidValue(f"JSON request: '{name}' is required.")
        return default
    value = doc[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidValue(f"JSON request: '{name}' must be a {kind.__name__}.")
    return value


def _zone(name: str, where: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValue(
            f"JSON request: '{where}.timeZone' {name!r} is not an IANA zone."
        ) from None


def _moment(doc: dict[str, Any], name: str) -> tuple[datetime, tzinfo]:
    part = _field(doc, name, dict)
    zone = _zone(_field(part, "timeZone", str, "UTC"), name)
    text = _field(part, "dateTime", str)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValue(
            f"JSON request: '{name}.dateTime' {text!r} is not an ISO 8601 time."
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value, zone


def parse_availability_request(body: bytes) -> AvailabilityRequest:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"JSON request: not JSON ({exc}).") from None
    except RecursionError:  # deeply nested arrays or objects: refused, not a crash
        raise InvalidValue("JSON request: nested too deeply.") from None
    try:  # a lone surrogate ("\\ud800") is valid JSON but no text: it could not be answered
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(
            "JSON request: a string holds a lone surrogate (not Unicode text)."
        ) from None
    if not isinstance(doc, dict):
        raise InvalidValue("JSON request: expected an object.")
    schedules = _field(doc, "schedules", list)
    if not all(isinstance(s, str) and s.strip() for s in schedules):
        raise InvalidValue("JSON request: 'schedules' must be a list of addresses.")
    start, zone = _moment(doc, "startTime")
    end, _ = _moment(doc, "endTime")
    if not start < end:
        raise InvalidTimeInterval("The time duration specified for startTime/endTime is invalid.")
    view_name = _field(doc, "view", str, "DetailedMerged")
    try:
        view = FreeBusyView(view_name)
    except ValueError:
        names = ", ".join(v.value for v in FreeBusyView if v is not FreeBusyView.NONE)
        raise InvalidValue(f"JSON request: 'view' must be one of {names}.") from None
    if view is FreeBusyView.NONE:
        raise InvalidValue("JSON request: 'view' None is not a view that can be asked for.")
    return AvailabilityRequest(
        mailboxes=tuple(MailboxQuery(s.strip()) for s in schedules),
        window=Window(start, end),
        interval_minutes=_field(doc, "availabilityViewInterval", int, 30),
        view=view,
        tz=zone,
    )


def _wall(moment: datetime, zone: tzinfo) -> dict[str, str]:
    name = getattr(zone, "key", "UTC")
    return {"dateTime": moment.astimezone(zone).replace(tzinfo=None).isoformat(), "timeZone": name}


def _entry(
    query: MailboxQuery, result: MailboxData | MailboxError, request: AvailabilityRequest
) -> dict[str, Any]:
    entry: dict[str, Any] = {"scheduleId": query.address}
    if isinstance(result, MailboxError):
        entry["error"] = {
            "responseCode": result.code,
            "message": result.message,
            "site": result.site,
        }
        return entry
    view = view_for(request.view, result)
    entry["availabilityView"] = (
        result.merged
        if result.merged is not None
        else merged_free_busy(
            result.events, request.window, request.interval_minutes, result.coverage
        )
    )
    if view.has_events:
        items = []
        for event in result.events:
            item: dict[str, Any] = {
                "status": event.busy_type.rule.json,
                "start": _wall(event.start, request.tz),
                "end": _wall(event.end, request.tz),
            }
            if view.has_details and event.details is not None:
                d = event.details
                item.update(
                    subject=d.subject,
                    location=d.location,
                    isPrivate=d.is_private,
                    isMeeting=d.is_meeting,
                    isRecurring=d.is_recurring,
                    isException=d.is_exception,
                )
            items.append(item)
        entry["scheduleItems"] = items
        if result.working_hours is not None:
            wh = result.working_hours
            entry["workingHours"] = {
                "timeZone": wh.timezone,
                "periods": [
                    {"daysOfWeek": [d.lower() for d in p.days],
                     "startTime": f"{p.start_minute // 60:02d}:{p.start_minute % 60:02d}",
                     "endTime": f"{p.end_minute // 60:02d}:{p.end_minute % 60:02d}"}
                    for p in wh.periods
                ],
            }  # fmt: skip
    if result.freshness is not None:
        f = result.freshness
        entry["freshness"] = {
            "source": f.source,
            "ageSeconds": round(f.age_seconds, 1),
            "validatedSecondsAgo": (
                round(f.validated_seconds, 1) if f.validated_seconds is not None else None
            ),
            "site": f.site,
        }
    return entry


def render_availability_response(
    request: AvailabilityRequest, results: Sequence[MailboxData | MailboxError]
) -> dict[str, Any]:
    return {"value": [_entry(q, r, request) for q, r in zip(request.mailboxes, results)]}
