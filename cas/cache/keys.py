"""What a cached entry is made of, per kind of source: the cache's key policies, in one place.

* `DayPieces` (the site's own sources: CalDAV, the old server): one piece per mailbox per UTC
  day, whatever was asked; a source is read over whole days and any later window and interval
  about those days is answered from the pieces. Pieces carry the calendar's change tag. A
  calendar that does not exist is remembered for a short time (a negative entry).
* `ExactAnswers` (other sites): the whole answer to one exact question (window, interval,
  view) **for one requester**, since the owning site decides per requester what they may see:
  keyed by a digest of the requester's name and groups (`Requester.key`), so no one is ever
  answered from what was answered for someone else.

A policy turns a mailbox and an `Ask` into store keys, decodes what the store holds into an
`Entry`, and encodes a source's answer for the store. Pure: no I/O (`cas.cache.cached` does it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cas.cache import pieces as p
from cas.model.ask import Ask
from cas.model.freebusy import MailboxData, Window
from sitemap.model import Mailbox


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached answer for one mailbox and ask: the data, when the source vouched for it, the
    calendar's change tag when it was read (None: unknown), and whose data it is."""

    data: MailboxData
    vouched_at: float
    version: str | None
    site: str | None
    kept_at: float | None = None  # when this cache got it, if not when it was vouched for
    validated_at: float | None = None  # when the source last confirmed it unchanged

    @property
    def since(self) -> float:
        """What the refresh interval counts from."""
        return self.vouched_at if self.kept_at is None else self.kept_at

    @property
    def confirmed_at(self) -> float:
        """When this entry was last known current: kept, read or confirmed, the latest."""
        return max(self.since, self.validated_at or 0.0)


class KeyPolicy(Protocol):
    hit_label: str  # the freshness source of an answer from this cache
    hit_metric: str
    channel: str | None  # where dropping a mailbox is announced to the site's nodes

    def keys(self, mailbox: Mailbox, ask: Ask) -> list[str]: ...

    def decode(self, raw: bytes) -> Any: ...

    def entry(self, mailbox: Mailbox, ask: Ask, values: Sequence[Any]) -> Entry | None: ...

    def read_window(self, ask: Ask) -> Window: ...

    def shape(
        self, mailbox: Mailbox, ask: Ask, data: MailboxData, now: float, version: str | None
    ) -> tuple[list[tuple[str, Any]], Entry]: ...

    def encode(self, value: Any, now: float) -> bytes: ...

    def renew(self, value: Any, now: float) -> Any: ...

    def prefixes(self, mailbox: Mailbox) -> list[str]: ...

    def flight(self, mailbox: Mailbox, ask: Ask) -> str: ...

    def negative(self, mailbox: Mailbox) -> str | None: ...

    def validation(self, mailbox: Mailbox) -> str:
        """The key that lets one node of the site at a time confirm the mailbox's entry."""
        ...


