"""The legacy OWA free/busy codec: `/public/?cmd=freebusy` queries and `WM` XML answers.

Pure functions, no I/O (docs/protocols.md §4). The server side reads a query the way old servers did
(`parse_freebusy_query`) and writes the answer (`render_freebusy_response`); the client side
writes a query (`freebusy_query_params`), reads an answer strictly (`parse_freebusy_response`)
and turns one user's digits into `MailboxData` (`fbdata_to_mailbox_data`).

Tolerance table of `parse_freebusy_query` (what real clients send):

    quirk                                  accepted as
    cmd= / Cmd= / CMD= (any parameter)     parameter names are case-insensitive
    endt= (old Zimbra)                     end= (end wins when both are given)
    ...Z / +01:00 / -0500 / naive          aware UTC; a naive time is UTC
    "+01:00" decoded to " 01:00" (an       the space before a trailing hh:mm offset after a
      unencoded + in the query string)       time of day is read as "+"
    u=SMTP:a@x / u=smtp:a@x / u=a@x        a@x; repeated u= in order; duplicates dropped
    no interval=                           30 minutes (Ximian's and Zimbra's default)

Refused with `LegacyQueryError` (HTTP 400): missing or unreadable start/end, start not before
end, interval not an integer in 5..1440 (Zimbra's setting allows 1444; we keep the model's 1440,
so a Zimbra asking 1441..1444 gets a 400 and falls back to no data, as it does on any non-200),
a window longer than `max_window_days`, no users, more than 100 users. An interval longer than
the window is allowed: the answer then has one, partial, slot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

from cas.codecs.ews.xmlsafe import parse_xml
from cas.errors import CasError, RequestFault
from cas.model.freebusy import (
    DIGIT_BUSY_TYPE,
    MAX_INTERVAL_MINUTES,
    MIN_INTERVAL_MINUTES,
    Event,
    MailboxData,
    Window,
)

WM = "WM"
_A = "{WM}"
ALL_ATTENDEES = "All Attendees"
MAX_USERS = 100
DEFAULT_INTERVAL_MINUTES = 30
DEFAULT_MAX_WINDOW_DAYS = 62
FB_DIGITS = frozenset("01234")
_MAX_TIME_TEXT = 64
# "2024-03-04T08:00:00 01:00": a "+" offset that URL decoding turned into a space.
_SPACED_OFFSET = re.compile(r"(\d{4}-?\d{2}-?\d{2}T[0-9:.,]+) (\d{2}(?::?\d{2})?)")


class LegacyQueryError(RequestFault):
    """A `/public/?cmd=freebusy` query that cannot be answered; the message says why (HTTP 400)."""

    code = "ErrorInvalidRequest"
    http_status = 400


class LegacyResponseError(CasError, ValueError):
    """An old server's answer that is not a `WM` free/busy XML document at all."""


@dataclass(frozen=True, slots=True)
class LegacyItemError:
    """Why one user's item in an answer is unusable (missing, wrong length, bad digits)."""

    message: str


@dataclass(frozen=True, slots=True)
class LegacyQuery:
    """A free/busy query: window [start, end) in UTC, slot length, SMTP addresses."""

    start: datetime
    end: datetime
    interval_minutes: int
    users: tuple[str, ...]

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)

    @property
    def slot_count(self) -> int:
        return self.window.slot_count(self.interval_minutes)


@dataclass(frozen=True, slots=True)
class LegacyItem:
    """One user's item of an answer."""

    display_name: str
    email: str
    fbdata: str


# --- server side: the query ------------------------------------------------------------------


def _pairs(params: Any) -> list[tuple[str, str]]:
    """(name, value) pairs of a MultiDict (Starlette, httpx), a mapping or a pair list."""
    if hasattr(params, "multi_items"):
        return [(str(k), str(v)) for k, v in params.multi_items()]
    if isinstance(params, Mapping):
        out: list[tuple[str, str]] = []
        for key, value in params.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            out.extend((str(key), str(v)) for v in values)
        return out
    return [(str(k), str(v)) for k, v in params]


def parse_time(text: str, name: str) -> datetime:
    """An ISO 8601 date or date-time as aware UTC (naive means UTC)."""
    value = text.strip()
    if not value:
        raise LegacyQueryError(
            f"{name} is empty; expected an ISO 8601 time like 2024-03-04T08:00:00Z"
        )
    if len(value) > _MAX_TIME_TEXT:
        raise LegacyQueryError(f"{name} is too long to be an ISO 8601 time")
    spaced = _SPACED_OFFSET.fullmatch(value)
    if spaced:
        value = f"{spaced.group(1)}+{spaced.group(2)}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise LegacyQueryError(
            f"{name}={text!r} is not an ISO 8601 time like 2024-03-04T08:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _user(value: str) -> str:
    address = value.strip()
    if address[:5].casefold() == "smtp:":
        address = address[5:].strip()
    return address


