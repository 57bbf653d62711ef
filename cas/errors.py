"""Errors of the availability service, each knowing its EWS response code and HTTP status.

Two families, kept apart on purpose:

* **Request faults** stop a whole request. They are exceptions and become a SOAP fault (EWS) or
  a 4xx with a message (other front doors)::

      RequestFault                      ErrorInvalidRequest           400
      ├── MalformedRequest              ErrorSchemaValidation         400  (not XML, wrong shape/types)
      │   └── HostileXml                ErrorSchemaValidation         400  (DTD, entities)
      ├── BodyTooLarge                  ErrorInvalidRequest           413
      ├── UnknownOperation              ErrorInvalidOperation         400
      ├── MailboxDataArrayEmpty         ErrorMailboxDataArrayEmpty    400
      ├── MailboxDataArrayTooBig        ErrorMailboxDataArrayTooBig   400
      ├── InvalidTimeInterval           ErrorInvalidTimeInterval      400
      ├── TimeIntervalTooBig            ErrorTimeIntervalTooBig       400
      ├── InvalidMergedInterval         ErrorInvalidMergedFreeBusyInterval  400
      ├── InvalidFreeBusyViewType       ErrorInvalidFreeBusyViewType  400
      └── Unauthorized                  ErrorAccessDenied             401

* **Per-mailbox errors** are values (`MailboxError`), never exceptions, so one bad mailbox never
  blanks the others. Their codes are in `MAILBOX_ERROR_CODES`.

Adapters translate their library's exceptions into `BackendFailure` at their edge; the service
turns that into a `MailboxError` with code `ErrorFreeBusyGenerationFailed`.
"""

from __future__ import annotations

from dataclasses import dataclass


class RequestFault(Exception):
    """A problem with the whole request."""

    code = "ErrorInvalidRequest"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequest(RequestFault):
    code = "ErrorSchemaValidation"


class HostileXml(MalformedRequest):
    pass


class BodyTooLarge(RequestFault):
    code = "ErrorInvalidRequest"
    http_status = 413


class UnknownOperation(RequestFault):
    code = "ErrorInvalidOperation"


class MailboxDataArrayEmpty(RequestFault):
    code = "ErrorMailboxDataArrayEmpty"


class MailboxDataArrayTooBig(RequestFault):
    code = "ErrorMailboxDataArrayTooBig"


class InvalidTimeInterval(RequestFault):
    code = "ErrorInvalidTimeInterval"


class TimeIntervalTooBig(RequestFault):
    code = "ErrorTimeIntervalTooBig"


class InvalidMergedInterval(RequestFault):
    code = "ErrorInvalidMergedFreeBusyInterval"


class InvalidFreeBusyViewType(RequestFault):
    code = "ErrorInvalidFreeBusyViewType"


class Unauthorized(RequestFault):
    code = "ErrorAccessDenied"
    http_status = 401


class BackendFailure(Exception):
    """A mailbox backend could not produce data (unreachable, bad answer, timeout)."""


# Per-mailbox response codes, with the text used when no better one is known.
MAILBOX_ERROR_CODES: dict[str, str] = {
    "ErrorMailRecipientNotFound": "No mailbox with such address was found in the directory.",
    "ErrorNoFreeBusyAccess": "The requester may not see this mailbox's free/busy information.",
    "ErrorFreeBusyGenerationFailed": "Free/busy data could not be retrieved from the mailbox backend.",
    "ErrorProxyRequestProcessingFailed": "The request could not be passed to a node of the mailbox's site.",
    "ErrorTimeoutExpired": "The request's time budget ran out before the mailbox answered.",
}


@dataclass(frozen=True, slots=True)
class MailboxError:
    """Why one mailbox has no answer: its EWS response code, a message, and where it failed."""

    code: str
    message: str
    site: str | None = None

    def __post_init__(self) -> None:
        if self.code not in MAILBOX_ERROR_CODES:
            raise ValueError(f"unknown per-mailbox error code {self.code!r}")

    @classmethod
    def of(cls, code: str, detail: str | None = None, site: str | None = None) -> MailboxError:
        text = MAILBOX_ERROR_CODES[code]
        return cls(code, f"{text} {detail}".strip() if detail else text, site)
