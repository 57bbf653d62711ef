"""SOAP Autodiscover GetUserSettings: what exchangelib sends is read, what we answer it accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from cas.codecs.autodiscover import (
    EWS_SUPPORTED_SCHEMAS,
    SUPPORTED_SETTINGS,
    Answer,
    AutodiscoverSoapError,
    GetUserSettingsRequest,
    InvalidRequest,
    NotFound,
    Redirect,
    ServerFailure,
    parse_get_user_settings,
    render_get_user_settings,
    render_request_error,
    render_soap_error,
)
from cas.codecs.autodiscover.soap import ACTION_PREFIX, AUTODISCOVER_NS, CAS_VERSION, MAX_MAILBOXES
from tests.unit.codecs.autodiscover.conftest import ANN

A = f"{{{AUTODISCOVER_NS}}}"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"


def envelope(inner: str, header: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{AUTODISCOVER_NS}">'
        f"<s:Header>{header}</s:Header><s:Body>{inner}</s:Body></s:Envelope>"
    ).encode()


def gus(users: list[str], settings_: list[str], extra: str = "") -> bytes:
    users_xml = "".join(f"<a:User><a:Mailbox>{u}</a:Mailbox></a:User>" for u in users)
    settings_xml = "".join(f"<a:Setting>{s}</a:Setting>" for s in settings_)
    return envelope(
        "<a:GetUserSettingsRequestMessage><a:Request>"
        f"<a:Users>{users_xml}</a:Users><a:RequestedSettings>{settings_xml}</a:RequestedSettings>"
        f"{extra}</a:Request></a:GetUserSettingsRequestMessage>"
    )


def setting_names(xml: bytes) -> list[list[str]]:
    root = etree.fromstring(xml)
    return [
        [n.text or "" for n in user.iterfind(f"{A}UserSettings/{A}UserSetting/{A}Name")]
        for user in root.iter(f"{A}UserResponse")
    ]


def exchangelib_parse(service: Any, xml: bytes) -> list[Any]:
    return list(service.parse(xml))


# ---- parsing ---------------------------------------------------------------------------------


def test_exchangelib_request_is_read_in_full(request_bytes: Callable[[str], bytes]) -> None:
    from exchangelib.properties import UserResponse

    req = parse_get_user_settings(request_bytes("get_user_settings_exchangelib.xml"))
    assert req.mailboxes == ("ann@contoso.test",)
    assert req.requested_version == "Exchange2016"
    assert len(req.requested_settings) == 62
    assert set(req.requested_settings) == set(UserResponse.SETTINGS_MAP.values())


def test_exchangelib_auth_probe_is_read(request_bytes: Callable[[str], bytes]) -> None:
    req = parse_get_user_settings(request_bytes("get_user_settings_probe.xml"))
    assert req == GetUserSettingsRequest(
        ("DUMMY@example.com",), ("AutoDiscoverSMTPAddress",), "Exchange2016"
    )


def test_body_requested_version_is_used_without_header() -> None:
    body = gus(
        ["ann@contoso.test"],
        ["ExternalEwsUrl"],
        "<a:RequestedVersion>Exchange2013</a:RequestedVersion>",
    )
    assert parse_get_user_settings(body).requested_version == "Exchange2013"


def test_settings_are_deduplicated_in_order() -> None:
    req = parse_get_user_settings(gus(["a@x.test"], ["UserDN", "ExternalEwsUrl", "UserDN"]))
    assert req.requested_settings == ("UserDN", "ExternalEwsUrl")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"not xml at all", 400, "well-formed"),
        (b"<a>unclosed", 400, "well-formed"),
        (b'<x xmlns="urn:other"/>', 400, "SOAP 1.1"),
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            400,
            "SOAP 1.2",
        ),
        (envelope(""), 400, "no Autodiscover request"),
        (envelope("<a:GetUserSettingsRequestMessage/>"), 200, "no Request"),
        (gus([], ["ExternalEwsUrl"]), 200, "no users"),
        (gus(["a@x.test"], []), 200, "no settings"),
        (gus(["a@x.test"], ["  "]), 200, "no settings"),
        (
            gus([f"u{i}@x.test" for i in range(MAX_MAILBOXES + 1)], ["ExternalEwsUrl"]),
            200,
            "at most",
        ),
    ],
)
def test_unusable_requests_are_refused_with_invalid_request(
    body: bytes, status: int, fragment: str
) -> None:
    with pytest.raises(AutodiscoverSoapError) as info:
        parse_get_user_settings(body)
    assert info.value.code == "InvalidRequest"
    assert info.value.http_status == status
    assert info.value.operation == "GetUserSettings"
    assert fragment in info.value.message


def test_other_operations_are_refused_in_their_own_response(
    request_bytes: Callable[[str], bytes], autodiscover_service: Any
) -> None:
    with pytest.raises(AutodiscoverSoapError) as info:
        parse_get_user_settings(request_bytes("get_domain_settings.xml"))
    assert info.value.operation == "GetDomainSettings"
    root = etree.fromstring(render_request_error(info.value))
    assert root.find(f"{{{SOAP}}}Body/{A}GetDomainSettingsResponseMessage") is not None
    action = root.findtext(f"{{{SOAP}}}Header/{{{WSA}}}Action")
    assert action == ACTION_PREFIX + "GetDomainSettingsResponse"
    assert root.findtext(f".//{A}Response/{A}ErrorCode") == "InvalidRequest"


@pytest.mark.parametrize("name", ["soap_xxe.xml"])
def test_hostile_xml_is_refused_without_expansion(
    name: str, request_bytes: Callable[[str], bytes]
) -> None:
    with pytest.raises(AutodiscoverSoapError) as info:
        parse_get_user_settings(request_bytes(name))
    assert info.value.http_status == 400
    assert "root:" not in info.value.message
    answer = render_request_error(info.value)
    assert b"root:" not in answer
    assert etree.fromstring(answer).findtext(f".//{A}ErrorCode") == "InvalidRequest"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_the_documented_error(body: bytes) -> None:
    try:
        parse_get_user_settings(body)
    except AutodiscoverSoapError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=5), st.lists(st.text(max_size=40), max_size=5))
def test_arbitrary_mailboxes_and_settings_round_trip_or_refuse(
    users: list[str], names: list[str]
) -> None:
    from xml.sax.saxutils import escape

    body = gus([escape(u) for u in users], [escape(n) for n in names])
    try:
        req = parse_get_user_settings(body)
    except AutodiscoverSoapError:
        return
    xml = render_get_user_settings(req, [NotFound()] * len(req.mailboxes))
    assert len(list(etree.fromstring(xml).iter(f"{A}UserResponse"))) == len(req.mailboxes)


# ---- rendering -------------------------------------------------------------------------------


def test_golden_success(golden: Callable[[str, bytes], None]) -> None:
    req = GetUserSettingsRequest(
        ("ann@contoso.test",),
        ("UserDisplayName", "ExternalEwsUrl", "AutoDiscoverSMTPAddress", "MapiHttpEnabled"),
        "Exchange2016",
    )
    golden("get_user_settings_success.xml", render_get_user_settings(req, [ANN]))


def test_golden_top_level_error(golden: Callable[[str, bytes], None]) -> None:
    golden("get_user_settings_invalid_request.xml", render_soap_error("InvalidRequest", "Bad."))


def test_only_requested_names_come_back(request_bytes: Callable[[str], bytes]) -> None:
    req = parse_get_user_settings(request_bytes("get_user_settings_exchangelib.xml"))
    xml = render_get_user_settings(req, [ANN])
    [names] = setting_names(xml)
    assert set(names) <= set(req.requested_settings)
    assert set(names) == set(SUPPORTED_SETTINGS)
    errors = etree.fromstring(xml).findall(f".//{A}UserSettingError")
    assert {e.findtext(f"{A}SettingName") for e in errors} == set(req.requested_settings) - set(
        names
    )
    assert {e.findtext(f"{A}ErrorCode") for e in errors} == {"SettingIsNotAvailable"}

    narrow = GetUserSettingsRequest(("ann@contoso.test",), ("ExternalEwsUrl",))
    assert setting_names(render_get_user_settings(narrow, [ANN])) == [["ExternalEwsUrl"]]


def test_unanswerable_values_become_setting_errors() -> None:
    from cas.codecs.autodiscover import UserSettings

    bare = UserSettings("bob@contoso.test", "https://n.contoso.test/EWS/Exchange.asmx")
    req = GetUserSettingsRequest(
        ("bob@contoso.test",), ("UserDisplayName", "UserDN", "ExternalEwsUrl", "no such!")
    )
    root = etree.fromstring(render_get_user_settings(req, [bare]))
    errors = {
        e.findtext(f"{A}SettingName"): e.findtext(f"{A}ErrorCode")
        for e in root.iter(f"{A}UserSettingError")
    }
    assert errors == {
        "UserDisplayName": "SettingIsNotAvailable",
        "UserDN": "SettingIsNotAvailable",
        "no such!": "InvalidSetting",
    }
    assert setting_names(etree.tostring(root)) == [["ExternalEwsUrl"]]


def test_values_of_each_supported_setting() -> None:
    req = GetUserSettingsRequest(("ann@contoso.test",), tuple(SUPPORTED_SETTINGS))
    root = etree.fromstring(render_get_user_settings(req, [ANN]))
    values = {s.findtext(f"{A}Name"): s.findtext(f"{A}Value") for s in root.iter(f"{A}UserSetting")}
    assert values == {
        "AutoDiscoverSMTPAddress": "ann@contoso.test",
        "ExternalEwsUrl": ANN.ews_url,
        "InternalEwsUrl": ANN.internal_ews_url,
        "EwsSupportedSchemas": EWS_SUPPORTED_SCHEMAS,
        "UserDisplayName": "Ann Example",
        "UserDN": ANN.legacy_dn,
        "UserDeploymentId": ANN.deployment_id,
        "CasVersion": CAS_VERSION,
        "ExternalEwsVersion": CAS_VERSION,
    }
    assert CAS_VERSION == "15.01.2507.006"


def test_response_envelope_shape() -> None:
    req = GetUserSettingsRequest(("ann@contoso.test",), ("ExternalEwsUrl",))
    root = etree.fromstring(render_get_user_settings(req, [ANN]))
    action = root.find(f"{{{SOAP}}}Header/{{{WSA}}}Action")
    assert action is not None and action.get(f"{{{SOAP}}}mustUnderstand") == "1"
    assert action.text.endswith("/Autodiscover/GetUserSettingsResponse")
    info = root.find(f"{{{SOAP}}}Header/{A}ServerVersionInfo")
    assert info is not None and info.findtext(f"{A}MajorVersion") == "15"
    response = root.find(f"{{{SOAP}}}Body/{A}GetUserSettingsResponseMessage/{A}Response")
    assert response is not None
    assert [etree.QName(c).localname for c in response] == [
        "ErrorCode",
        "ErrorMessage",
        "UserResponses",
    ]
    user = response.find(f"{A}UserResponses/{A}UserResponse")
    assert [etree.QName(c).localname for c in user] == [
        "ErrorCode",
        "ErrorMessage",
        "RedirectTarget",
        "UserSettingErrors",
        "UserSettings",
    ]
    setting = user.find(f"{A}UserSettings/{A}UserSetting")
    assert setting.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "StringSetting"


def test_one_user_response_per_mailbox_in_order() -> None:
    req = GetUserSettingsRequest(
        ("ann@contoso.test", "nobody@contoso.test", "alias@contoso.test", "?", "x@contoso.test"),
        ("ExternalEwsUrl",),
    )
    answers: list[Answer] = [
        ANN,
        NotFound(),
        Redirect("ann@contoso.example"),
        InvalidRequest("Bad."),
        ServerFailure("Down."),
    ]
    root = etree.fromstring(render_get_user_settings(req, answers))
    codes = [u.findtext(f"{A}ErrorCode") for u in root.iter(f"{A}UserResponse")]
    assert codes == [
        "NoError",
        "InvalidUser",
        "RedirectAddress",
        "InvalidRequest",
        "InternalServerError",
    ]
    targets = [u.findtext(f"{A}RedirectTarget") for u in root.iter(f"{A}UserResponse")]
    assert targets[2] == "ann@contoso.example"


def test_answers_must_pair_with_mailboxes() -> None:
    req = GetUserSettingsRequest(("a@x.test", "b@x.test"), ("ExternalEwsUrl",))
    with pytest.raises(ValueError):
        render_get_user_settings(req, [ANN])


def test_render_soap_error_knows_the_codes() -> None:
    with pytest.raises(ValueError):
        render_soap_error("ErrorSomethingElse", "x")
    with pytest.raises(ValueError):
        render_soap_error("NoError", "x")


def test_characters_xml_cannot_carry_are_dropped() -> None:
    req = GetUserSettingsRequest(("ann@contoso.test",), ("UserDisplayName",))
    from dataclasses import replace

    xml = render_get_user_settings(req, [replace(ANN, display_name="Ann\x00\x07 Example")])
    assert etree.fromstring(xml).findtext(f".//{A}Value") == "Ann Example"


# ---- exchangelib accepts what we render ------------------------------------------------------


def test_exchangelib_reads_url_address_and_version(
    request_bytes: Callable[[str], bytes], autodiscover_service: Any
) -> None:
    from exchangelib.autodiscover import Autodiscovery
    from exchangelib.protocol import close_connections

    req = parse_get_user_settings(request_bytes("get_user_settings_exchangelib.xml"))
    [res] = exchangelib_parse(autodiscover_service, render_get_user_settings(req, [ANN]))
    res.raise_errors()  # SettingIsNotAvailable for the rest is harmless to exchangelib
    assert res.ews_url == ANN.ews_url
    assert res.autodiscover_smtp_address == "ann@contoso.test"
    assert res.version.api_version == "Exchange2016"
    assert res.version.build.major_version >= 14  # so exchangelib calls GetServerTimeZones

    discovery = Autodiscovery(email="ann.alias@contoso.test")
    ad, protocol = discovery._build_response(ad_response=discovery._step_5(ad=res))
    assert protocol.service_endpoint == ANN.ews_url
    assert protocol.version.api_version == "Exchange2016"
    assert ad.autodiscover_smtp_address == "ann@contoso.test"
    close_connections()


def test_exchangelib_reads_the_server_version_header(autodiscover_service: Any) -> None:
    from exchangelib.version import Version

    req = GetUserSettingsRequest(("ann@contoso.test",), ("ExternalEwsUrl",))
    root = etree.fromstring(render_get_user_settings(req, [ANN]))
    version = Version.from_soap_header("Exchange2016", root.find(f"{{{SOAP}}}Header"))
    assert (version.build.major_version, version.build.minor_version) == (15, 1)
    assert version.api_version == "Exchange2016"


def test_exchangelib_sees_a_redirect(autodiscover_service: Any) -> None:
    req = GetUserSettingsRequest(("alias@contoso.test",), ("ExternalEwsUrl",))
    [res] = exchangelib_parse(
        autodiscover_service, render_get_user_settings(req, [Redirect("ann@contoso.example")])
    )
    res.raise_errors()
    assert res.redirect_address == "ann@contoso.example"
    assert res.redirect_url is None


def test_exchangelib_sees_a_missing_mailbox(autodiscover_service: Any) -> None:
    from exchangelib.errors import ErrorNonExistentMailbox

    req = GetUserSettingsRequest(("nobody@contoso.test",), ("ExternalEwsUrl",))
    [res] = exchangelib_parse(autodiscover_service, render_get_user_settings(req, [NotFound()]))
    with pytest.raises(ErrorNonExistentMailbox):
        res.raise_errors()


def test_exchangelib_fails_autodiscover_on_invalid_request(autodiscover_service: Any) -> None:
    from exchangelib.errors import AutoDiscoverFailed, TransportError

    req = GetUserSettingsRequest(("x",), ("ExternalEwsUrl",))
    [res] = exchangelib_parse(
        autodiscover_service, render_get_user_settings(req, [InvalidRequest("Not an address.")])
    )
    with pytest.raises(AutoDiscoverFailed):
        res.raise_errors()
    with pytest.raises(TransportError):
        exchangelib_parse(autodiscover_service, render_soap_error("InvalidRequest", "Bad."))


def test_exchangelib_accepts_the_probe_answer(
    request_bytes: Callable[[str], bytes], autodiscover_service: Any
) -> None:
    req = parse_get_user_settings(request_bytes("get_user_settings_probe.xml"))
    [res] = exchangelib_parse(autodiscover_service, render_get_user_settings(req, [NotFound()]))
    assert res.error_code == "InvalidUser"
