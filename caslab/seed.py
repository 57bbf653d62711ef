"""Realistic demo mailboxes and calendars for the lab: pure and deterministic, no network.

`generate_mailboxes` invents plausible people (first.last@domain, unique) spread over several
time zones; `generate_calendar` gives one mailbox a calendar that exercises what free/busy must
get right: a weekly meeting with a deleted and a moved instance, a counted daily stand-up,
one-off meetings with attendees and a location, tentative, out-of-office, free, private (with an
alarm), working-elsewhere and cancelled items, in the mailbox's own zone (TZID + VTIMEZONE) and
in UTC. Each `SeedEvent.ics` is a whole VCALENDAR holding one UID (a master and its override),
ready to PUT into a CalDAV collection. The same arguments always give the same output.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Event, vCalAddress

__all__ = [
    "EVENT_KINDS",
    "ZONES",
    "SeedEvent",
    "SeedMailbox",
    "generate_calendar",
    "generate_directory",
    "generate_mailboxes",
]

ZONES = (
    "Europe/Amsterdam",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
    "America/Sao_Paulo",
)
EVENT_KINDS = (
    "weekly", "standup", "meeting", "tentative", "oof", "free", "private", "elsewhere", "cancelled",
)  # fmt: skip

FIRST_NAMES = (
    "Ann", "Bram", "Chloe", "Daan", "Elif", "Femke", "Gustavo", "Hana", "Ibrahim", "Julia",
    "Kenji", "Lotte", "Mateus", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tamara",
    "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Carmen", "Dmitri",
    "Esther", "Farid", "Greta", "Hiro", "Ines", "Jonas",
)  # fmt: skip
LAST_NAMES = (
    "Jansen", "Okafor", "Tanaka", "Silva", "Novak", "Bakker", "Haddad", "Kowalski", "Lindqvist",
    "Moreau", "Nakamura", "Oliveira", "Petrov", "Quispe", "Rossi", "Schmidt", "Takahashi",
    "Usman", "Visser", "Walsh", "Xu", "Yilmaz", "Zielinski", "Andersen", "Brennan", "Costa",
    "Dubois", "Esposito", "Fischer", "Gomez", "Hughes", "Ivanova", "Johansson", "Kim",
)  # fmt: skip
ROOMS = (
    "Room Amstel 2.14", "Room Hudson 7B", "Room Sumida 12F", "Room Harbour 3.02", "Video call",
    "Room Ipanema 4", "Cafeteria", "Room Maas 1.08",
)  # fmt: skip
MEETINGS = (
    "Quarterly planning", "Design review", "Customer call", "Budget check-in", "1:1",
    "Incident retrospective", "Hiring debrief", "Architecture sync", "Vendor demo",
    "Roadmap walkthrough",
)  # fmt: skip
PRODID = "-//cas-availability//lab seed//EN"
_UTC = UTC


@dataclass(frozen=True, slots=True)
class SeedMailbox:
    address: str
    display_name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class SeedEvent:
    """One calendar object: `uid`, the whole VCALENDAR text, and which of `EVENT_KINDS` it is."""

    uid: str
    ics: str
    kind: str = "meeting"


def _stable(*parts: object) -> int:
    """A hash of `parts` that, unlike `hash()`, is the same in every process."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def generate_mailboxes(
    site: str, count: int, domain: str, *, taken: Collection[str] = ()
) -> list[SeedMailbox]:
    """`count` people of `site`, addresses first.last@domain, unique and not in `taken`."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pairs = [(first, last) for first in FIRST_NAMES for last in LAST_NAMES]
    random.Random(_stable("people", site, domain)).shuffle(pairs)
    used = {address.casefold() for address in taken}
    offset = _stable("zones", site) % len(ZONES)
    people: list[SeedMailbox] = []
    for n in range(count):
        first, last = pairs[n % len(pairs)]
        local = f"{first}.{last}".lower()
        address, suffix = f"{local}@{domain}", 1
        while address.casefold() in used:
            suffix += 1
            address = f"{local}{suffix}@{domain}"
        used.add(address.casefold())
        zone = ZONES[(offset + n) % len(ZONES)]
        people.append(SeedMailbox(address, f"{first} {last}", zone))
    return people


def generate_directory(
    sites: Sequence[str], per_site: int, domain: str
) -> dict[str, list[SeedMailbox]]:
    """`generate_mailboxes` for each site, with addresses unique across all of them."""
    taken: set[str] = set()
    directory: dict[str, list[SeedMailbox]] = {}
    for site in sites:
        directory[site] = generate_mailboxes(site, per_site, domain, taken=taken)
        taken.update(m.address for m in directory[site])
    return directory


def generate_calendar(
    mailbox: SeedMailbox, *, start: date, days: int, rng_seed: int
) -> list[SeedEvent]:
    """A deterministic calendar for `mailbox` over `days` days from `start` (recurring items
    may run a little past the end). Every kind in `EVENT_KINDS` appears at least once."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    return _CalendarBuilder(mailbox, start, days, rng_seed).build()


