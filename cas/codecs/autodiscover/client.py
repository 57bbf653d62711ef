"""The client side of SOAP Autodiscover `GetUserSettings`: one address out, its answer back in.

Pure functions over lxml, no I/O; used by `cas lookup`. The request has the shape exchangelib
5.6.0 sends (docs/protocols.md §3.1) but asks only for the settings a free/busy client
needs. The answer for the one user becomes `UserSettingsAnswer` (where its EWS lives),
`Redirect` (ask again with another address) or `NotFound`; everything else raises.

Errors, as a tree::

    AutodiscoverClientError
    ├── AutodiscoverError(code, message)   the server answered with an error code
    │                                      (InvalidRequest, ServerBusy, RedirectUrl, a SOAP
    │                                      fault, no EWS URL, ...)
    └── AutodiscoverProtocolError          not XML, not SOAP, not a GetUserSettings answer
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from cas.codecs.autodiscover.model import NotFound, Redirect
from cas.codecs.autodiscover.soap import (
    ACTION_PREFIX,
    AUTODISCOVER_NS,
    OPERATION,
    SOAP_NS,
    WSA_NS,
    XSI_NS,
)
from cas.codecs.ews.client import first_body_element, parse_answer_xml
from cas.codecs.ews.soap import xml_text
from cas.errors import CasError

DEFAULT_SETTINGS = ("ExternalEwsUrl", "AutoDiscoverSMTPAddress", "UserDisplayName")


class AutodiscoverClientError(CasError):
    """An Autodiscover answer that does not say where the mailbox's EWS is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AutodiscoverProtocolError(AutodiscoverClientError):
    """The answer is not a SOAP GetUserSettings answer at all."""


class AutodiscoverError(AutodiscoverClientError):
    """The server answered with an error `code` (top level, for the user, or a SOAP fault)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class UserSettingsAnswer:
    """Where a mailbox's EWS lives, its primary SMTP address and its display name."""

    ews_url: str
    address: str
    display_name: str | None = None


UserSettingsResult = UserSettingsAnswer | Redirect | NotFound


def _a(name: str) -> str:
    return f"{{{AUTODISCOVER_NS}}}{name}"


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    elem = etree.SubElement(parent, tag)
    if text is not None:
        elem.text = xml_text(text)
    return elem


def render_get_user_settings_request(
    address: str,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    *,
    url: str,
    server_version: str = "Exchange2016",
) -> bytes:
    """The SOAP envelope asking `url` for `settings` of `address`."""
    if not address.strip():
        raise ValueError("an address is required")
    if not settings:
        raise ValueError("at least one setting must be requested")
    env = etree.Element(
        f"{{{SOAP_NS}}}Envelope",
        nsmap={"s": SOAP_NS, "a": AUTODISCOVER_NS, "wsa": WSA_NS, "xsi": XSI_NS},
    )
    header = _sub(env, f"{{{SOAP_NS}}}Header")
    _sub(header, _a("RequestedServerVersion"), server_version)
    _sub(header, f"{{{WSA_NS}}}Action", f"{ACTION_PREFIX}{OPERATION}")
    _sub(header, f"{{{WSA_NS}}}To", url)
    body = _sub(env, f"{{{SOAP_NS}}}Body")
    request = _sub(_sub(body, _a("GetUserSettingsRequestMessage")), _a("Request"))
    _sub(_sub(_sub(request, _a("Users")), _a("User")), _a("Mailbox"), address.strip())
    wanted = _sub(request, _a("RequestedSettings"))
    for name in settings:
        _sub(wanted, _a("Setting"), name)
    out: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
    return out


# ---- reading ----------------------------------------------------------------------------------


def _text(parent: etree._Element, name: str) -> str | None:
    found = parent.find(_a(name))
    if found is None or found.get(f"{{{XSI_NS}}}nil") == "true":
        return None
    return (found.text or "").strip()


def _settings(user: etree._Element) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in user.iterfind(f"{_a('UserSettings')}/{_a('UserSetting')}"):
        name, value = _text(item, "Name"), _text(item, "Value")
        if name and value:
            values[name] = value
    return values