def parse_freebusy_query(
    params: Any, *, max_window_days: int = DEFAULT_MAX_WINDOW_DAYS
) -> LegacyQuery:
    """Read a `cmd=freebusy` query's parameters (see the module docstring for the quirks).

    `params` is a Starlette/httpx `QueryParams`, a mapping (values may be lists) or (name,
    value) pairs. Whether `cmd` is `freebusy` is the caller's business.
    """
    values: dict[str, list[str]] = {}
    for key, value in _pairs(params):
        values.setdefault(key.strip().casefold(), []).append(value)

    def first(*names: str) -> str | None:
        for name in names:
            if values.get(name):
                return values[name][0]
        return None

    start_text, end_text = first("start"), first("end", "endt")
    if start_text is None:
        raise LegacyQueryError("start is missing; expected start=2024-03-04T08:00:00Z")
    if end_text is None:
        raise LegacyQueryError("end is missing; expected end=2024-03-05T08:00:00Z (or endt=)")
    start, end = parse_time(start_text, "start"), parse_time(end_text, "end")
    if not start < end:
        raise LegacyQueryError(
            f"start ({start:%Y-%m-%dT%H:%M:%SZ}) must be before end ({end:%Y-%m-%dT%H:%M:%SZ})"
        )
    if end - start > timedelta(days=max_window_days):
        raise LegacyQueryError(f"the window is longer than {max_window_days} days")

    interval_text = first("interval")
    interval = DEFAULT_INTERVAL_MINUTES
    if interval_text is not None:
        try:
            interval = int(interval_text.strip())
        except ValueError:
            raise LegacyQueryError(
                f"interval={interval_text!r} is not a whole number of minutes"
            ) from None
    if not MIN_INTERVAL_MINUTES <= interval <= MAX_INTERVAL_MINUTES:
        raise LegacyQueryError(
            f"interval={interval} is outside {MIN_INTERVAL_MINUTES}..{MAX_INTERVAL_MINUTES} minutes"
        )

    users: list[str] = []
    seen: set[str] = set()
    for raw in values.get("u", []):
        address = _user(raw)
        if address and address.casefold() not in seen:
            seen.add(address.casefold())
            users.append(address)
    if not users:
        raise LegacyQueryError("no user asked; add u=SMTP:someone@example.com")
    if len(users) > MAX_USERS:
        raise LegacyQueryError(f"{len(users)} users asked; at most {MAX_USERS} per request")
    return LegacyQuery(start, end, interval, tuple(users))


# --- server side: the answer ------------------------------------------------------------------


def all_attendees(strings: Iterable[str], length: int) -> str:
    """The digit-wise maximum of `strings` (all `length` long); all `4`s when there are none."""
    strings = list(strings)
    if not strings:
        return "4" * length
    return "".join(max(column) for column in zip(*strings, strict=True))


def render_freebusy_response(query: LegacyQuery, items: Sequence[LegacyItem]) -> bytes:
    """The `WM` answer: "All Attendees" first (DavMail reads the *last* fbdata), then the users."""
    length = query.slot_count
    for item in items:
        if len(item.fbdata) != length or not set(item.fbdata) <= FB_DIGITS:
            raise ValueError(
                f"fbdata of {item.email} must be {length} digits 0-4, got {item.fbdata!r:.40}"
            )
    root = etree.Element(_A + "response", nsmap={"a": WM})
    recipients = etree.SubElement(root, _A + "recipients")

    def add(display_name: str, email: str | None, fbdata: str) -> None:
        node = etree.SubElement(recipients, _A + "item")
        etree.SubElement(node, _A + "displayname").text = display_name
        if email is not None:
            etree.SubElement(node, _A + "email", type="SMTP").text = email
        etree.SubElement(node, _A + "type").text = "1"
        etree.SubElement(node, _A + "fbdata").text = fbdata

    add(ALL_ATTENDEES, None, all_attendees((i.fbdata for i in items), length))
    for item in items:
        add(item.display_name, item.email, item.fbdata)
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    return out


# --- client side ----------------------------------------------------------------------------