class DayPieces:
    hit_label = "cache"
    hit_metric = "hit"

    def __init__(self, site: str, variant: str = "") -> None:
        self.site = site
        self.variant = variant
        self.channel: str | None = p.forgotten_channel(site)

    def keys(self, mailbox: Mailbox, ask: Ask) -> list[str]:
        return [
            p.piece_key(self.site, mailbox.address, d, self.variant) for d in p.days_of(ask.window)
        ]

    def decode(self, raw: bytes) -> p.Piece:
        return p.decode_piece(raw)

    def entry(self, mailbox: Mailbox, ask: Ask, values: Sequence[Any]) -> Entry | None:
        if not values or any(v is None for v in values):
            return None
        tags = {v.ctag for v in values}
        version = tags.pop() if len(tags) == 1 else None
        oldest = min(v.fetched_at for v in values)
        confirmed = min(v.validated_at or v.fetched_at for v in values)
        validated = confirmed if confirmed > oldest else None
        return Entry(p.assemble(values, ask.window), oldest, version, self.site, None, validated)

    def read_window(self, ask: Ask) -> Window:
        return p.span_of(p.days_of(ask.window))

    def shape(
        self, mailbox: Mailbox, ask: Ask, data: MailboxData, now: float, version: str | None
    ) -> tuple[list[tuple[str, Any]], Entry]:
        days = p.days_of(self.read_window(ask))
        made = [replace(piece, ctag=version) for piece in p.split(data, days, now)]
        items = [(p.piece_key(self.site, mailbox.address, x.day, self.variant), x) for x in made]
        wanted = set(p.days_of(ask.window))
        entry = Entry(
            p.assemble([x for x in made if x.day in wanted], ask.window), now, version, self.site
        )
        return items, entry

    def encode(self, value: Any, now: float) -> bytes:
        return p.encode_piece(value)

    def renew(self, value: Any, now: float) -> Any:
        return replace(value, validated_at=now)

    def prefixes(self, mailbox: Mailbox) -> list[str]:
        return [p.mailbox_prefix(self.site, mailbox.address)]

    def flight(self, mailbox: Mailbox, ask: Ask) -> str:
        return p.flight_key(self.site, mailbox.address, self.read_window(ask), self.variant)

    def negative(self, mailbox: Mailbox) -> str | None:
        return p.negative_key(self.site, mailbox.address)

    def validation(self, mailbox: Mailbox) -> str:
        return f"cas:{p.VERSION}:validate:{self.site}:{mailbox.address.casefold()}"


@dataclass(frozen=True, slots=True)
class _Answer:
    data: MailboxData
    vouched_at: float
    kept_at: float
    validated_at: float | None = None


class ExactAnswers:
    hit_label = "remote-cache"
    hit_metric = "remote_hit"

    def __init__(self, site: str) -> None:
        self.site = site
        # copies are not kept in a node's first level, but a drop must reach every node of
        # the site all the same, so none keeps what it reads from before the change, and
        # presence follows the channel (cas.presence.hub)
        self.channel: str | None = p.forgotten_channel(site)

    def _key(self, mailbox: Mailbox, ask: Ask) -> str:
        return p.remote_key(
            mailbox.site, mailbox.address, ask.window, ask.interval_minutes, ask.view.value,
            ask.requester.key,
        )  # fmt: skip

    def keys(self, mailbox: Mailbox, ask: Ask) -> list[str]:
        return [self._key(mailbox, ask)]

    def decode(self, raw: bytes) -> _Answer:
        return _Answer(*p.decode_answer(raw))

    def entry(self, mailbox: Mailbox, ask: Ask, values: Sequence[Any]) -> Entry | None:
        [value] = values
        if value is None:
            return None
        f = value.data.freshness
        site = f.site if f is not None else mailbox.site
        version = f.version if f is not None else None
        return Entry(value.data, value.vouched_at, version, site, value.kept_at, value.validated_at)

    def read_window(self, ask: Ask) -> Window:
        return ask.window

    def shape(
        self, mailbox: Mailbox, ask: Ask, data: MailboxData, now: float, version: str | None
    ) -> tuple[list[tuple[str, Any]], Entry]:
        age = data.freshness.age_seconds if data.freshness is not None else 0.0
        value = _Answer(data, now - age, now)
        f = data.freshness
        site = f.site if f is not None else mailbox.site
        version = f.version if f is not None else None
        return [(self._key(mailbox, ask), value)], Entry(data, now - age, version, site, now)

    def encode(self, value: Any, now: float) -> bytes:
        return p.encode_answer(value.data, value.vouched_at, value.kept_at, value.validated_at)

    def renew(self, value: Any, now: float) -> Any:
        return replace(value, validated_at=now)

    def prefixes(self, mailbox: Mailbox) -> list[str]:
        return [p.remote_prefix(mailbox.site, mailbox.address)]

    def flight(self, mailbox: Mailbox, ask: Ask) -> str:
        return self._key(mailbox, ask)

    def negative(self, mailbox: Mailbox) -> str | None:
        return None

    def validation(self, mailbox: Mailbox) -> str:
        return f"cas:{p.VERSION}:validate-copy:{mailbox.site}:{mailbox.address.casefold()}"
