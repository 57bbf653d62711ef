"""The neutral Autodiscover answer: what the server decides about one address, before any codec.

The service looks an address up in the directory and returns one `Answer`; the SOAP, POX and
JSON codecs each render it in their own shape (docs/protocols.md §3.1–3.3). The
values validate themselves, so a codec never has to guess what a half-filled answer means.
"""

from __future__ import annotations

from dataclasses import dataclass


def _require_text(owner: str, field: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{owner}.{field} must be a non-empty string, got {value!r}")


def _require_url(owner: str, field: str, value: str) -> None:
    _require_text(owner, field, value)
    if not value.lower().startswith(("https://", "http://")):
        raise ValueError(f"{owner}.{field} must be an http(s) URL, got {value!r}")


@dataclass(frozen=True, slots=True)
class UserSettings:
    """Settings for a mailbox served by this organisation.

    `address` is the primary SMTP address (what `AutoDiscoverSMTPAddress` reports, even when the
    client asked with an alias); `ews_url` is the EWS URL of a node in the mailbox's own site, the
    one external clients use; `internal_ews_url` defaults to it. `server` names the node for the
    POX `Server` element; without it the host of `ews_url` is used.
    """

    address: str
    ews_url: str
    display_name: str | None = None
    legacy_dn: str | None = None
    internal_ews_url: str | None = None
    deployment_id: str | None = None
    server: str | None = None

    def __post_init__(self) -> None:
        _require_text("UserSettings", "address", self.address)
        if "@" not in self.address:
            raise ValueError(f"UserSettings.address must be an SMTP address, got {self.address!r}")
        _require_url("UserSettings", "ews_url", self.ews_url)
        if self.internal_ews_url is not None:
            _require_url("UserSettings", "internal_ews_url", self.internal_ews_url)

    @property
    def effective_internal_ews_url(self) -> str:
        return self.internal_ews_url or self.ews_url


@dataclass(frozen=True, slots=True)
class Redirect:
    """Ask again with `address`: the mailbox's primary address lives under another domain."""

    address: str

    def __post_init__(self) -> None:
        _require_text("Redirect", "address", self.address)
        if "@" not in self.address:
            raise ValueError(f"Redirect.address must be an SMTP address, got {self.address!r}")


@dataclass(frozen=True, slots=True)
class NotFound:
    """No mailbox answers to the address (or legacy DN) that was asked about."""

    address: str = ""


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """The question itself is unusable for this one address (e.g. not an SMTP address)."""

    message: str


@dataclass(frozen=True, slots=True)
class ServerFailure:
    """The server could not work the answer out (directory down, a bug); the client may retry."""

    message: str


Answer = UserSettings | Redirect | NotFound | InvalidRequest | ServerFailure

__all__ = ["Answer", "InvalidRequest", "NotFound", "Redirect", "ServerFailure", "UserSettings"]
