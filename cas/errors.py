"""Errors of the availability service, each knowing its EWS response code and HTTP status.

Two families, kept apart on purpose:

* **Request faults** stop a whole request. They are exceptions and become a SOAP fault (EWS) or
  a 4xx with a message (other front doors). Each knows two HTTP statuses: `http_status` for the
  plain-HTTP front doors, and `soap_status` for EWS. SOAP 1.1 (§6.2) sends a fault with HTTP 500
  and EWS clients only read the fault of a 500 answer (exchangelib treats any other status as an
  unknown failure), so a fault about a well-formed request is a 500 *with a fault body*; input
  that is not a SOAP request at all gets a 4xx::

      class                             ResponseCode                  http  soap
      RequestFault                      ErrorInvalidRequest           400   500
      ├── MalformedRequest              ErrorSchemaValidation         400   400  (not XML, not SOAP)
      │   └── HostileXml                ErrorSchemaValidation         400   400  (DTD, entities)
      ├── InvalidValue                  ErrorSchemaValidation         400   500  (wrong type/value)
      ├── BodyTooLarge                  ErrorInvalidRequest           413   413
      ├── SlowBody                      ErrorInvalidRequest           408   408  (body not sent in time)
      ├── ClientGone                    ErrorInvalidRequest           400   400  (client went away)
      ├── UnknownOperation              ErrorInvalidOperation         400   500
      ├── MailboxDataArrayEmpty         ErrorMailboxDataArrayEmpty    400   500
      ├── MailboxDataArrayTooBig        ErrorMailboxDataArrayTooBig   400   500
      ├── InvalidTimeInterval           ErrorInvalidTimeInterval      400   500
      ├── TimeIntervalTooBig            ErrorTimeIntervalTooBig       400   500
      ├── InvalidMergedInterval         ErrorInvalidMergedFreeBusyInterval  400   500
      ├── InvalidFreeBusyViewType       ErrorInvalidFreeBusyViewType  400   500
      ├── Unauthorized                  ErrorAccessDenied             401   401
      │   └── AuthenticationUnavailable ErrorServerBusy               503   503  (directory, keys down)
      ├── ServerBusy                    ErrorServerBusy               503   503  (too much in flight)
      ├── Throttled                     ErrorServerBusy               429   500  (too many lookups)
      ├── UnknownAddress                ErrorMailRecipientNotFound    404   500  (presence: no such mailbox)
      ├── NoAccess                      ErrorNoFreeBusyAccess         403   500  (presence: level None)
      ├── TooManyAddresses              ErrorTooManyAddresses         400   500  (presence stream)
      ├── StreamsExhausted              ErrorServerBusy               503   503  (presence streams; Retry-After)
      └── InternalError                 ErrorInternalServerError      500   500  (a bug; logged)

  A fault may carry `headers` for its answer (`Retry-After` of `Throttled`) and `back_off_ms`,
  which the SOAP fault carries as `BackOffMilliseconds` (how EWS tells a client to slow down).

* **Per-mailbox errors** are values (`MailboxError`), never exceptions, so one bad mailbox never
  blanks the others. Their codes are in `MAILBOX_ERROR_CODES`.

Every exception the node raises derives from `CasError`; those defined elsewhere say where::

    CasError
    ├── RequestFault (the table above; codecs add their own, e.g. LegacyQueryError, PoxError)
    ├── BackendFailure             a source could not produce data (-> a per-mailbox error)
    │   ├── CalendarNotFound       the calendar does not exist (cached as missing)
    │   └── CalendarDataError      unusable calendar data (cas.sources.ical)
    ├── ConfigurationError         a setting points at something unusable
    ├── SettingsError              a bad setting value (cas.settings)
    ├── CacheUnavailable           the cache store cannot be used (cas.cache.store)
    ├── ForgedRequest              a forwarded request not to act on, 401/403 (raised by cas.trust)
    ├── PeerError                  another site's node (cas.sources.peers)
    ├── EwsClientError             an EWS answer unusable as a whole (cas.codecs.ews.client)
    ├── AutodiscoverClientError    likewise for Autodiscover (cas.codecs.autodiscover.client)
    ├── LegacyResponseError        an old server's answer (cas.codecs.public_freebusy)
    ├── LookupFailed               `cas lookup` found nothing to ask (cas.client.options)
    ├── IdentityConfigError, UsersFileError   identities misconfigured (cas.identity)
    └── UsageError                 a command-line mistake (cas.cli)

Adapters translate their library's exceptions into `BackendFailure` at their edge; the service
turns that into a `MailboxError` with code `ErrorFreeBusyGenerationFailed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class CasError(Exception):
    """The root of every error this package raises."""


class RequestFault(CasError):
    """A problem with the whole request."""

    code = "ErrorInvalidRequest"
    http_status = 400
    soap_status = 500
    back_off_ms: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Headers the answer to this fault carries (none but for some faults)."""
        return {}


class MalformedRequest(RequestFault):
    code = "ErrorSchemaValidation"
    soap_status = 400


class HostileXml(MalformedRequest):
    pass