class _CalendarBuilder:
    """Builds one mailbox's events; one method per kind of item."""

    def __init__(self, mailbox: SeedMailbox, start: date, days: int, rng_seed: int) -> None:
        self.mailbox = mailbox
        self.start, self.days = start, days
        self.seed = rng_seed
        self.rng = random.Random(f"{rng_seed}|{mailbox.address}")
        self.zone = ZoneInfo(mailbox.timezone)
        self.domain = mailbox.address.partition("@")[2]
        dates = [start + timedelta(days=n) for n in range(days)]
        self.workdays = [d for d in dates if d.weekday() < 5] or dates
        self.stamp = datetime.combine(start - timedelta(days=7), time(9), _UTC)
        self.count = 0

    def build(self) -> list[SeedEvent]:
        events = [self.weekly(), self.standup()]
        events += [self.meeting(in_utc=n % 2 == 1) for n in range(self.rng.randint(3, 6))]
        events += [self.tentative(), self.oof(), self.free(), self.private(), self.elsewhere()]
        events.append(self.cancelled())
        return events

    # -- helpers

    def at(self, day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), self.zone)

    def day(self) -> date:
        return self.rng.choice(self.workdays)

    def new_event(self, summary: str, begin: date, end: date) -> Event:
        self.count += 1
        uid = uuid.uuid5(
            uuid.NAMESPACE_URL, f"seed:{self.seed}:{self.mailbox.address}:{self.count}"
        )
        event = Event()
        event.add("uid", f"{uid}@lab.{self.domain}")
        event.add("dtstamp", self.stamp)
        event.add("summary", summary)
        event.add("dtstart", begin)
        event.add("dtend", end)
        return event

    def invite(self, event: Event, how_many: int) -> None:
        """Make the mailbox the organiser and add `how_many` invented colleagues."""
        me = vCalAddress(f"mailto:{self.mailbox.address}")
        me.params["CN"] = self.mailbox.display_name
        event.add("organizer", me)
        people = self.rng.sample(range(len(FIRST_NAMES) * len(LAST_NAMES)), how_many + 1)
        for number in people:
            first = FIRST_NAMES[number % len(FIRST_NAMES)]
            last = LAST_NAMES[number // len(FIRST_NAMES)]
            address = f"{first.lower()}.{last.lower()}@{self.domain}"
            if address == self.mailbox.address or how_many == 0:
                continue
            how_many -= 1
            guest = vCalAddress(f"mailto:{address}")
            guest.params["CN"] = f"{first} {last}"
            guest.params["ROLE"] = "REQ-PARTICIPANT"
            guest.params["PARTSTAT"] = self.rng.choice(["ACCEPTED", "TENTATIVE", "NEEDS-ACTION"])
            guest.params["RSVP"] = "TRUE"
            event.add("attendee", guest)

    def wrap(self, kind: str, *components: Event) -> SeedEvent:
        calendar = Calendar()
        calendar.add("prodid", PRODID)
        calendar.add("version", "2.0")
        for component in components:
            calendar.add_component(component)
        margin = timedelta(days=400)
        calendar.add_missing_timezones(
            first_date=self.start - margin,
            last_date=self.start + timedelta(days=self.days) + margin,
        )
        return SeedEvent(str(components[0]["UID"]), calendar.to_ical().decode("utf-8"), kind)

    # -- one method per kind

    def weekly(self) -> SeedEvent:
        weekday = self.rng.randrange(4)
        first = self.start + timedelta(days=(weekday - self.start.weekday()) % 7)
        hour = self.rng.choice([10, 11, 13])
        begin = self.at(first, hour)
        master = self.new_event("Team meeting", begin, begin + timedelta(hours=1))
        master.add("rrule", {"FREQ": "WEEKLY", "COUNT": max(4, self.days // 7 + 1)})
        master.add("exdate", begin + timedelta(weeks=1))
        master.add("location", self.rng.choice(ROOMS))
        self.invite(master, 4)
        original = begin + timedelta(weeks=2)
        moved_start = self.at(original.date() + timedelta(days=1), 15)
        moved = self.new_event(
            "Team meeting (moved)", moved_start, moved_start + timedelta(hours=1)
        )
        moved["UID"] = master["UID"]
        moved.add("recurrence-id", original)
        moved.add("sequence", 1)
        moved.add("location", self.rng.choice(ROOMS))
        return self.wrap("weekly", master, moved)

    def standup(self) -> SeedEvent:
        begin = self.at(self.workdays[0], 9, 15)
        event = self.new_event("Daily stand-up", begin, begin + timedelta(minutes=15))
        count = max(3, min(20, len(self.workdays)))
        event.add(
            "rrule", {"FREQ": "DAILY", "COUNT": count, "BYDAY": ["MO", "TU", "WE", "TH", "FR"]}
        )
        event.add("location", "Video call")
        return self.wrap("standup", event)

    def meeting(self, *, in_utc: bool) -> SeedEvent:
        begin = self.at(self.day(), self.rng.randint(9, 16), self.rng.choice([0, 30]))
        end = begin + timedelta(minutes=self.rng.choice([30, 45, 60, 90]))
        if in_utc:
            begin, end = begin.astimezone(_UTC), end.astimezone(_UTC)
        event = self.new_event(self.rng.choice(MEETINGS), begin, end)
        event.add("location", self.rng.choice(ROOMS))
        event.add("description", "Agenda in the shared notes.")
        self.invite(event, self.rng.randint(1, 4))
        return self.wrap("meeting", event)

    def tentative(self) -> SeedEvent:
        begin = self.at(self.day(), 14).astimezone(_UTC)
        event = self.new_event("Maybe: brown-bag talk", begin, begin + timedelta(hours=1))
        event.add("status", "TENTATIVE")
        event["X-MICROSOFT-CDO-BUSYSTATUS"] = "TENTATIVE"
        return self.wrap("tentative", event)

    def oof(self) -> SeedEvent:
        day = self.day()
        event = self.new_event("Out of office", day, day + timedelta(days=1))
        event.add("transp", "OPAQUE")
        event["X-MICROSOFT-CDO-BUSYSTATUS"] = "OOF"
        event["X-MICROSOFT-CDO-ALLDAYEVENT"] = "TRUE"
        return self.wrap("oof", event)

    def free(self) -> SeedEvent:
        day = self.day()
        event = self.new_event("Colleague's birthday", day, day + timedelta(days=1))
        event.add("transp", "TRANSPARENT")
        event["X-MICROSOFT-CDO-BUSYSTATUS"] = "FREE"
        event["X-MICROSOFT-CDO-ALLDAYEVENT"] = "TRUE"
        return self.wrap("free", event)

    def private(self) -> SeedEvent:
        begin = self.at(self.day(), self.rng.choice([8, 12, 16]))
        event = self.new_event("Doctor's appointment", begin, begin + timedelta(hours=1))
        event.add("class", "PRIVATE")
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", "Reminder")
        alarm.add("trigger", timedelta(minutes=-15))
        event.add_component(alarm)
        return self.wrap("private", event)

    def elsewhere(self) -> SeedEvent:
        begin = self.at(self.day(), 9)
        event = self.new_event("Working from the other office", begin, begin + timedelta(hours=4))
        event["X-MICROSOFT-CDO-BUSYSTATUS"] = "WORKINGELSEWHERE"
        return self.wrap("elsewhere", event)

    def cancelled(self) -> SeedEvent:
        begin = self.at(self.day(), 11).astimezone(_UTC)
        event = self.new_event("Cancelled: supplier visit", begin, begin + timedelta(hours=2))
        event.add("status", "CANCELLED")
        event.add("location", self.rng.choice(ROOMS))
        self.invite(event, 2)
        return self.wrap("cancelled", event)


def merge_calendars(texts: Sequence[str]) -> str:
    """One VCALENDAR holding every event of `texts` (time zones once each, by TZID).

    The legacy server publishes a user's free/busy from one calendar, not one per event.
    """
    from icalendar import Calendar

    merged = Calendar()
    merged.add("prodid", PRODID)
    merged.add("version", "2.0")
    zones: set[str] = set()
    for text in texts:
        for component in Calendar.from_ical(text).subcomponents:
            if component.name == "VTIMEZONE":
                tzid = str(component.get("TZID"))
                if tzid in zones:
                    continue
                zones.add(tzid)
            merged.add_component(component)
    return merged.to_ical().decode("utf-8")
