"""Busy types and every wire form of them, in one table.

A mailbox's time is Free, Tentative, Busy, Out of office (OOF), Working elsewhere, or unknown
(NoData). Each protocol spells these its own way: the merged free/busy digit of EWS and of the
old servers' `fbdata`, Outlook's `X-MICROSOFT-CDO-BUSYSTATUS` in iCalendar, the RFC 5545
`FBTYPE` of a free/busy period, the JSON API's status, and the presence state shown in IM
clients. `BUSY_RULES` holds all of them, one row per busy type; every codec reads its column
from here, so the spellings cannot drift apart.

Choices in the table: WorkingElsewhere has no merged digit of its own in EWS and counts as
free (`0`), as Exchange's own iCalendar export does, and shows as Available. A busy item shows
as *In a meeting* when it has attendees and as *Busy* when it has none, as Communicator did.
No data is `4`, never free, and its presence is *Unknown*, never Available.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BusyType(enum.Enum):
    """EWS `LegacyFreeBusyType`; the value is the wire spelling."""

    FREE = "Free"
    TENTATIVE = "Tentative"
    BUSY = "Busy"
    OOF = "OOF"
    WORKING_ELSEWHERE = "WorkingElsewhere"
    NO_DATA = "NoData"

    @property
    def rule(self) -> BusyRule:
        return RULE_OF[self]

    @property
    def digit(self) -> str:
        return RULE_OF[self].digit


class Presence(enum.Enum):
    """Presence states derived from the calendar (the names IM systems show)."""

    AVAILABLE = "Available"
    IN_A_MEETING = "InAMeeting"
    BUSY = "Busy"
    AWAY = "Away"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class BusyRule:
    busy_type: BusyType
    digit: str  # merged free/busy digit: EWS MergedFreeBusy and the old servers' fbdata
    cdo: str | None  # X-MICROSOFT-CDO-BUSYSTATUS as calendars carry it
    fbtype: str | None  # RFC 5545 FBTYPE of a free/busy period (None: not a busy period)
    json: str  # the JSON API's status
    presence: Presence  # for an item with attendees (a meeting)
    presence_alone: Presence  # for an item without attendees (an appointment)


P = Presence
BUSY_RULES: tuple[BusyRule, ...] = (
    BusyRule(BusyType.FREE, "0", "FREE", None, "free", P.AVAILABLE, P.AVAILABLE),
    BusyRule(BusyType.TENTATIVE, "1", "TENTATIVE", "BUSY-TENTATIVE", "tentative", P.AVAILABLE, P.AVAILABLE),
    BusyRule(BusyType.BUSY, "2", "BUSY", "BUSY", "busy", P.IN_A_MEETING, P.BUSY),
    BusyRule(BusyType.OOF, "3", "OOF", "BUSY-UNAVAILABLE", "oof", P.AWAY, P.AWAY),
    BusyRule(BusyType.WORKING_ELSEWHERE, "0", "WORKINGELSEWHERE", None, "workingElsewhere", P.AVAILABLE, P.AVAILABLE),
    BusyRule(BusyType.NO_DATA, "4", None, None, "unknown", P.UNKNOWN, P.UNKNOWN),
)  # fmt: skip

RULE_OF: dict[BusyType, BusyRule] = {rule.busy_type: rule for rule in BUSY_RULES}
# Reading a digit back gives the first busy type written with it (0 reads as Free).
BUSY_TYPE_OF_DIGIT: dict[str, BusyType] = {}
for _rule in BUSY_RULES:
    BUSY_TYPE_OF_DIGIT.setdefault(_rule.digit, _rule.busy_type)
BUSY_TYPE_OF_CDO: dict[str, BusyType] = {r.cdo: r.busy_type for r in BUSY_RULES if r.cdo}
BUSY_TYPE_OF_JSON: dict[str, BusyType] = {r.json: r.busy_type for r in BUSY_RULES}

__all__ = [
    "BUSY_RULES",
    "BUSY_TYPE_OF_CDO",
    "BUSY_TYPE_OF_DIGIT",
    "BUSY_TYPE_OF_JSON",
    "RULE_OF",
    "BusyRule",
    "BusyType",
    "Presence",
]
