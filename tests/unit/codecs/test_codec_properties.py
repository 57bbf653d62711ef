"""Property tests of every codec: what one side renders, the other side parses back to the same
value, and arbitrary bytes (or text) raise only the codec's own error, never anything else.

Bounded for CI: each property runs a fixed number of examples with small sizes. Autodiscover's
own parsers have theirs in tests/unit/codecs/autodiscover; this module adds the pairs that cross
modules (client <-> server) and the codecs that had none.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cas.codecs.autodiscover.client import (
    AutodiscoverClientError,
    parse_get_user_settings_response,
    render_get_user_settings_request,
)
from cas.codecs.autodiscover.soap import AutodiscoverSoapError, parse_get_user_settings
from cas.codecs.ews.answer import render_get_user_availability
from cas.codecs.ews.client import (
    EwsClientError,
    parse_get_user_availability_response,
    render_get_user_availability_request,
)
from cas.codecs.ews.convert_id import parse_convert_id_response
from cas.codecs.ews.memo import decode_availability, decode_envelope
from cas.codecs.json_api import parse_availability_request, render_availability_response
from cas.codecs.public_freebusy import (
    LegacyItem,
    LegacyQuery,
    LegacyQueryError,
    LegacyResponseError,
    freebusy_query_params,
    parse_freebusy_query,
    parse_freebusy_response,
    render_freebusy_response,
)
from cas.errors import MAILBOX_ERROR_CODES, MailboxError, RequestFault
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import MailboxData, Window

BOUNDED = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

local_parts = st.text(string.ascii_lowercase + string.digits + ".-_+", min_size=1, max_size=20)
addresses = st.builds(lambda local, host: f"{local}@{host}.test", local_parts,
                      st.sampled_from(["contoso", "fabrikam", "xn--bcher-kva"]))  # fmt: skip
hostile_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60
)  # any Unicode: controls, RTL marks, combining characters, NULs
slots = st.sampled_from([5, 10, 15, 30, 60, 120, 1440])


@st.composite
def windows(draw: st.DrawFn, max_days: int = 42) -> tuple[Window, int]:
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=5 * draw(st.integers(0, 200_000)))
    interval = draw(slots)
    count = draw(st.integers(1, max(1, max_days * 1440 // interval // 4)))
    return Window(start, start + timedelta(minutes=interval * count)), interval


@st.composite
def availability_requests(draw: st.DrawFn) -> AvailabilityRequest:
    window, interval = draw(windows())
    boxes = draw(st.lists(addresses, min_size=1, max_size=8, unique_by=str.casefold))
    view = draw(st.sampled_from([v for v in FreeBusyView if v is not FreeBusyView.NONE]))
    return AvailabilityRequest(
        mailboxes=tuple(MailboxQuery(a) for a in boxes),
        window=window,
        interval_minutes=interval,
        view=view,
        tz=UTC,
    )


# --- EWS GetUserAvailability: the client's request, the server's parse ---------------------------


@BOUNDED
@given(availability_requests())
def test_ews_request_rendered_by_the_client_parses_back(request: AvailabilityRequest) -> None:
    parsed = decode_availability(decode_envelope(render_get_user_availability_request(request)))
    assert [q.address for q in parsed.mailboxes] == [q.address for q in request.mailboxes]
    assert (parsed.window, parsed.interval_minutes, parsed.view) == (
        request.window, request.interval_minutes, request.view,
    )  # fmt: skip
    assert parsed.tz.utcoffset(request.window.start) == timedelta(0)


@BOUNDED
@given(st.binary(max_size=600))
def test_ews_arbitrary_bytes_raise_only_request_faults(body: bytes) -> None:
    try:
        decode_availability(decode_envelope(body))
    except RequestFault:
        pass


@BOUNDED
@given(availability_requests(), st.data())
def test_ews_requests_with_a_hostile_value_raise_only_request_faults(
    request: AvailabilityRequest, data: st.DataObject
) -> None:
    body = render_get_user_availability_request(request).decode()
    cut = data.draw(st.integers(0, len(body)))
    insert = data.draw(st.sampled_from([
        "<!DOCTYPE x [<!ENTITY e 'boom'>]>", "&e;", "<x>" * 50, "\x00", "]]>", "&#0;",
        "<t:Address>a@b\r\nX: y</t:Address>", "", "</s:Envelope>",
    ]))  # fmt: skip
    try:
        decode_availability(decode_envelope((body[:cut] + insert + body[cut:]).encode()))
    except RequestFault:
        pass


# --- EWS GetUserAvailability: the server's answer, the client's parse ----------------------------

digits = st.text("01234", min_size=1, max_size=1)


@st.composite
def merged_answers(draw: st.DrawFn) -> tuple[AvailabilityRequest, list[MailboxData | MailboxError]]:
    window, interval = draw(windows(max_days=7))
    boxes = draw(st.lists(addresses, min_size=1, max_size=6, unique_by=str.casefold))
    request = AvailabilityRequest(
        tuple(MailboxQuery(a) for a in boxes), window, interval, FreeBusyView.MERGED_ONLY, UTC
    )
    count = window.slot_count(interval)
    results: list[MailboxData | MailboxError] = []
    for _ in boxes:
        if draw(st.booleans()):
            merged = "".join(draw(st.lists(digits, min_size=count, max_size=count)))
            results.append(MailboxData(merged=merged, merged_only=True))
        else:
            code = draw(st.sampled_from(sorted(MAILBOX_ERROR_CODES)))
            results.append(MailboxError.of(code, draw(st.text(string.printable, max_size=30))))
    return request, results


@BOUNDED
@given(merged_answers())
def test_ews_answer_rendered_by_the_server_parses_back(
    answer: tuple[AvailabilityRequest, list[MailboxData | MailboxError]],
) -> None:
    request, results = answer
    parsed = parse_get_user_availability_response(
        render_get_user_availability(request, results), request
    )
    for sent, got in zip(results, parsed, strict=True):
        if isinstance(sent, MailboxError):
            assert isinstance(got, MailboxError) and got.code == sent.code
        else:
            assert isinstance(got, MailboxData) and got.merged == sent.merged


@BOUNDED
@given(st.binary(max_size=600), availability_requests())
def test_ews_client_arbitrary_answers_raise_only_its_errors(
    body: bytes, request: AvailabilityRequest
) -> None:
    for parse in (lambda: parse_get_user_availability_response(body, request),
                  lambda: parse_convert_id_response(body)):  # fmt: skip
        try:
            parse()
        except EwsClientError:
            pass


# --- Autodiscover: the client's request, the server's parse; the client's parse of answers ----


@BOUNDED
@given(addresses, st.lists(st.sampled_from(["ExternalEwsUrl", "InternalEwsUrl", "UserDisplayName",
                                             "UserDN", "CasVersion"]), min_size=1, max_size=4,
                           unique=True))  # fmt: skip
def test_autodiscover_request_rendered_by_the_client_parses_back(
    address: str, wanted: list[str]
) -> None:
    body = render_get_user_settings_request(
        address, wanted, url="https://node.test/autodiscover/autodiscover.svc"
    )
    parsed = parse_get_user_settings(body)
    assert parsed.mailboxes == (address,) and parsed.requested_settings == tuple(wanted)


@BOUNDED
@given(st.binary(max_size=600))
def test_autodiscover_client_arbitrary_answers_raise_only_its_errors(body: bytes) -> None:
    try:
        parse_get_user_settings_response(body)
    except AutodiscoverClientError:
        pass


@BOUNDED
@given(hostile_text)
def test_autodiscover_hostile_addresses_parse_or_refuse(address: str) -> None:
    from xml.sax.saxutils import escape

    body = render_get_user_settings_request(
        "x@contoso.test", ["InternalEwsUrl"], url="https://n.test/"
    )
    body = body.replace(b"x@contoso.test", escape(address).encode("utf-8", "surrogatepass"))
    try:
        parse_get_user_settings(body)
    except AutodiscoverSoapError:
        pass


# --- the legacy /public/?cmd=freebusy query and answer ---------------------------------------


@BOUNDED
@given(windows(max_days=30), st.lists(addresses, min_size=1, max_size=6, unique=True))
def test_legacy_query_rendered_by_the_client_parses_back(
    window_and_interval: tuple[Window, int], users: list[str]
) -> None:
    window, interval = window_and_interval
    parsed = parse_freebusy_query(freebusy_query_params(window, interval, users))
    assert parsed == LegacyQuery(window.start, window.end, interval, tuple(users))


@BOUNDED
@given(st.lists(st.tuples(st.sampled_from(["cmd", "start", "end", "interval", "u", "U", "x"]),
                          hostile_text), max_size=8))  # fmt: skip
def test_legacy_arbitrary_queries_raise_only_its_error(params: list[tuple[str, str]]) -> None:
    try:
        parse_freebusy_query(params)
    except LegacyQueryError:
        pass


@BOUNDED
@given(windows(max_days=7), st.lists(st.tuples(addresses, st.text(string.printable.strip(), max_size=20)),
                                     min_size=1, max_size=5, unique_by=lambda p: p[0]), st.data())  # fmt: skip
def test_legacy_answer_rendered_by_the_server_parses_back(
    window_and_interval: tuple[Window, int], people: list[tuple[str, str]], data: st.DataObject
) -> None:
    window, interval = window_and_interval
    query = LegacyQuery(window.start, window.end, interval, tuple(a for a, _ in people))
    count = query.slot_count
    items = [
        LegacyItem(name or address, address,
                   "".join(data.draw(st.lists(digits, min_size=count, max_size=count))))
        for address, name in people
    ]  # fmt: skip
    parsed = parse_freebusy_response(render_freebusy_response(query, items), query)
    assert {address: parsed[address] for address, _ in people} == {i.email: i.fbdata for i in items}


@BOUNDED
@given(st.binary(max_size=600))
def test_legacy_arbitrary_answers_raise_only_its_error(body: bytes) -> None:
    query = LegacyQuery(datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC), 60,
                        ("a@contoso.test",))  # fmt: skip
    try:
        parse_freebusy_response(body, query)
    except LegacyResponseError:
        pass


# --- the JSON API ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)


@BOUNDED
@given(st.binary(max_size=400))
def test_json_api_arbitrary_bytes_raise_only_request_faults(body: bytes) -> None:
    try:
        parse_availability_request(body)
    except RequestFault:
        pass


@BOUNDED
@given(st.fixed_dictionaries({}, optional={
    "schedules": json_values | st.lists(hostile_text, max_size=3),
    "startTime": json_values | st.fixed_dictionaries({"dateTime": hostile_text, "timeZone": hostile_text}),
    "endTime": json_values,
    "availabilityViewInterval": json_values,
}))  # fmt: skip
def test_json_api_arbitrary_documents_raise_only_request_faults(document: dict) -> None:  # type: ignore[type-arg]
    import json

    try:
        parsed = parse_availability_request(json.dumps(document).encode())
    except RequestFault:
        return
    # whatever was accepted can be answered: the answer is JSON text that encodes
    results = [MailboxError.of("ErrorMailRecipientNotFound") for _ in parsed.mailboxes]
    json.dumps(render_availability_response(parsed, results), ensure_ascii=False).encode()


@BOUNDED
@given(st.text(st.characters(exclude_categories=()), max_size=20))
@example("\ud800")
def test_json_api_accepted_addresses_can_be_answered(local: str) -> None:
    import json

    body = json.dumps({"schedules": [local + "@contoso.test"],
                       "startTime": {"dateTime": "2024-03-04T00:00:00"},
                       "endTime": {"dateTime": "2024-03-05T00:00:00"}}).encode()  # fmt: skip
    try:
        parsed = parse_availability_request(body)
    except RequestFault:
        return
    results = [MailboxError.of("ErrorMailRecipientNotFound") for _ in parsed.mailboxes]
    json.dumps(render_availability_response(parsed, results), ensure_ascii=False).encode()


def test_json_api_deep_nesting_is_refused_not_a_crash() -> None:
    import pytest

    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        with pytest.raises(RequestFault, match="nested too deeply"):
            parse_availability_request(body)
