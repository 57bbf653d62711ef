"""SOAP Autodiscover (MS-OXWSADISC) `GetUserSettings`: request bytes in, response bytes out.

This module owns the `/autodiscover/autodiscover.svc` wire format as exchangelib 5.6.0 speaks it
(docs/protocols.md §3.1): the request is read with the hardened parser, the answer lists one
`UserResponse` per requested mailbox, in request order, and carries **only** the setting names
the client asked for (exchangelib raises `KeyError` on any other name). Settings this server
cannot answer are reported per setting as `SettingIsNotAvailable`, which exchangelib ignores.

Errors. Autodiscover SOAP reports errors in-band, not as SOAP faults: a request that cannot be
served at all is answered with `Response/ErrorCode` `InvalidRequest` (`render_soap_error`);
`parse_get_user_settings` raises `AutodiscoverSoapError` for that, carrying the operation to
answer and the HTTP status to send (400 when the body is not a SOAP request at all, 200 when a
well-formed request is refused, as the error is then part of a normal answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lxml import etree

from cas.codecs.autodiscover.model import (
    Answer,
    InvalidRequest,
    NotFound,
    Redirect,
    ServerFailure,
    UserSettings,
)
from cas.codecs.ews.soap import SERVER_VERSION_INFO, xml_text
from cas.codecs.ews.xmlsafe import parse_xml
from cas.errors import MalformedRequest, RequestFault

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/2010/Autodiscover"
WSA_NS = "http://www.w3.org/2005/08/addressing"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
ACTION_PREFIX = "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/"

# Exchange answers at most 100 users per GetUserSettings request.
MAX_MAILBOXES = 100
OPERATION = "GetUserSettings"

# The schema list Exchange 2016 publishes. exchangelib sorts it as strings and takes the
# largest, "Exchange2016", which is also what the EWS codec's ServerVersionInfo reports.
EWS_SUPPORTED_SCHEMAS = (
    "Exchange2007, Exchange2007_SP1, Exchange2010, Exchange2010_SP1, Exchange2010_SP2, "
    "Exchange2013, Exchange2013_SP1, Exchange2015, Exchange2016"
)

_VERSION = dict(SERVER_VERSION_INFO)
# Exchange's own spelling of a build in CasVersion / ExternalEwsVersion: 15.01.2507.006.
CAS_VERSION = (
    f"{int(_VERSION['MajorVersion'])}.{int(_VERSION['MinorVersion']):02d}."
    f"{int(_VERSION['MajorBuildNumber']):04d}.{int(_VERSION['MinorBuildNumber']):03d}"
)

# Top-level and per-user ErrorCode values of MS-OXWSADISC (ErrorCode simple type).
ERROR_CODES = frozenset(
    {
        "NoError",
        "RedirectAddress",
        "RedirectUrl",
        "InvalidUser",
        "InvalidRequest",
        "InvalidSetting",
        "SettingIsNotAvailable",
        "ServerBusy",
        "InvalidDomain",
        "NotFederated",
        "InternalServerError",
    }
)

# Every setting this server answers, as a function of the neutral answer. One table, one place.
SUPPORTED_SETTINGS: dict[str, Callable[[UserSettings], str | None]] = {
    "AutoDiscoverSMTPAddress": lambda u: u.address,
    "ExternalEwsUrl": lambda u: u.ews_url,
    "InternalEwsUrl": lambda u: u.effective_internal_ews_url,
    "EwsSupportedSchemas": lambda u: EWS_SUPPORTED_SCHEMAS,
    "UserDisplayName": lambda u: u.display_name,
    "UserDN": lambda u: u.legacy_dn,
    "UserDeploymentId": lambda u: u.deployment_id,
    "CasVersion": lambda u: CAS_VERSION,
    "ExternalEwsVersion": lambda u: CAS_VERSION,
}

# What a setting name looks like; anything else is answered InvalidSetting.
_SETTING_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,99}")


class AutodiscoverSoapError(RequestFault):
    """A SOAP Autodiscover request refused as a whole; answer with `render_request_error`."""

    code = "InvalidRequest"
    soap_status = 200

    def __init__(self, message: str, *, operation: str = OPERATION, http_status: int = 200) -> None:
        super().__init__(message)
        self.operation = operation
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class GetUserSettingsRequest:
    """Who is asked about, which settings, and the version the client asked for."""

    mailboxes: tuple[str, ...]
    requested_settings: tuple[str, ...]
    requested_version: str | None = None


# ---- reading ---------------------------------------------------------------------------------


def _a(name: str) -> str:
    return f"{{{AUTODISCOVER_NS}}}{name}"


def _text(elem: etree._Element | None) -> str | None:
    return None if elem is None else (elem.text or "").strip()


def _operation_of(elem: etree._Element) -> str:
    """`GetDomainSettings` for `a:GetDomainSettingsRequestMessage`; ours for anything odd."""
    qname = etree.QName(elem)
    if qname.namespace == AUTODISCOVER_NS and qname.localname.endswith("RequestMessage"):
        name: str = qname.localname.removesuffix("RequestMessage")
        if _SETTING_NAME.fullmatch(name):
            return name
    return OPERATION


def parse_get_user_settings(body: bytes) -> GetUserSettingsRequest:
    """The GetUserSettings request in `body`, or `AutodiscoverSoapError`."""
    try:
        root = parse_xml(body)
    except MalformedRequest as exc:
        raise AutodiscoverSoapError(exc.message, http_status=400) from exc
    if root.tag == f"{{{SOAP12_NS}}}Envelope":
        raise AutodiscoverSoapError(
            f"SOAP 1.2 is not supported here; send a SOAP 1.1 envelope ({SOAP_NS}).",
            http_status=400,
        )
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise AutodiscoverSoapError(
            f"Expected a SOAP 1.1 Envelope but the document element is {root.tag}.",
            http_status=400,
        )
    body_elem = root.find(f"{{{SOAP_NS}}}Body")
    message = (
        None if body_elem is None else next((c for c in body_elem if isinstance(c.tag, str)), None)
    )
    if message is None:
        raise AutodiscoverSoapError("The SOAP Body holds no Autodiscover request.", http_status=400)
    if message.tag != _a("GetUserSettingsRequestMessage"):
        operation = _operation_of(message)
        raise AutodiscoverSoapError(
            f"The operation {etree.QName(message).localname} is not supported by this server; "
            f"only {OPERATION} is.",
            operation=operation,
        )
    request = message.find(_a("Request"))
    if request is None:
        raise AutodiscoverSoapError("GetUserSettingsRequestMessage has no Request element.")

    mailboxes = tuple(
        _text(user.find(_a("Mailbox"))) or ""
        for user in request.iterfind(f"{_a('Users')}/{_a('User')}")
    )
    if not mailboxes:
        raise AutodiscoverSoapError("The request names no users (Users/User/Mailbox).")
    if len(mailboxes) > MAX_MAILBOXES:
        raise AutodiscoverSoapError(
            f"The request names {len(mailboxes)} users; at most {MAX_MAILBOXES} are allowed."
        )
    settings: dict[str, None] = {}  # ordered and without duplicates
    for setting in request.iterfind(f"{_a('RequestedSettings')}/{_a('Setting')}"):
        name = _text(setting)
        if name:
            settings[name] = None
    if not settings:
        raise AutodiscoverSoapError("The request asks for no settings (RequestedSettings/Setting).")

    version = None
    header = root.find(f"{{{SOAP_NS}}}Header")
    if header is not None:
        version = _text(header.find(_a("RequestedServerVersion"))) or None
    if version is None:
        version = _text(request.find(_a("RequestedVersion"))) or None
    return GetUserSettingsRequest(mailboxes, tuple(settings), version)


# ---- writing ---------------------------------------------------------------------------------


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _a(name))
    if text is not None:
        child.text = xml_text(text)
    return child


def _nil(parent: etree._Element, name: str) -> None:
    etree.SubElement(parent, _a(name), {f"{{{XSI_NS}}}nil": "true"})


def _envelope(operation: str) -> tuple[etree._Element, etree._Element]:
    """The envelope with wsa:Action and ServerVersionInfo headers; returns (root, Response)."""
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS, "a": WSA_NS})
    header = etree.SubElement(env, f"{{{SOAP_NS}}}Header")
    action = etree.SubElement(header, f"{{{WSA_NS}}}Action", {f"{{{SOAP_NS}}}mustUnderstand": "1"})
    action.text = f"{ACTION_PREFIX}{operation}Response"
    info = etree.SubElement(
        header, _a("ServerVersionInfo"), nsmap={"h": AUTODISCOVER_NS, "i": XSI_NS}
    )
    for name, value in SERVER_VERSION_INFO:
        _sub(info, name, value)
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    message = etree.SubElement(
        body, _a(f"{operation}ResponseMessage"), nsmap={None: AUTODISCOVER_NS}
    )
    response = etree.SubElement(message, _a("Response"), nsmap={"i": XSI_NS})
    return env, response


def _serialize(env: etree._Element) -> bytes:
    out: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
    return out


def render_soap_error(code: str, message: str, *, operation: str = OPERATION) -> bytes:
    """A whole-request error: `Response/ErrorCode` `code` and no user responses."""
    if code not in ERROR_CODES or code == "NoError":
        raise ValueError(f"not an Autodiscover error code: {code!r}")
    env, response = _envelope(operation)
    _sub(response, "ErrorCode", code)
    _sub(response, "ErrorMessage", message)
    return _serialize(env)


def render_request_error(error: AutodiscoverSoapError) -> bytes:
    """The answer to a request `parse_get_user_settings` refused."""
    return render_soap_error(error.code, error.message, operation=error.operation)


def _user_error(code: str, setting: str, message: str, errors: etree._Element) -> None:
    item = _sub(errors, "UserSettingError")
    _sub(item, "ErrorCode", code)
    _sub(item, "ErrorMessage", message)
    _sub(item, "SettingName", setting)


def _render_settings(
    user: etree._Element, settings: UserSettings, requested: Sequence[str]
) -> None:
    errors = _sub(user, "UserSettingErrors")
    values = _sub(user, "UserSettings")
    for name in requested:
        if not _SETTING_NAME.fullmatch(name):
            _user_error("InvalidSetting", name, f"The setting '{name}' is invalid.", errors)
            continue
        getter = SUPPORTED_SETTINGS.get(name)
        value = getter(settings) if getter is not None else None
        if value is None:
            message = f"User setting '{name}' is not available."
            _user_error("SettingIsNotAvailable", name, message, errors)
            continue
        item = _sub(values, "UserSetting")
        item.set(f"{{{XSI_NS}}}type", "StringSetting")
        _sub(item, "Name", name)
        _sub(item, "Value", value)


def _render_user(
    responses: etree._Element, mailbox: str, answer: Answer, requested: Sequence[str]
) -> None:
    user = _sub(responses, "UserResponse")
    if isinstance(answer, UserSettings):
        _sub(user, "ErrorCode", "NoError")
        _sub(user, "ErrorMessage", "No error.")
        _nil(user, "RedirectTarget")
        _render_settings(user, answer, requested)
        return
    if isinstance(answer, Redirect):
        _sub(user, "ErrorCode", "RedirectAddress")
        _sub(user, "ErrorMessage", "Redirection address.")
        _sub(user, "RedirectTarget", answer.address)
    else:
        if isinstance(answer, NotFound):
            code, message = "InvalidUser", f"Invalid user: '{mailbox}'"
        elif isinstance(answer, InvalidRequest):
            code, message = "InvalidRequest", answer.message
        elif isinstance(answer, ServerFailure):
            code, message = "InternalServerError", answer.message
        else:
            raise TypeError(f"not an Autodiscover answer: {answer!r}")
        _sub(user, "ErrorCode", code)
        _sub(user, "ErrorMessage", message)
        _nil(user, "RedirectTarget")
    _sub(user, "UserSettingErrors")
    _sub(user, "UserSettings")


def render_get_user_settings(request: GetUserSettingsRequest, answers: Sequence[Answer]) -> bytes:
    """One `UserResponse` per requested mailbox, in order; `answers[i]` is for `mailboxes[i]`."""
    if len(answers) != len(request.mailboxes):
        raise ValueError(
            f"{len(answers)} answers for {len(request.mailboxes)} mailboxes; they must pair up"
        )
    env, response = _envelope(OPERATION)
    _sub(response, "ErrorCode", "NoError")
    _sub(response, "ErrorMessage", "")
    responses = _sub(response, "UserResponses")
    for mailbox, answer in zip(request.mailboxes, answers, strict=True):
        _render_user(responses, mailbox, answer, request.requested_settings)
    return _serialize(env)


__all__ = [
    "AUTODISCOVER_NS",
    "CAS_VERSION",
    "EWS_SUPPORTED_SCHEMAS",
    "MAX_MAILBOXES",
    "SUPPORTED_SETTINGS",
    "AutodiscoverSoapError",
    "GetUserSettingsRequest",
    "parse_get_user_settings",
    "render_get_user_settings",
    "render_request_error",
    "render_soap_error",
]
