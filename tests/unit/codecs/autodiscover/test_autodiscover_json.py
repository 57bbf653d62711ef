"""JSON Autodiscover: path and Protocol validation, and the status/body table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas.codecs.autodiscover import (
    InvalidRequest,
    JsonAutodiscoverError,
    JsonRequest,
    NotFound,
    Redirect,
    ServerFailure,
    parse_json_path,
    render_json,
    render_json_error,
)
from tests.unit.codecs.autodiscover.conftest import ANN

POX_URL = "https://cas-eu-1.contoso.test/autodiscover/autodiscover.xml"


@pytest.mark.parametrize(
    ("segment", "params", "expected"),
    [
        ("ann@contoso.test", {"Protocol": "EWS"}, JsonRequest("ann@contoso.test", "EWS")),
        ("ann@contoso.test", {"protocol": "ews"}, JsonRequest("ann@contoso.test", "EWS")),
        (" ann@contoso.test ", {"PROTOCOL": "Ews"}, JsonRequest("ann@contoso.test", "EWS")),
        (
            "ann@contoso.test",
            {"Protocol": "AutodiscoverV1"},
            JsonRequest("ann@contoso.test", "AutodiscoverV1"),
        ),
        (
            "ann@contoso.test",
            {"Protocol": "autodiscoverv1"},
            JsonRequest("ann@contoso.test", "AutodiscoverV1"),
        ),
    ],
)
def test_valid_paths(segment: str, params: dict[str, str], expected: JsonRequest) -> None:
    assert parse_json_path(segment, params) == expected


@pytest.mark.parametrize(
    ("segment", "params", "code"),
    [
        ("ann", {"Protocol": "EWS"}, "InvalidUser"),
        ("", {"Protocol": "EWS"}, "InvalidUser"),
        ("@contoso.test", {"Protocol": "EWS"}, "InvalidUser"),
        ("ann@", {"Protocol": "EWS"}, "InvalidUser"),
        ("a@b@c", {"Protocol": "EWS"}, "InvalidUser"),
        ("ann smith@contoso.test", {"Protocol": "EWS"}, "InvalidUser"),
        ("ann@contoso.test/../x", {"Protocol": "EWS"}, "InvalidUser"),
        ("a" * 400 + "@contoso.test", {"Protocol": "EWS"}, "InvalidUser"),
        ("ann@contoso.test", {}, "InvalidProtocol"),
        ("ann@contoso.test", {"Protocol": ""}, "InvalidProtocol"),
        ("ann@contoso.test", {"Protocol": "ActiveSync"}, "InvalidProtocol"),
        ("ann@contoso.test", {"Protocol": "Rest"}, "InvalidProtocol"),
    ],
)
def test_invalid_paths_are_400(segment: str, params: dict[str, str], code: str) -> None:
    with pytest.raises(JsonAutodiscoverError) as info:
        parse_json_path(segment, params)
    status, body = render_json_error(info.value)
    assert status == 400
    assert body["ErrorCode"] == code
    assert isinstance(body["ErrorMessage"], str) and body["ErrorMessage"]


@pytest.mark.parametrize(
    ("protocol", "answer", "status", "body"),
    [
        ("EWS", ANN, 200, {"Protocol": "EWS", "Url": ANN.ews_url}),
        ("ews", ANN, 200, {"Protocol": "EWS", "Url": ANN.ews_url}),
        ("AutodiscoverV1", ANN, 200, {"Protocol": "AutodiscoverV1", "Url": POX_URL}),
        ("AUTODISCOVERV1", ANN, 200, {"Protocol": "AutodiscoverV1", "Url": POX_URL}),
        ("EWS", NotFound("x@contoso.test"), 404, {"ErrorCode": "UserNotFound"}),
        (
            "EWS",
            InvalidRequest("Bad."),
            400,
            {"ErrorCode": "InvalidRequest", "ErrorMessage": "Bad."},
        ),
        (
            "EWS",
            ServerFailure("Down."),
            500,
            {"ErrorCode": "InternalServerError", "ErrorMessage": "Down."},
        ),
        ("Rest", ANN, 400, {"ErrorCode": "InvalidProtocol"}),
        (
            "EWS",
            Redirect("ann@contoso.example"),
            302,
            {
                "ErrorCode": "RedirectAddress",
                "RedirectAddress": "ann@contoso.example",
                "Url": "https://cas-eu-1.contoso.test/autodiscover/autodiscover.json/v1.0/"
                "ann@contoso.example?Protocol=EWS",
            },
        ),
    ],
)
def test_answer_table(protocol: str, answer: Any, status: int, body: dict[str, str]) -> None:
    got_status, got_body = render_json(protocol, answer, autodiscover_url=POX_URL)
    assert got_status == status
    assert {k: got_body[k] for k in body} == body
    if status != 200:
        assert got_body["ErrorMessage"]


@pytest.mark.parametrize(
    "base", ["https://cas-eu-1.contoso.test", "https://cas-eu-1.contoso.test/", POX_URL]
)
def test_autodiscover_url_may_be_the_origin_or_the_pox_url(base: str) -> None:
    assert render_json("AutodiscoverV1", ANN, autodiscover_url=base)[1]["Url"] == POX_URL


def test_bodies_are_plain_json() -> None:
    import json

    for answer in (ANN, NotFound(), Redirect("a@b.test")):
        json.dumps(render_json("EWS", answer, autodiscover_url=POX_URL)[1])


@given(
    st.text(max_size=80), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)
)
def test_arbitrary_input_only_raises_the_documented_error(
    segment: str, params: dict[str, str]
) -> None:
    try:
        req = parse_json_path(segment, params)
    except JsonAutodiscoverError as exc:
        assert exc.http_status == 400
    else:
        assert req.protocol in ("EWS", "AutodiscoverV1")
        assert "@" in req.address
