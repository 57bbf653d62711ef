"""The Autodiscover codecs: SOAP `GetUserSettings`, POX (Outlook 2006a) and JSON ("v2").

Pure functions over lxml and a small neutral model (`model.py`); no I/O. The service computes one
`Answer` per address (`UserSettings`, `Redirect`, `NotFound`, `InvalidRequest`, `ServerFailure`)
and each codec renders it in its own protocol, with that protocol's own errors.
"""

from __future__ import annotations

from cas.codecs.autodiscover.json import (
    JsonAutodiscoverError,
    JsonRequest,
    canonical_protocol,
    parse_json_path,
    render_json,
    render_json_error,
)
from cas.codecs.autodiscover.model import (
    Answer,
    InvalidRequest,
    NotFound,
    Redirect,
    ServerFailure,
    UserSettings,
)
from cas.codecs.autodiscover.pox import (
    PoxError,
    PoxRequest,
    parse_pox_request,
    render_pox,
    render_pox_error,
)
from cas.codecs.autodiscover.soap import (
    EWS_SUPPORTED_SCHEMAS,
    SUPPORTED_SETTINGS,
    AutodiscoverSoapError,
    GetUserSettingsRequest,
    parse_get_user_settings,
    render_get_user_settings,
    render_request_error,
    render_soap_error,
)

__all__ = [
    "EWS_SUPPORTED_SCHEMAS",
    "SUPPORTED_SETTINGS",
    "Answer",
    "AutodiscoverSoapError",
    "GetUserSettingsRequest",
    "InvalidRequest",
    "JsonAutodiscoverError",
    "JsonRequest",
    "NotFound",
    "PoxError",
    "PoxRequest",
    "Redirect",
    "ServerFailure",
    "UserSettings",
    "canonical_protocol",
    "parse_get_user_settings",
    "parse_json_path",
    "parse_pox_request",
    "render_get_user_settings",
    "render_json",
    "render_json_error",
    "render_pox",
    "render_pox_error",
    "render_request_error",
    "render_soap_error",
]
