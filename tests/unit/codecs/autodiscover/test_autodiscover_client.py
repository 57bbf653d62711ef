"""The client side of SOAP GetUserSettings, checked against the server codec's own bytes."""

from __future__ import annotations

import pytest

from cas.codecs.autodiscover import (
    InvalidRequest,
    NotFound,
    Redirect,
    ServerFailure,
    UserSettings,
    parse_get_user_settings,
    render_get_user_settings,
    render_soap_error,
)
from cas.codecs.autodiscover.client import (
    DEFAULT_SETTINGS,
    AutodiscoverError,
    AutodiscoverProtocolError,
    UserSettingsAnswer,
    parse_get_user_settings_response,
    render_get_user_settings_request,
)
from cas.codecs.autodiscover.soap import AUTODISCOVER_NS, SOAP_NS, XSI_NS
from tests.unit.codecs.autodiscover.conftest import ANN

URL = "https://127.0.0.1:8443/autodiscover/autodiscover.svc"


def answer(address: str, result, settings=DEFAULT_SETTINGS) -> bytes:
    """What the server codec says about `address` when asked by our request."""
    request = parse_get_user_settings(render_get_user_settings_request(address, settings, url=URL))
    return render_get_user_settings(request, [result])


def test_the_server_reads_the_request() -> None:
    wire = render_get_user_settings_request("ann@contoso.test", url=URL)
    request = parse_get_user_settings(wire)
    assert request.mailboxes == ("ann@contoso.test",)
    assert request.requested_settings == (
        "ExternalEwsUrl",
        "AutoDiscoverSMTPAddress",
        "UserDisplayName",
    )
    assert request.requested_version == "Exchange2016"
    assert f"<wsa:To>{URL}</wsa:To>".encode() in wire
    assert b"/Autodiscover/Autodiscover/GetUserSettings</wsa:Action>" in wire


def test_other_settings_and_version_can_be_asked_for() -> None:
    wire = render_get_user_settings_request(
        "ann@contoso.test",
        ("ExternalEwsUrl", "EwsSupportedSchemas"),
        url=URL,
        server_version="Exchange2013",
    )
    request = parse_get_user_settings(wire)
    assert request.requested_settings == ("ExternalEwsUrl", "EwsSupportedSchemas")
    assert request.requested_version == "Exchange2013"


@pytest.mark.parametrize(("address", "settings"), [("", DEFAULT_SETTINGS), ("a@b.test", ())])
def test_a_request_needs_an_address_and_settings(address: str, settings: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        render_get_user_settings_request(address, settings, url=URL)


def test_settings_answer_names_ews_primary_address_and_display_name() -> None:
    result = parse_get_user_settings_response(answer("Ann.Alias@contoso.test", ANN))
    assert result == UserSettingsAnswer(ANN.ews_url, "ann@contoso.test", "Ann Example")


def test_a_setting_the_server_lacks_is_none_not_an_error() -> None:
    bare = UserSettings("bob@contoso.test", "https://n/EWS/Exchange.asmx")  # no display name
    assert parse_get_user_settings_response(answer("bob@contoso.test", bare)) == UserSettingsAnswer(
        "https://n/EWS/Exchange.asmx", "bob@contoso.test", None
    )


def test_without_the_primary_address_setting_the_asked_address_is_used() -> None:
    body = answer("ann@contoso.test", ANN, ("ExternalEwsUrl",))
    assert (
        parse_get_user_settings_response(body, address="ann@contoso.test").address
        == "ann@contoso.test"
    )
    with pytest.raises(AutodiscoverProtocolError, match="AutoDiscoverSMTPAddress"):
        parse_get_user_settings_response(body)


def test_no_ews_url_is_an_error_with_the_servers_code() -> None:
    with pytest.raises(AutodiscoverError) as caught:
        parse_get_user_settings_response(
            answer("ann@contoso.test", ANN, ("UserDisplayName", "Nonsense"))
        )
    assert caught.value.code == "SettingIsNotAvailable"


def test_redirect_and_not_found() -> None:
    assert parse_get_user_settings_response(
        answer("old@legacy.test", Redirect("ann@contoso.test"))
    ) == Redirect("ann@contoso.test")
    assert parse_get_user_settings_response(
        answer("x@contoso.test", NotFound()), address="x@contoso.test"
    ) == NotFound("x@contoso.test")


@pytest.mark.parametrize(
    ("result", "code", "words"),
    [(InvalidRequest("not an SMTP address"), "InvalidRequest", "not an SMTP address"),
     (ServerFailure("directory down"), "InternalServerError", "directory down")],
)  # fmt: skip
def test_user_errors_raise_with_their_code(result, code: str, words: str) -> None:
    with pytest.raises(AutodiscoverError, match=words) as caught:
        parse_get_user_settings_response(answer("ann@contoso.test", result))
    assert caught.value.code == code


def test_top_level_errors_raise() -> None:
    with pytest.raises(AutodiscoverError) as caught:
        parse_get_user_settings_response(render_soap_error("InvalidRequest", "The request is bad."))
    assert (caught.value.code, caught.value.message) == ("InvalidRequest", "The request is bad.")


def user_response(inner: str, count: int = 1) -> bytes:
    users = f"<UserResponse>{inner}</UserResponse>" * count
    return (
        f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><GetUserSettingsResponseMessage xmlns="{AUTODISCOVER_NS}">'
        f'<Response xmlns:i="{XSI_NS}"><ErrorCode>NoError</ErrorCode><UserResponses>{users}</UserResponses>'
        "</Response></GetUserSettingsResponseMessage></s:Body></s:Envelope>"
    ).encode()


def test_redirect_url_is_reported_not_followed() -> None:
    body = user_response(
        "<ErrorCode>RedirectUrl</ErrorCode><RedirectTarget>https://other.test/autodiscover/autodiscover.svc</RedirectTarget>"
    )
    with pytest.raises(AutodiscoverError, match="other.test") as caught:
        parse_get_user_settings_response(body)
    assert caught.value.code == "RedirectUrl"


def test_a_soap_fault_raises_its_code() -> None:
    body = f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>Bad</faultstring></s:Fault></s:Body></s:Envelope>'
    with pytest.raises(AutodiscoverError, match="Client: Bad"):
        parse_get_user_settings_response(body.encode())


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"<html>404</html>", "Envelope"),
        (b"{\"Url\": 1}", "well-formed"),
        (b'<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><s>&x;</s>', "DTD"),
        (f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><Other/></s:Body></s:Envelope>'.encode(), "Other"),
        (user_response("<ErrorCode>NoError</ErrorCode>", 2), "2 UserResponse"),
        (user_response("<ErrorCode>RedirectAddress</ErrorCode><RedirectTarget>nowhere</RedirectTarget>"), "nowhere"),
        (user_response("<ErrorCode>NoError</ErrorCode><UserSettings><UserSetting><Name>ExternalEwsUrl</Name>"
                       "<Value>ftp://x/</Value></UserSetting></UserSettings>"), "ftp://"),
    ],
)  # fmt: skip
def test_garbage_is_a_protocol_error(body: bytes, words: str) -> None:
    with pytest.raises(AutodiscoverProtocolError, match=words):
        parse_get_user_settings_response(body)
