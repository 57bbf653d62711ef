"""POX Autodiscover (Outlook 2006a): requests read, answers shaped as MS-OXDSCLI shows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from cas.codecs.autodiscover import (
    Answer,
    InvalidRequest,
    NotFound,
    PoxError,
    PoxRequest,
    Redirect,
    ServerFailure,
    UserSettings,
    parse_pox_request,
    render_pox,
    render_pox_error,
)
from cas.codecs.autodiscover.pox import (
    ERROR_MESSAGES,
    OUTLOOK_RESPONSE_NS,
    REQUEST_NS,
    RESPONSE_NS,
    server_version_hex,
)
from tests.unit.codecs.autodiscover.conftest import ANN, NODE, NOW

R = f"{{{RESPONSE_NS}}}"
OA = f"{{{OUTLOOK_RESPONSE_NS}}}"
OUTLOOK = PoxRequest("ann@contoso.test", None)


def pox(inner: str, ns: str = REQUEST_NS) -> bytes:
    return f'<Autodiscover xmlns="{ns}"><Request>{inner}</Request></Autodiscover>'.encode()


SCHEMA = f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema>"


def error_of(xml: bytes) -> tuple[int, str, dict[str, str]]:
    root = etree.fromstring(xml)
    assert root.tag == f"{R}Autodiscover"
    error = root.find(f"{R}Response/{R}Error")
    assert error is not None
    return (
        int(error.findtext(f"{R}ErrorCode") or 0),
        error.findtext(f"{R}Message") or "",
        dict(error.attrib),
    )


# ---- parsing ---------------------------------------------------------------------------------


def test_outlook_request_by_address(request_bytes: Callable[[str], bytes]) -> None:
    assert parse_pox_request(request_bytes("pox_outlook_email.xml")) == OUTLOOK


def test_outlook_request_by_legacy_dn(request_bytes: Callable[[str], bytes]) -> None:
    req = parse_pox_request(request_bytes("pox_outlook_legacy_dn.xml"))
    assert req.email is None
    assert req.legacy_dn == ANN.legacy_dn
    assert req.acceptable_schema == OUTLOOK_RESPONSE_NS


def test_https_schema_uris_from_documentation_samples_are_accepted() -> None:
    https = REQUEST_NS.replace("http://", "https://")
    body = pox(
        "<EMailAddress> ann@contoso.test </EMailAddress><AcceptableResponseSchema>"
        f"{OUTLOOK_RESPONSE_NS.replace('http://', 'https://')}</AcceptableResponseSchema>",
        https,
    )
    assert parse_pox_request(body) == OUTLOOK


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", 600),
        (b"garbage", 600),
        (b"<Autodiscover><Request>", 600),
        (b"<Autodiscover/>", 600),  # no namespace
        (b'<Other xmlns="' + REQUEST_NS.encode() + b'"/>', 600),
        (f'<Autodiscover xmlns="{REQUEST_NS}"/>'.encode(), 600),  # no Request
        (pox(SCHEMA), 600),  # neither address nor legacy DN
        (pox("<EMailAddress>ann@contoso.test</EMailAddress>"), 600),  # no schema
        (pox("<EMailAddress>" + "a" * 2000 + "@x.test</EMailAddress>" + SCHEMA), 600),
        (pox("<EMailAddress>ann@contoso.test</EMailAddress>" + SCHEMA, "urn:other"), 600),
        (
            pox(
                "<EMailAddress>ann@contoso.test</EMailAddress>"
                "<AcceptableResponseSchema>urn:nope</AcceptableResponseSchema>"
            ),
            601,
        ),
    ],
)
def test_unusable_requests_get_their_pox_code(body: bytes, code: int) -> None:
    with pytest.raises(PoxError) as info:
        parse_pox_request(body)
    assert info.value.pox_code == code
    assert info.value.http_status == 200
    assert info.value.message in (
        ERROR_MESSAGES[code],
        "EMailAddress is longer than 1024 characters.",
    )


@pytest.mark.parametrize("name", ["pox_mobilesync.xml", "pox_outlook_asks_mobilesync.xml"])
def test_mobilesync_schema_is_601(name: str, request_bytes: Callable[[str], bytes]) -> None:
    with pytest.raises(PoxError) as info:
        parse_pox_request(request_bytes(name))
    assert info.value.pox_code == 601


@pytest.mark.parametrize("name", ["pox_billion_laughs.xml", "pox_xxe.xml"])
def test_hostile_xml_is_600_without_expansion(
    name: str, request_bytes: Callable[[str], bytes]
) -> None:
    with pytest.raises(PoxError) as info:
        parse_pox_request(request_bytes(name))
    assert info.value.pox_code == 600
    assert "lollol" not in info.value.message and "root:" not in info.value.message
    xml = render_pox_error(info.value.pox_code, info.value.message, node_name=NODE, now=NOW)
    assert b"lollol" not in xml and b"root:" not in xml


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_pox_error(body: bytes) -> None:
    try:
        parse_pox_request(body)
    except PoxError as exc:
        assert exc.pox_code in (600, 601)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_arbitrary_field_text_parses_or_is_600(email: str, schema: str) -> None:
    from xml.sax.saxutils import escape

    body = pox(
        f"<EMailAddress>{escape(email)}</EMailAddress>"
        f"<AcceptableResponseSchema>{escape(schema)}</AcceptableResponseSchema>"
    )
    try:
        req = parse_pox_request(body)
    except PoxError as exc:
        assert exc.pox_code in (600, 601)
    else:
        assert req.acceptable_schema == OUTLOOK_RESPONSE_NS


# ---- rendering -------------------------------------------------------------------------------


def test_golden_success(golden: Callable[[str, bytes], None]) -> None:
    golden("pox_success.xml", render_pox(OUTLOOK, ANN, node_name=NODE, now=NOW))


def test_golden_error(golden: Callable[[str, bytes], None]) -> None:
    golden("pox_error_600.xml", render_pox_error(600, node_name=NODE, now=NOW))


def test_success_fields() -> None:
    root = etree.fromstring(render_pox(OUTLOOK, ANN, node_name=NODE, now=NOW))
    response = root.find(f"{OA}Response")
    assert response is not None
    user = response.find(f"{OA}User")
    assert [etree.QName(c).localname for c in user] == [
        "DisplayName",
        "LegacyDN",
        "AutoDiscoverSMTPAddress",
        "DeploymentId",
    ]
    assert user.findtext(f"{OA}AutoDiscoverSMTPAddress") == "ann@contoso.test"
    assert user.findtext(f"{OA}DeploymentId") == ANN.deployment_id
    account = response.find(f"{OA}Account")
    assert account.findtext(f"{OA}AccountType") == "email"
    assert account.findtext(f"{OA}Action") == "settings"
    protocols = {p.findtext(f"{OA}Type"): p for p in account.iterfind(f"{OA}Protocol")}
    assert set(protocols) == {"EXCH", "EXPR"}
    exch, expr = protocols["EXCH"], protocols["EXPR"]
    for name in ("ASUrl", "EwsUrl", "OOFUrl"):
        assert exch.findtext(f"{OA}{name}") == ANN.internal_ews_url
        assert expr.findtext(f"{OA}{name}") == ANN.ews_url
    assert exch.findtext(f"{OA}Server") == "cas-eu-1.eu.contoso.internal"
    assert exch.findtext(f"{OA}ServerDN").startswith("/o=Contoso/ou=Exchange Administrative Group")
    assert exch.findtext(f"{OA}ServerVersion") == server_version_hex() == "73C189CB"
    assert expr.findtext(f"{OA}Server") == "cas-eu-1.contoso.test"
    assert expr.findtext(f"{OA}SSL") == "On"


def test_minimal_settings_omit_what_is_unknown() -> None:
    bare = UserSettings("bob@contoso.test", "http://127.0.0.1:8080/EWS/Exchange.asmx")
    root = etree.fromstring(
        render_pox(PoxRequest("bob@contoso.test", None), bare, node_name=NODE, now=NOW)
    )
    user = root.find(f"{OA}Response/{OA}User")
    assert [etree.QName(c).localname for c in user] == ["AutoDiscoverSMTPAddress"]
    exch = root.find(f"{OA}Response/{OA}Account/{OA}Protocol")
    assert exch.find(f"{OA}ServerDN") is None
    assert exch.findtext(f"{OA}EwsUrl") == bare.ews_url
    assert root.findtext(f".//{OA}SSL") == "Off"


def test_redirect_is_redirect_addr() -> None:
    root = etree.fromstring(
        render_pox(OUTLOOK, Redirect("ann@contoso.example"), node_name=NODE, now=NOW)
    )
    account = root.find(f"{OA}Response/{OA}Account")
    assert [(etree.QName(c).localname, c.text) for c in account] == [
        ("AccountType", "email"),
        ("Action", "redirectAddr"),
        ("RedirectAddr", "ann@contoso.example"),
    ]


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (NotFound("nobody@contoso.test"), 500),
        (InvalidRequest("Bad."), 600),
        (ServerFailure("Down."), 603),
    ],
)
def test_error_answers(answer: Answer, code: int) -> None:
    got, message, attrib = error_of(render_pox(OUTLOOK, answer, node_name=NODE, now=NOW))
    assert got == code
    assert message
    assert attrib == {"Time": "16:56:32.6164020", "Id": attrib["Id"]}
    assert attrib["Id"].isdigit()


@pytest.mark.parametrize("code", sorted(ERROR_MESSAGES))
def test_every_error_code_renders(code: int) -> None:
    got, message, _ = error_of(render_pox_error(code, node_name=NODE, now=NOW))
    assert (got, message) == (code, ERROR_MESSAGES[code])


def test_error_id_is_stable_per_node() -> None:
    a = error_of(render_pox_error(500, node_name="n1", now=NOW))[2]["Id"]
    b = error_of(render_pox_error(500, node_name="n1", now=NOW))[2]["Id"]
    c = error_of(render_pox_error(500, node_name="n2", now=NOW))[2]["Id"]
    assert a == b != c


def test_unknown_error_codes_are_refused() -> None:
    with pytest.raises(ValueError):
        render_pox_error(404, node_name=NODE, now=NOW)
    with pytest.raises(ValueError):
        PoxError(700)


def test_a_request_for_another_schema_is_answered_601() -> None:
    req = PoxRequest("ann@contoso.test", None, "urn:other")
    assert error_of(render_pox(req, ANN, node_name=NODE, now=NOW))[0] == 601