class InvalidValue(RequestFault):
    """A well-formed SOAP request with a wrong element, type or value."""

    code = "ErrorSchemaValidation"


class BodyTooLarge(RequestFault):
    code = "ErrorInvalidRequest"
    http_status = 413
    soap_status = 413


class SlowBody(RequestFault):
    """The body did not arrive within the time allowed for it."""

    code = "ErrorInvalidRequest"
    http_status = 408
    soap_status = 408


class ClientGone(RequestFault):
    """The client went away before its request was read; nobody reads the answer."""

    soap_status = 400


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
    """No valid login. `challenge` is the `WWW-Authenticate` header to answer with, when the
    raiser knows it (the admin API's bearer token); else the node's authenticator gives it."""

    code = "ErrorAccessDenied"
    http_status = 401
    soap_status = 401

    def __init__(self, message: str, challenge: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.challenge = challenge


class ServerBusy(RequestFault):
    """The node has as many requests in flight as it takes; try again shortly (or elsewhere)."""

    code = "ErrorServerBusy"
    http_status = 503
    soap_status = 503


class AuthenticationUnavailable(Unauthorized):
    """Credentials could not be checked: the directory or the token issuer's keys are out of
    reach. Not the caller's fault, and not a refusal: answered 503, so clients retry later
    instead of asking their user for a password again."""

    code = "ErrorServerBusy"
    http_status = 503
    soap_status = 503


class Throttled(RequestFault):
    """The requester asked for more than its share (`cas.throttle`): EWS answers the fault
    ErrorServerBusy with `BackOffMilliseconds`, the other doors 429 with `Retry-After`."""

    code = "ErrorServerBusy"
    http_status = 429
    soap_status = 500  # EWS clients read the fault of a 500 answer only

    def __init__(self, message: str, back_off_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.back_off_ms = max(1, math.ceil(back_off_seconds * 1000))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil((self.back_off_ms or 0) / 1000)))}


class UnknownAddress(RequestFault):
    """A presence request names an address no mailbox has."""

    code = "ErrorMailRecipientNotFound"
    http_status = 404


class NoAccess(RequestFault):
    """The requester may see nothing of the one mailbox a presence request names."""

    code = "ErrorNoFreeBusyAccess"
    http_status = 403


class TooManyAddresses(RequestFault):
    """A presence stream names more addresses than `presence_max_addresses`."""

    code = "ErrorTooManyAddresses"


class StreamsExhausted(RequestFault):
    """This node holds as many presence streams as it may, or is draining: come back later
    (to this node or, through the load balancer, another one)."""

    code = "ErrorServerBusy"
    http_status = 503
    soap_status = 503

    def __init__(self, message: str, retry_after_seconds: int = 5) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class InternalError(RequestFault):
    code = "ErrorInternalServerError"
    http_status = 500


class ConfigurationError(CasError):
    """A setting points at something unusable (a missing secret file, a bad CA bundle)."""


class ForgedRequest(CasError):
    """A forwarded request that must not be acted on; `http_status` is 401 or 403."""

    def __init__(self, reason: str, http_status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class BackendFailure(CasError):
    """A mailbox backend could not produce data (unreachable, bad answer, timeout)."""


class CalendarNotFound(BackendFailure):
    """The backend says the mailbox's calendar does not exist (remembered for a short time)."""


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
    missing: bool = False  # the source says the mailbox's calendar does not exist (cacheable)
    plain: bool = False  # the message names nothing internal: a client may read it as it is

    def __post_init__(self) -> None:
        if self.code not in MAILBOX_ERROR_CODES:
            raise ValueError(f"unknown per-mailbox error code {self.code!r}")

    @property
    def detail(self) -> str:
        """The message without the code's standard text: what is particular to this error."""
        return self.message.removeprefix(MAILBOX_ERROR_CODES[self.code]).strip()

    @classmethod
    def of(
        cls,
        code: str,
        detail: str | None = None,
        site: str | None = None,
        missing: bool = False,
        *,
        plain: bool = False,
    ) -> MailboxError:
        text = MAILBOX_ERROR_CODES[code]
        return cls(code, f"{text} {detail}".strip() if detail else text, site, missing, plain)

    def for_client(self, request_id: str) -> MailboxError:
        """What a client is told: the code's plain reason and the request id (the codecs add
        the site). The detail (backend URLs, TLS and transport errors, node addresses) stays in
        the node's log under that request id; only the address a client asked about and plain
        reasons such as a deadline are repeated back."""
        text = MAILBOX_ERROR_CODES[self.code]
        if self.plain or self.code in CLIENT_DETAIL_CODES:
            text = self.message
        elif self.missing:
            text = f"{text} The mailbox's calendar does not exist."
        shown = f"{text} (request {request_id})"
        return MailboxError(self.code, shown, self.site, self.missing, plain=True)


# Codes whose detail is only what the client sent (the address it asked about).
CLIENT_DETAIL_CODES = frozenset({"ErrorMailRecipientNotFound", "ErrorNoFreeBusyAccess"})
