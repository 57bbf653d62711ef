"""Printing a lookup: a timeline for people, a JSON document for programs.

The timeline cuts the window into local days of `--tz` (for slots shorter than 6 hours; longer
slots share one block). Each block has a date line, an hour ruler, and one row per attendee with
one character per slot (`SLOT_CHARS`); an attendee with an error gets a row marked `✗ <code>`,
never free slots. Then a legend, the events of Detailed views in local time, and every error in
full with its site. Colours (rich) are used only when the output is a terminal; piped output is
plain text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from cas.client.options import LookupOptions
from cas.client.result import Attendee, LookupResult
from cas.errors import MailboxError
from cas.model.availability import FreeBusyView, view_for
from cas.model.freebusy import Event, MailboxData, events_in_window, merged_free_busy

# One table: merged digit -> (character, colour, legend word).
SLOTS: dict[str, tuple[str, str, str]] = {
    "0": ("·", "green", "free"),
    "1": ("░", "yellow", "tentative"),
    "2": ("█", "red", "busy"),
    "3": ("▓", "magenta", "out of office"),
    "4": ("?", "bright_black", "no data"),
}
ERROR_MARK = "✗"
ERROR_STYLE = "bold red"
NAME_WIDTH_MAX = 32
DAY_BLOCKS_BELOW_MINUTES = 360


def slot_digits(data: MailboxData, options: LookupOptions) -> str:
    """One digit per slot: the server's merged string (padded with no-data if short), else
    computed from the events (parts the answer does not cover count as no data)."""
    count = options.window.slot_count(options.interval_minutes)
    merged = data.merged
    if merged is None:
        merged = merged_free_busy(
            data.events, options.window, options.interval_minutes, data.coverage
        )
    return (merged + "4" * count)[:count]


def _slot_starts(options: LookupOptions) -> list[datetime]:
    step = timedelta(minutes=options.interval_minutes)
    count = options.window.slot_count(options.interval_minutes)
    return [(options.window.start + i * step).astimezone(options.tz) for i in range(count)]


def _blocks(starts: list[datetime], interval: int) -> list[range]:
    """Runs of slot indexes sharing one local date (or one run for long slots)."""
    if interval >= DAY_BLOCKS_BELOW_MINUTES:
        return [range(len(starts))]
    blocks: list[range] = []
    first = 0
    for i in range(1, len(starts) + 1):
        if i == len(starts) or starts[i].date() != starts[first].date():
            blocks.append(range(first, i))
            first = i
    return blocks


def _ruler(starts: list[datetime], long_slots: bool) -> str:
    """Labels (hour, or day of month for long slots) where a slot starts one, if there is room."""
    cells: list[str] = []
    for i, moment in enumerate(starts):
        if long_slots:
            label = f"{moment.day:02d}" if moment.hour == 0 and moment.minute == 0 else None
        else:
            label = f"{moment.hour:02d}" if moment.minute == 0 else None
        if label is not None and i >= len(cells) + (1 if cells else 0):
            cells += [" "] * (i - len(cells))
            cells += list(label)
    return "".join(cells).rstrip()


def _name(attendee: Attendee, width: int) -> str:
    name = attendee.address
    return (name[: width - 1] + "…" if len(name) > width else name).ljust(width)


def _local(moment: datetime, options: LookupOptions, with_day: bool) -> str:
    local = moment.astimezone(options.tz)
    return local.strftime("%a %d %H:%M") if with_day else local.strftime("%H:%M")


def _event_line(event: Event, options: LookupOptions, multi_day: bool) -> Text:
    start = _local(event.start, options, multi_day)
    same_day = event.start.astimezone(options.tz).date() == event.end.astimezone(options.tz).date()
    end = _local(event.end, options, not same_day)
    digit = event.busy_type.digit
    line = Text(f"  {start}–{end}  ")
    line.append(f"{event.busy_type.value:<16}", style=SLOTS[digit][1])
    details = event.details
    if details is not None:
        what = details.subject or ""
        if details.location:
            what = f"{what} @ {details.location}" if what else f"@ {details.location}"
        if details.is_private:
            what = f"{what} [private]" if what else "[private]"
        line.append(f" {what}".rstrip())
    return line


def _error_text(error: MailboxError) -> str:
    site = f" [site {error.site}]" if error.site else ""
    return f"{ERROR_MARK} {error.code}: {error.message}{site}"


def render_timeline(result: LookupResult) -> list[Text]:
    """The timeline as lines of rich `Text` (use `.plain` for the text without colours)."""
    options = result.options
    window, interval = options.window, options.interval_minutes
    starts = _slot_starts(options)
    local_start, local_end = window.start.astimezone(options.tz), window.end.astimezone(options.tz)
    multi_day = local_start.date() != (local_end - timedelta(microseconds=1)).date()
    width = min(max(len(a.address) for a in result.attendees), NAME_WIDTH_MAX)
    digits = {
        i: slot_digits(a.result, options)
        for i, a in enumerate(result.attendees)
        if isinstance(a.result, MailboxData)
    }
    lines = [
        Text(
            f"Free/busy {local_start:%Y-%m-%d %H:%M} → {local_end:%Y-%m-%d %H:%M} "
            f"({options.tz_name}), {interval}-minute slots, {options.view.value}",
            style="bold",
        )
    ]
    for block in _blocks(starts, interval):
        lines.append(Text(""))
        first, last = starts[block.start], starts[block.stop - 1]
        title = f"{first:%a %d %b %Y}"
        if first.date() != last.date():
            title += f" – {last:%a %d %b %Y}"
        lines.append(Text(title, style="bold"))
        ruler = _ruler([starts[i] for i in block], interval >= DAY_BLOCKS_BELOW_MINUTES)
        lines.append(Text(" " * (width + 2) + ruler, style="dim"))
        for index, attendee in enumerate(result.attendees):
            row = Text(_name(attendee, width) + "  ")
            if index in digits:
                for digit in digits[index][block.start : block.stop]:
                    char, style, _ = SLOTS[digit]
                    row.append(char, style=style)
            else:
                assert isinstance(attendee.result, MailboxError)
                row.append(f"{ERROR_MARK} {attendee.result.code}", style=ERROR_STYLE)
            lines.append(row)
    lines.append(Text(""))
    legend = Text()
    for char, style, word in SLOTS.values():
        legend.append(char, style=style)
        legend.append(f" {word}  ")
    legend.append(ERROR_MARK, style=ERROR_STYLE)
    legend.append(" error")
    lines.append(legend)

    for attendee in result.attendees:
        data = attendee.result
        if isinstance(data, MailboxData) and not options.view.has_details:
            continue
        lines.append(Text(""))
        head = Text(attendee.address, style="bold")
        if attendee.display_name:
            head.append(f" ({attendee.display_name})")
        if attendee.ews_url:
            head.append(f"  via {attendee.ews_url}", style="dim")
        lines.append(head)
        if isinstance(data, MailboxError):
            lines.append(Text("  " + _error_text(data), style=ERROR_STYLE))
            continue
        events = events_in_window(data.events, window)
        if data.merged_only:
            lines.append(Text("  (only merged free/busy is known; no event list)", style="dim"))
        elif data.coverage == () and not events:
            lines.append(Text("  (no data)", style="dim"))
        elif not events:
            lines.append(Text("  (no events)", style="dim"))
        if data.times_only:
            lines.append(Text("  (times only: this login may not see subjects)", style="dim"))
        lines += [_event_line(event, options, multi_day) for event in events]
    return lines


def print_timeline(result: LookupResult, out: TextIO, *, color: bool | None = None) -> None:
    """Print the timeline; coloured only when `out` is a terminal (or `color` says so)."""
    if color is None:
        isatty = getattr(out, "isatty", None)
        color = bool(isatty and isatty())
    console = Console(
        file=out,
        force_terminal=color,
        no_color=not color,
        color_system="auto" if color else None,
        highlight=False,
        emoji=False,
    )
    for line in render_timeline(result):
        console.print(line, soft_wrap=True)


# ---- JSON -------------------------------------------------------------------------------------


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_json(event: Event) -> dict[str, Any]:
    details = event.details
    return {
        "start": _utc(event.start),
        "end": _utc(event.end),
        "busy_type": event.busy_type.value,
        "subject": details.subject if details else None,
        "location": details.location if details else None,
        "private": details.is_private if details else False,
        "meeting": details.is_meeting if details else False,
        "recurring": details.is_recurring if details else False,
        "exception": details.is_exception if details else False,
    }


def _attendee_json(attendee: Attendee, options: LookupOptions) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "address": attendee.address,
        "mailbox": attendee.mailbox,
        "display_name": attendee.display_name,
        "ews_url": attendee.ews_url,
    }
    data = attendee.result
    if isinstance(data, MailboxError):
        doc.update(status=data.code, message=data.message, site=data.site, merged=None, events=[])
        doc.update(view=FreeBusyView.NONE.value)
    else:
        events = events_in_window(data.events, options.window)
        doc.update(
            status="ok",
            message=None,
            site=None,
            merged=slot_digits(data, options),
            events=[_event_json(event) for event in events],
            view=view_for(options.view, data).value,  # what the owner's permissions allowed
        )
    return doc


def lookup_document(result: LookupResult) -> dict[str, Any]:
    """The machine-readable form: window, slots, view, and one entry per attendee in order."""
    options = result.options
    return {
        "window": {
            "start": _utc(options.window.start),
            "end": _utc(options.window.end),
            "timezone": options.tz_name,
        },
        "interval_minutes": options.interval_minutes,
        "view": options.view.value,
        "attendees": [_attendee_json(a, options) for a in result.attendees],
    }


def print_json(result: LookupResult, out: TextIO) -> None:
    out.write(json.dumps(lookup_document(result), indent=2, ensure_ascii=False) + "\n")


__all__ = [
    "SLOTS",
    "lookup_document",
    "print_json",
    "print_timeline",
    "render_timeline",
    "slot_digits",
]