def _zulu(value: datetime) -> str:
    """DavMail's `yyyy-MM-dd'T'HH:mm:ss'Z'`; a fraction only when the time has one, so the
    server's slots line up with ours."""
    value = value.astimezone(UTC)
    fraction = f".{value.microsecond:06d}" if value.microsecond else ""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def freebusy_query_params(
    window: Window, interval_minutes: int, addresses: Iterable[str]
) -> list[tuple[str, str | int | float | bool | None]]:
    """The query a client sends, DavMail style: `cmd`, Zulu times, `u=SMTP:` per address."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("cmd", "freebusy"),
        ("start", _zulu(window.start)),
        ("end", _zulu(window.end)),
        ("interval", str(interval_minutes)),
    ]
    params.extend(("u", f"SMTP:{address}") for address in addresses)
    return params


def check_fbdata(fbdata: str, expected_length: int, who: str) -> str | None:
    """Why `fbdata` is unusable for `who`, or None when it is `expected_length` digits 0-4."""
    if not fbdata:
        return f"the old server sent no fbdata for {who}"
    bad = sorted(set(fbdata) - FB_DIGITS)
    if bad:
        return f"fbdata for {who} has characters other than 0-4: {''.join(bad)[:20]!r}"
    if len(fbdata) != expected_length:
        return (
            f"fbdata for {who} has {len(fbdata)} digits, expected {expected_length} "
            "(one per interval of the window)"
        )
    return None


def parse_freebusy_response(body: bytes, query: LegacyQuery) -> dict[str, str | LegacyItemError]:
    """Each user's digits by casefolded address, like Zimbra reads them (`a:email`, trimmed,
    any case). Items without an address ("All Attendees") are skipped; a user missing from the
    answer is missing from the result. `LegacyResponseError` if the body is not a `WM` answer.
    """
    try:
        root = parse_xml(body)
    except RequestFault as exc:
        raise LegacyResponseError(f"the answer is not usable XML: {exc.message}") from None
    if root.tag != _A + "response":
        raise LegacyResponseError(f"the answer's root element is {root.tag}, not WM response")
    length = query.slot_count
    result: dict[str, str | LegacyItemError] = {}
    for item in root.iter(_A + "item"):
        email = item.findtext(_A + "email")
        address = _user(email or "")
        if not address or address.casefold() in result:
            continue
        fbdata = "".join((item.findtext(_A + "fbdata") or "").split())
        problem = check_fbdata(fbdata, length, address)
        result[address.casefold()] = LegacyItemError(problem) if problem else fbdata
    return result


def fbdata_to_mailbox_data(fbdata: str, window: Window, interval_minutes: int) -> MailboxData:
    """Merged-only `MailboxData` for digits over `window`.

    Each run of equal digits 1, 2 or 3 becomes one event of that busy type, and every slot
    other than `4` is covered; so `merged_free_busy(events, window, interval, coverage)` gives
    the same digits back, and any coarser interval on the same grid gives what the old server
    would have said. `4` stays unknown, never free.
    """
    problem = check_fbdata(fbdata, window.slot_count(interval_minutes), "the mailbox")
    if problem:
        raise ValueError(problem)
    step = timedelta(minutes=interval_minutes)
    coverage: list[tuple[datetime, datetime]] = []
    events: list[Event] = []
    for index, digit in enumerate(fbdata):
        if digit == "4":
            continue
        lo = window.start + index * step
        hi = min(lo + step, window.end)
        if coverage and coverage[-1][1] == lo:
            coverage[-1] = (coverage[-1][0], hi)
        else:
            coverage.append((lo, hi))
        if digit == "0":
            continue
        busy = DIGIT_BUSY_TYPE[digit]
        if events and events[-1].end == lo and events[-1].busy_type is busy:
            events[-1] = Event(events[-1].start, hi, busy)
        else:
            events.append(Event(lo, hi, busy))
    return MailboxData(events=tuple(events), coverage=tuple(coverage), merged_only=True)


__all__ = [
    "ALL_ATTENDEES",
    "DEFAULT_INTERVAL_MINUTES",
    "MAX_USERS",
    "LegacyItem",
    "LegacyItemError",
    "LegacyQuery",
    "LegacyQueryError",
    "LegacyResponseError",
    "all_attendees",
    "check_fbdata",
    "fbdata_to_mailbox_data",
    "freebusy_query_params",
    "parse_freebusy_query",
    "parse_freebusy_response",
    "parse_time",
    "render_freebusy_response",
]
