"""The span read from a calendar object's text alone never cuts what the full parser finds.

Generated calendars (the differential test's strategies: rules, RDATE, EXDATE, overrides,
zones, all-day, floating, DURATION) are rendered to iCalendar; wherever the text-only span is
given, it must contain every occurrence the parsed object has, so an object can never be left
out of a window it touches.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cas.sources.calendar_copy import SPAN_MARGIN, UNBOUNDED, object_span, quick_span
from tests.support.calendar_strategies import OWNER_ZONES, events
from tests.support.oracle import ics


@settings(max_examples=300, deadline=None)
@given(events("e1"), st.sampled_from(OWNER_ZONES))
def test_the_text_span_contains_the_parsed_span(event, owner) -> None:  # type: ignore[no-untyped-def]
    text = ics(event, owner)
    quick = quick_span(text)
    if quick is None:
        return  # the full parser decides (rules, durations)
    full = object_span(text)  # the parsed occurrences, widened by SPAN_MARGIN on both sides
    assert full != UNBOUNDED
    assert full.start is not None and quick.start is not None and full.end is not None
    assert quick.end is not None
    assert quick.start <= full.start + SPAN_MARGIN, "an occurrence starts before the span"
    assert quick.end >= full.end - SPAN_MARGIN, "an occurrence ends after the span"


def test_rules_and_durations_need_the_parser() -> None:
    base = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20300101T100000Z\r\n{}END:VEVENT\r\nEND:VCALENDAR\r\n"
    assert quick_span(base.format("RRULE:FREQ=DAILY\r\n")) is None
    assert quick_span(base.format("DURATION:P3D\r\n")) is None
    assert quick_span(base.format("RDATE;VALUE=PERIOD:20300105T100000Z/P9D\r\n")) is None
    span = quick_span(base.format("DTEND:20300101T110000Z\r\n"))
    assert span is not None and span.start is not None and span.end is not None
    assert span.start.isoformat().startswith("2029-12-30") and span.end.isoformat().startswith(
        "2030-01-04"
    )
