"""JSON Autodiscover ("v2"): `GET /autodiscover/autodiscover.json/v1.0/{address}?Protocol=...`.

This module owns the shape of that endpoint (docs/protocols.md §3.3): which `Protocol`
values are served (`EWS`, `AutodiscoverV1`, matched case-insensitively, answered in their
canonical spelling), and the status and JSON object for every outcome. It returns
`(status, dict)`; the endpoint serialises the dict as `application/json`.

Statuses (the error shapes are Exchange-like but UNVERIFIED against a real server):

    outcome                       status  ErrorCode
    settings                      200     -            {"Protocol": ..., "Url": ...}
    address without "@"           400     InvalidUser
    Protocol missing / unknown    400     InvalidProtocol   (ActiveSync, Rest: not served here)
    InvalidRequest answer         400     InvalidRequest
    unknown user                  404     UserNotFound
    Redirect answer               302     RedirectAddress   body "Url" = the Location to send
    ServerFailure answer          500     InternalServerError

Unknown users get a 404 rather than Exchange Online's 302 to a "try elsewhere" URL: this
organisation is the only authority for its domains, so there is nowhere else to send the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from cas.codecs.autodiscover.model import (
    Answer,
    InvalidRequest,
    NotFound,
    Redirect,
    ServerFailure,
    UserSettings,
)
from cas.errors import RequestFault

# Lower-case spelling -> canonical spelling, for every Protocol this server answers.
PROTOCOLS: dict[str, str] = {"ews": "EWS", "autodiscoverv1": "AutodiscoverV1"}

POX_PATH = "/autodiscover/autodiscover.xml"
JSON_PATH = "/autodiscover/autodiscover.json/v1.0/"
MAX_ADDRESS_LENGTH = 320

# local@domain: no whitespace, control characters, slashes or a second "@".
_ADDRESS = re.compile(r"[^\s@/\\\x00-\x1f\x7f]+@[^\s@/\\\x00-\x1f\x7f]+")


class JsonAutodiscoverError(RequestFault):
    """A JSON Autodiscover request refused before any lookup; `body` is the JSON to send."""

    def __init__(self, http_status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code

    @property
    def body(self) -> dict[str, Any]:
        return {"ErrorCode": self.error_code, "ErrorMessage": self.message}


@dataclass(frozen=True, slots=True)
class JsonRequest:
    """A validated JSON Autodiscover question: the address and the canonical protocol name."""

    address: str
    protocol: str


def canonical_protocol(value: str | None) -> str:
    """`EWS` for `ews`, `AutodiscoverV1` for `autodiscoverv1`, ... or `JsonAutodiscoverError`."""
    if value is None or not value.strip():
        raise JsonAutodiscoverError(
            400,
            "InvalidProtocol",
            "The Protocol query parameter is required (EWS or AutodiscoverV1).",
        )
    found = PROTOCOLS.get(value.strip().lower())
    if found is None:
        supported = ", ".join(PROTOCOLS.values())
        raise JsonAutodiscoverError(
            400,
            "InvalidProtocol",
            f"Protocol {value.strip()[:64]!r} is not supported; use {supported}.",
        )
    return found


def parse_json_path(address_segment: str, query_params: Mapping[str, str]) -> JsonRequest:
    """Validate the `{address}` path segment (already percent-decoded) and `?Protocol=`."""
    address = address_segment.strip()
    if len(address) > MAX_ADDRESS_LENGTH or not _ADDRESS.fullmatch(address):
        raise JsonAutodiscoverError(
            400, "InvalidUser", f"{address[:64]!r} is not an SMTP address (local@domain)."
        )
    protocol = next((v for k, v in query_params.items() if k.lower() == "protocol"), None)
    return JsonRequest(address, canonical_protocol(protocol))


def render_json_error(error: JsonAutodiscoverError) -> tuple[int, dict[str, Any]]:
    return error.http_status, error.body


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"ErrorCode": code, "ErrorMessage": message}


def _pox_url(autodiscover_url: str) -> str:
    """`autodiscover_url` itself if it is the POX URL, else that path under its origin."""
    if autodiscover_url.lower().endswith(POX_PATH):
        return autodiscover_url
    parts = urlsplit(autodiscover_url)
    return f"{parts.scheme}://{parts.netloc}{POX_PATH}"


def _redirect_url(autodiscover_url: str, address: str, protocol: str) -> str:
    parts = urlsplit(autodiscover_url)
    return (
        f"{parts.scheme}://{parts.netloc}{JSON_PATH}{quote(address, safe='@')}?Protocol={protocol}"
    )


def render_json(
    protocol: str, answer: Answer, *, autodiscover_url: str
) -> tuple[int, dict[str, Any]]:
    """The status and JSON object for `answer`.

    `autodiscover_url` is the POX URL (or just the origin) of a node in the mailbox's site; it
    is the `Url` of an `AutodiscoverV1` answer and the origin of a redirect's `Url`.
    """
    try:
        name = canonical_protocol(protocol)
    except JsonAutodiscoverError as exc:
        return render_json_error(exc)
    if isinstance(answer, UserSettings):
        url = answer.ews_url if name == "EWS" else _pox_url(autodiscover_url)
        return 200, {"Protocol": name, "Url": url}
    if isinstance(answer, Redirect):
        return 302, {
            "ErrorCode": "RedirectAddress",
            "ErrorMessage": f"Ask again for {answer.address}.",
            "RedirectAddress": answer.address,
            "Url": _redirect_url(autodiscover_url, answer.address, name),
        }
    if isinstance(answer, NotFound):
        who = f" {answer.address!r}" if answer.address else ""
        return _error(404, "UserNotFound", f"No mailbox{who} was found.")
    if isinstance(answer, InvalidRequest):
        return _error(400, "InvalidRequest", answer.message)
    if isinstance(answer, ServerFailure):
        return _error(500, "InternalServerError", answer.message)
    raise TypeError(f"not an Autodiscover answer: {answer!r}")


__all__ = [
    "PROTOCOLS",
    "JsonAutodiscoverError",
    "JsonRequest",
    "canonical_protocol",
    "parse_json_path",
    "render_json",
    "render_json_error",
]
