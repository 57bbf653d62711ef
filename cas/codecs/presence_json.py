"""The JSON form of a presence view, and of a presence request (`POST /api/v1/presence`).

One view::

    {"address": "ann@contoso.test", "state": "InAMeeting",
     "since": "2030-01-07T09:00:00Z", "until": "2030-01-07T10:00:00Z", "next": "Available",
     "subject": "Planning", "location": "Room 1",          # only where the requester may see them
     "slots": {"start": "2030-01-07T09:00:00Z", "minutes": 15, "digits": "2222000..."},
     "freshness": {"source": "cache", "ageSeconds": 3.2, "validatedSecondsAgo": 1.0,
                   "site": "eu", "stale": false, "version": "...",
                   "oldServer": false}}                   # true: an old server's merged data

A mailbox the requester may not see, or that does not exist, is only its address and
`error` ({"code", "message"}); one whose data cannot be read is `Unknown` with `error`.
Pure functions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cas.errors import InvalidValue
from cas.model.freebusy import Freshness
from cas.presence.state import PresenceView

# Errors that say nothing may be shown of the mailbox: no state, no slots.
OPAQUE_ERRORS = frozenset({"ErrorNoFreeBusyAccess", "ErrorMailRecipientNotFound"})


def instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def freshness_json(f: Freshness) -> dict[str, Any]:
    return {
        "source": f.source,
        "ageSeconds": round(f.age_seconds, 1),
        "validatedSecondsAgo": (
            round(f.validated_seconds, 1) if f.validated_seconds is not None else None
        ),
        "site": f.site,
        "stale": f.stale,
        "version": f.version,
    }


def view_json(view: PresenceView) -> dict[str, Any]:
    """One view as the JSON API and the stream carry it (see the module docstring)."""
    doc: dict[str, Any] = {"address": view.address}
    if view.error is not None:
        doc["error"] = {"code": view.error.code, "message": view.error.message}
        if view.error.code in OPAQUE_ERRORS:
            return doc
    doc.update(
        state=view.state.value,
        since=instant(view.since),
        until=instant(view.until),
        next=view.next_state.value if view.next_state is not None else None,
    )
    if view.subject is not None:
        doc["subject"] = view.subject
    if view.location is not None:
        doc["location"] = view.location
    doc["slots"] = {
        "start": instant(view.slot_start),
        "minutes": view.slot_minutes,
        "digits": view.slots,
    }
    doc["freshness"] = freshness_json(view.freshness) if view.freshness is not None else None
    if doc["freshness"] is not None:
        doc["freshness"]["oldServer"] = view.old_server
    return doc


def parse_presence_request(body: bytes, max_addresses: int) -> list[str]:
    """The addresses of `{"addresses": [...]}`; `InvalidValue` naming what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidValue('The body must be JSON: {"addresses": [...]}.') from None
    addresses = doc.get("addresses") if isinstance(doc, dict) else None
    if not isinstance(addresses, list) or not all(
        isinstance(a, str) and a.strip() for a in addresses
    ):
        raise InvalidValue("'addresses' must be a list of addresses.")
    if not addresses:
        raise InvalidValue("'addresses' names no address.")
    if len(addresses) > max_addresses:
        raise InvalidValue(
            f"'addresses' names {len(addresses)} addresses; at most {max_addresses} are allowed."
        )
    return [a.strip() for a in addresses]
