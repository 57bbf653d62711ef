"""The EWS SOAP codec: bytes of Exchange Web Services requests in, response bytes out.

Pure functions over lxml and the model; no I/O. `parse_envelope` reads any request safely
(no DTDs, no entities) and tells which operation it is; each operation has a `parse_*` and a
`render_*` (GetUserAvailability, GetServerTimeZones, ConvertId); `render_fault` answers a
request fault in the SOAP shape exchangelib understands.
"""

from __future__ import annotations

from cas.codecs.ews.answer import render_get_user_availability
from cas.codecs.ews.availability import parse_get_user_availability
from cas.codecs.ews.convert_id import render_convert_id
from cas.codecs.ews.soap import (
    SoapRequest,
    parse_envelope,
    render_envelope,
    render_fault,
    render_fault_code,
)
from cas.codecs.ews.timezones import (
    TimeZonesQuery,
    iana_to_windows,
    parse_get_server_time_zones,
    parse_serializable_time_zone,
    render_get_server_time_zones,
    render_serializable_time_zone,
    windows_to_iana,
)
from cas.codecs.ews.tzrules import RuleTimeZone, TransitionRule, ZoneRules

__all__ = [
    "RuleTimeZone",
    "SoapRequest",
    "TimeZonesQuery",
    "TransitionRule",
    "ZoneRules",
    "iana_to_windows",
    "parse_envelope",
    "parse_get_server_time_zones",
    "parse_get_user_availability",
    "parse_serializable_time_zone",
    "render_convert_id",
    "render_envelope",
    "render_fault",
    "render_fault_code",
    "render_get_server_time_zones",
    "render_get_user_availability",
    "render_serializable_time_zone",
    "windows_to_iana",
]
