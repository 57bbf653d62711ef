"""The legacy OWA free/busy codec (`/public/?cmd=freebusy`, `WM` XML): see `fbdata`."""

from __future__ import annotations

from cas.codecs.legacy.fbdata import (
    ALL_ATTENDEES,
    DEFAULT_INTERVAL_MINUTES,
    MAX_USERS,
    LegacyItem,
    LegacyItemError,
    LegacyQuery,
    LegacyQueryError,
    LegacyResponseError,
    all_attendees,
    check_fbdata,
    fbdata_to_mailbox_data,
    freebusy_query_params,
    parse_freebusy_query,
    parse_freebusy_response,
    parse_time,
    render_freebusy_response,
)

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
