"""The meeting-suggestions part of GetUserAvailability, answered before suggestions exist.

A client may ask for suggestions (`SuggestionsViewOptions`) next to free/busy, or alone. The
EWS Managed API and ews-javascript-api ask for both by default and read the
`SuggestionsResponse` unconditionally, so leaving it out breaks them. Exchange answers a
suggestions part it cannot produce with a `SuggestionsResponse` whose `ResponseMessage` carries
`ErrorMeetingSuggestionGenerationFailed`; clients then keep their free/busy results and report
the suggestions error on its own. That is the answer given here.
https://learn.microsoft.com/exchange/client-developer/web-service-reference/suggestionsresponse
"""

from __future__ import annotations

from datetime import tzinfo

from lxml import etree

from cas.codecs.ews.soap import child, text_of
from cas.codecs.ews.times import parse_datetime
from cas.errors import InvalidValue
from cas.model.freebusy import Window

SUGGESTIONS_ERROR_CODE = "ErrorMeetingSuggestionGenerationFailed"
SUGGESTIONS_MESSAGE = (
    "Meeting suggestions are not available from this server; the free/busy part of the "
    "answer is complete."
)
# Written as text, like the rest of the GetUserAvailability answer (the schema fixes the shape).
SUGGESTIONS_RESPONSE = (
    '<m:SuggestionsResponse><m:ResponseMessage ResponseClass="Error">'
    f"<m:MessageText>{SUGGESTIONS_MESSAGE}</m:MessageText>"
    f"<m:ResponseCode>{SUGGESTIONS_ERROR_CODE}</m:ResponseCode>"
    "<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
    "</m:ResponseMessage></m:SuggestionsResponse>"
)


def wants_suggestions(request: etree._Element) -> bool:
    """Whether a GetUserAvailabilityRequest element asks for meeting suggestions."""
    return child(request, "SuggestionsViewOptions") is not None


def parse_suggestions_window(request: etree._Element, tz: tzinfo) -> Window:
    """The `DetailedSuggestionsWindow` of the request's SuggestionsViewOptions.

    Read only when suggestions are asked for alone: its window and mailboxes are then the
    request's, and the limits are applied to them.
    """
    options = child(request, "SuggestionsViewOptions")
    if options is None:
        raise InvalidValue("GetUserAvailabilityRequest has no SuggestionsViewOptions element.")
    window = child(options, "DetailedSuggestionsWindow")
    if window is None:
        raise InvalidValue("SuggestionsViewOptions has no DetailedSuggestionsWindow element.")
    times = []
    for name in ("StartTime", "EndTime"):
        text = text_of(window, name)
        if text is None:
            raise InvalidValue(f"DetailedSuggestionsWindow has no {name} element.")
        times.append(parse_datetime(text, f"DetailedSuggestionsWindow/{name}", tz))
    start, end = times
    if not start < end:
        raise InvalidValue("DetailedSuggestionsWindow must start before it ends.")
    return Window(start, end)


__all__ = [
    "SUGGESTIONS_ERROR_CODE",
    "SUGGESTIONS_RESPONSE",
    "parse_suggestions_window",
    "wants_suggestions",
]