def _setting_error(user: etree._Element, setting: str) -> tuple[str, str] | None:
    for item in user.iterfind(f"{_a('UserSettingErrors')}/{_a('UserSettingError')}"):
        if _text(item, "SettingName") == setting:
            code = _text(item, "ErrorCode") or "SettingIsNotAvailable"
            return code, _text(item, "ErrorMessage") or ""
    return None


def _success(user: etree._Element, address: str | None) -> UserSettingsAnswer:
    values = _settings(user)
    ews_url = values.get("ExternalEwsUrl") or values.get("InternalEwsUrl")
    if not ews_url:
        code, message = _setting_error(user, "ExternalEwsUrl") or (
            "SettingIsNotAvailable",
            "The answer names no ExternalEwsUrl.",
        )
        raise AutodiscoverError(code, message or "The answer names no ExternalEwsUrl.")
    if not ews_url.lower().startswith(("https://", "http://")):
        raise AutodiscoverProtocolError(f"ExternalEwsUrl is not an http(s) URL: {ews_url!r}.")
    primary = values.get("AutoDiscoverSMTPAddress") or address
    if not primary:
        raise AutodiscoverProtocolError("The answer names no AutoDiscoverSMTPAddress.")
    return UserSettingsAnswer(ews_url, primary, values.get("UserDisplayName"))


def _user(user: etree._Element, address: str | None) -> UserSettingsResult:
    code = _text(user, "ErrorCode") or "NoError"
    message = _text(user, "ErrorMessage") or ""
    if code == "NoError":
        return _success(user, address)
    if code == "RedirectAddress":
        target = _text(user, "RedirectTarget") or ""
        if "@" not in target:
            raise AutodiscoverProtocolError(f"RedirectAddress to a non-address {target!r}.")
        return Redirect(target)
    if code == "InvalidUser":
        return NotFound(address or "")
    if code == "RedirectUrl":
        target = _text(user, "RedirectTarget") or "(no target)"
        raise AutodiscoverError(code, f"Autodiscover redirects to another server: {target}.")
    raise AutodiscoverError(code, message)


def parse_get_user_settings_response(
    body: bytes, *, address: str | None = None
) -> UserSettingsResult:
    """The answer about the one user asked about (`address`, if given, names it in results)."""
    root = parse_answer_xml(body, error=AutodiscoverProtocolError)
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise AutodiscoverProtocolError(f"Expected a SOAP 1.1 Envelope, got {root.tag}.")
    first = first_body_element(root)
    if first is None:
        raise AutodiscoverProtocolError("The SOAP answer has no Body content.")
    if first.tag == f"{{{SOAP_NS}}}Fault":
        raw = (first.findtext("faultcode") or "").strip()
        raise AutodiscoverError(
            raw.rpartition(":")[2] or "Fault", (first.findtext("faultstring") or "").strip()
        )
    if first.tag != _a("GetUserSettingsResponseMessage"):
        raise AutodiscoverProtocolError(
            f"Expected a GetUserSettingsResponseMessage, got {etree.QName(first).localname}."
        )
    response = first.find(_a("Response"))
    if response is None:
        raise AutodiscoverProtocolError("GetUserSettingsResponseMessage has no Response.")
    code = _text(response, "ErrorCode") or "NoError"
    if code != "NoError":
        raise AutodiscoverError(code, _text(response, "ErrorMessage") or "")
    users = response.findall(f"{_a('UserResponses')}/{_a('UserResponse')}")
    if len(users) != 1:
        raise AutodiscoverProtocolError(
            f"The answer has {len(users)} UserResponse elements for the one user asked about."
        )
    return _user(users[0], address)


__all__ = [
    "DEFAULT_SETTINGS",
    "AutodiscoverClientError",
    "AutodiscoverError",
    "AutodiscoverProtocolError",
    "UserSettingsAnswer",
    "UserSettingsResult",
    "parse_get_user_settings_response",
    "render_get_user_settings_request",
]
