"""What a lookup found: one `Attendee` per address as given, in order, in a `LookupResult`."""

from __future__ import annotations

from dataclasses import dataclass

from cas.client.options import LookupOptions
from cas.errors import MailboxError
from cas.model.availability import MailboxResult


@dataclass(frozen=True, slots=True)
class Attendee:
    """One address as given, its answer, and where the answer came from."""

    address: str
    result: MailboxResult
    ews_url: str | None = None
    mailbox: str | None = None  # the primary address EWS was asked about
    display_name: str | None = None

    @property
    def ok(self) -> bool:
        return not isinstance(self.result, MailboxError)


@dataclass(frozen=True, slots=True)
class LookupResult:
    options: LookupOptions
    attendees: tuple[Attendee, ...]

    @property
    def exit_code(self) -> int:
        """0 when every attendee was answered, 1 when some got an error."""
        return 0 if all(a.ok for a in self.attendees) else 1
