"""The legacy `/public/?cmd=freebusy` codec (cas.codecs.public_freebusy), table-driven.

Queries are written the way DavMail, Zimbra and the Ximian connector send them (docs/protocols.md §4.1).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.datastructures import QueryParams

from cas.codecs.public_freebusy import (
    LegacyItem,
    LegacyItemError,
    LegacyQuery,
    LegacyQueryError,
    LegacyResponseError,
    fbdata_to_mailbox_data,
    freebusy_query_params,
    parse_freebusy_query,
    parse_freebusy_response,
    render_freebusy_response,
)
from cas.model.freebusy import Window

UTC = UTC
START = datetime(2024, 3, 4, 8, tzinfo=UTC)


def q(text: str) -> LegacyQuery:
    return parse_freebusy_query(QueryParams(text))


# --- query parsing: the quirks table --------------------------------------------------------

QUIRKS = [
    (  # DavMail
        "cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-05T08:00:00Z&interval=15"
        "&u=SMTP:alice@example.com",
        (START, START + timedelta(days=1), 15, ("alice@example.com",)),
    ),
    (  # old Zimbra: Cmd and the endt spelling
        "Cmd=freebusy&start=2024-03-04T08:00:00Z&endt=2024-03-04T20:00:00Z&interval=30"
        "&u=SMTP:alice@example.com&u=SMTP:bob@example.com",
        (START, START + timedelta(hours=12), 30, ("alice@example.com", "bob@example.com")),
    ),
    (  # Ximian: bare u, no interval (30 by default), any-case names
        "CMD=freebusy&START=2024-03-04T08:00:00Z&End=2024-03-04T10:00:00Z&U=alice@example.com",
        (START, START + timedelta(hours=2), 30, ("alice@example.com",)),
    ),
    (  # offsets (KB 813268), encoded properly
        "cmd=freebusy&start=2024-03-04T09:00:00%2B01:00&end=2024-03-04T05:00:00-05:00"
        "&interval=60&u=smtp:alice@example.com",
        (START, START + timedelta(hours=2), 60, ("alice@example.com",)),
    ),
    (  # an unencoded + arrives as a space; compact offset
        "cmd=freebusy&start=2024-03-04T09:00:00+01:00&end=2024-03-04T10:00:00+0100"
        "&interval=15&u=SMTP:alice@example.com",
        (START, START + timedelta(hours=1), 15, ("alice@example.com",)),
    ),
    (  # naive times are UTC; fractions of a second are kept
        "cmd=freebusy&start=2024-03-04T08:00:00&end=2024-03-04 09:00:00.000&interval=5"
        "&u=SMTP:alice@example.com",
        (START, START + timedelta(hours=1), 5, ("alice@example.com",)),
    ),
    (  # end wins over endt; duplicates and empty u dropped; spaces trimmed
        "cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T09:00:00Z"
        "&endt=2024-03-09T09:00:00Z&interval=1440&u=SMTP:%20alice@example.com&u="
        "&u=SMTP:ALICE@example.com&u=bob@example.com",
        (START, START + timedelta(hours=1), 1440, ("alice@example.com", "bob@example.com")),
    ),
]


@pytest.mark.parametrize(("text", "expected"), QUIRKS)
def test_query_quirks(text: str, expected: tuple) -> None:
    query = q(text)
    assert (query.start, query.end, query.interval_minutes, query.users) == expected
    assert query.start.tzinfo is UTC


@pytest.mark.parametrize(
    "params",
    [
        QueryParams("start=2024-03-04T08:00:00Z&end=2024-03-04T09:00:00Z&u=a@x&u=b@x"),
        httpx.QueryParams("start=2024-03-04T08:00:00Z&end=2024-03-04T09:00:00Z&u=a@x&u=b@x"),
        {"start": "2024-03-04T08:00:00Z", "end": "2024-03-04T09:00:00Z", "u": ["a@x", "b@x"]},
        [
            ("start", "2024-03-04T08:00:00Z"),
            ("end", "2024-03-04T09:00:00Z"),
            ("u", "a@x"),
            ("u", "b@x"),
        ],
    ],
    ids=["starlette", "httpx", "mapping", "pairs"],
)
def test_query_parameter_containers(params: object) -> None:
    assert parse_freebusy_query(params).users == ("a@x", "b@x")


BASE = "cmd=freebusy&start=2024-03-04T08:00:00Z&end=2024-03-04T09:00:00Z&interval=15&u=a@x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cmd=freebusy&end=2024-03-04T09:00:00Z&u=a@x", "start is missing"),
        ("cmd=freebusy&start=2024-03-04T09:00:00Z&u=a@x", "end is missing"),
        (BASE.replace("end=2024-03-04T09", "end=2024-03-04T07"), "must be before end"),
        (BASE.replace("end=2024-03-04T09", "end=2024-03-04T08"), "must be before end"),
        (BASE.replace("start=2024-03-04T08:00:00Z", "start=tomorrow"), "start='tomorrow' is not"),
        (BASE.replace("start=2024-03-04T08:00:00Z", "start="), "start is empty"),
        (BASE.replace("end=2024-03-04T09:00:00Z", "end=2024-05-06T09:00:00Z"), "longer than 62"),
        (BASE.replace("interval=15", "interval=4"), "outside 5..1440"),
        (BASE.replace("interval=15", "interval=1441"), "outside 5..1440"),
        (BASE.replace("interval=15", "interval=1444"), "outside 5..1440"),  # Zimbra's maximum
        (BASE.replace("interval=15", "interval=15.5"), "not a whole number"),
        (BASE.replace("&u=a@x", ""), "no user asked"),
        (BASE.replace("u=a@x", "u=SMTP:"), "no user asked"),
        (BASE + "".join(f"&u=u{i}@x" for i in range(100)), "101 users asked; at most 100"),
    ],
)
def test_query_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(LegacyQueryError, match=message) as caught:
        q(text)
    assert caught.value.http_status == 400


def test_interval_longer_than_the_window_is_one_partial_slot() -> None:
    query = q(BASE.replace("interval=15", "interval=120"))
    assert query.slot_count == 1


def test_client_query_params_read_back() -> None:
    window = Window(START, START + timedelta(hours=2))
    params = freebusy_query_params(window, 15, ["ann@contoso.test", "bob@contoso.test"])
    assert params[:4] == [
        ("cmd", "freebusy"),
        ("start", "2024-03-04T08:00:00Z"),
        ("end", "2024-03-04T10:00:00Z"),
        ("interval", "15"),
    ]
    assert params[4:] == [("u", "SMTP:ann@contoso.test"), ("u", "SMTP:bob@contoso.test")]
    query = parse_freebusy_query(params)
    assert (query.window, query.users) == (window, ("ann@contoso.test", "bob@contoso.test"))


# --- rendering ------------------------------------------------------------------------------

TWO_HOURS = q(
    BASE.replace("T09:00", "T10:00").replace("interval=15", "interval=30") + "&u=b@x&u=c@x"
)


def test_all_attendees_comes_first_and_is_the_digitwise_max() -> None:
    items = [
        LegacyItem("Ann Example", "a@x", "0120"),
        LegacyItem("Bob", "b@x", "2004"),
        LegacyItem("Carol", "c@x", "0300"),
    ]
    body = render_freebusy_response(TWO_HOURS, items)
    text = body.decode()
    assert text.startswith("<?xml")
    assert '<a:response xmlns:a="WM">' in text
    first = text.index("<a:item>")
    assert text[first:].startswith(
        "<a:item><a:displayname>All Attendees</a:displayname><a:type>1</a:type>"
        "<a:fbdata>2324</a:fbdata></a:item>"
    )
    assert text.index("Ann Example") < text.index("Bob") < text.index("Carol")
    assert '<a:email type="SMTP">b@x</a:email>' in text


def test_davmail_last_fbdata_rule_reads_the_single_user() -> None:
    query = q(BASE)
    body = render_freebusy_response(query, [LegacyItem("Ann", "a@x", "0002")]).decode()
    # DavMail's StringUtil.getLastToken(body, "<a:fbdata>", "</a:fbdata>")
    last = body[body.rindex("<a:fbdata>") + len("<a:fbdata>") :]
    assert last[: last.index("</a:fbdata>")] == "0002"


def test_display_names_are_escaped() -> None:
    body = render_freebusy_response(q(BASE), [LegacyItem("R&D <lab>", "a@x", "0000")])
    assert b"R&amp;D &lt;lab&gt;" in body
    assert parse_freebusy_response(body, q(BASE)) == {"a@x": "0000"}


@pytest.mark.parametrize("fbdata", ["000", "00000", "00a0", "0005"])
def test_render_refuses_fbdata_that_does_not_fit(fbdata: str) -> None:
    with pytest.raises(ValueError, match="must be 4 digits"):
        render_freebusy_response(q(BASE), [LegacyItem("Ann", "a@x", fbdata)])


def test_render_then_parse_round_trip() -> None:
    items = [
        LegacyItem("A", "a@x", "0123"),
        LegacyItem("B", "b@x", "4444"),
        LegacyItem("C", "c@x", "2200"),
    ]
    body = render_freebusy_response(TWO_HOURS, items)
    assert parse_freebusy_response(body, TWO_HOURS) == {"a@x": "0123", "b@x": "4444", "c@x": "2200"}


# --- client parsing of what old servers send ------------------------------------------------


def answer(*items: str) -> bytes:
    inner = "".join(items)
    return (
        '<?xml version="1.0"?><a:response xmlns:a="WM">'
        f"<a:recipients>{inner}</a:recipients></a:response>"
    ).encode()


def item(email: str | None, fbdata: str | None, email_type: str = "SMTP") -> str:
    parts = ["<a:item><a:displayname>X</a:displayname>"]
    if email is not None:
        parts.append(f'<a:email type="{email_type}">{email}</a:email>')
    if fbdata is not None:
        parts.append(f"<a:fbdata>{fbdata}</a:fbdata>")
    return "".join(parts) + "<a:type>1</a:type></a:item>"


def test_zimbra_style_matching_is_trimmed_and_case_insensitive() -> None:
    body = answer(
        item(None, "2222"), item("  Alice@Example.COM \n", " 0022 "), item("SMTP:b@x", "1111")
    )
    assert parse_freebusy_response(body, q(BASE)) == {"alice@example.com": "0022", "b@x": "1111"}


def test_a_user_listed_twice_keeps_the_first_item() -> None:
    body = answer(item("a@x", "0000"), item("A@X", "2222"))
    assert parse_freebusy_response(body, q(BASE)) == {"a@x": "0000"}


@pytest.mark.parametrize(
    ("fbdata", "message"),
    [
        ("000", "has 3 digits, expected 4"),
        ("00000", "has 5 digits, expected 4"),
        ("00a5", "characters other than 0-4: '5a'"),
        ("-1..", "characters other than 0-4"),
        ("", "sent no fbdata for a@x"),
        (None, "sent no fbdata for a@x"),
    ],
)
def test_malformed_fbdata_is_a_per_user_error(fbdata: str | None, message: str) -> None:
    result = parse_freebusy_response(answer(item("a@x", fbdata), item("b@x", "0000")), q(BASE))
    assert isinstance(result["a@x"], LegacyItemError)
    assert message in result["a@x"].message
    assert result["b@x"] == "0000"


def test_a_missing_user_is_missing_from_the_result() -> None:
    query = q(BASE + "&u=b@x")
    assert parse_freebusy_response(answer(item("b@x", "0000")), query) == {"b@x": "0000"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not usable XML"),
        (b"Service Unavailable", "not usable XML"),
        (b"<html><body><form action='/exchweb/bin/auth/owaauth.dll'>", "not usable XML"),
        (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>', "not usable XML"),
        (b"<html><body>Logon</body></html>", "root element is html"),
        (b'<response xmlns="urn:other"/>', "not WM response"),
    ],
)
def test_an_answer_that_is_not_a_wm_document_raises(body: bytes, message: str) -> None:
    with pytest.raises(LegacyResponseError, match=message):
        parse_freebusy_response(body, q(BASE))


# --- digits -> MailboxData ------------------------------------------------------------------


def digits(data, window, interval):
    """The digits a node renders for `data`: recomputed from its events and coverage."""
    from cas.model.freebusy import merged_free_busy

    return merged_free_busy(data.events, window, interval, data.coverage)


def test_fbdata_to_mailbox_data_keeps_digits_and_covers_all_but_4() -> None:
    window = Window(START, START + timedelta(minutes=100))  # 7 slots of 15, the last one 10 min
    data = fbdata_to_mailbox_data("0124401", window, 15)
    assert digits(data, window, 15) == "0124401" and data.merged_only and data.merged is None
    assert [(e.busy_type.value, e.end - e.start) for e in data.events] == [
        ("Tentative", timedelta(minutes=15)),
        ("Busy", timedelta(minutes=15)),
        ("Tentative", timedelta(minutes=10)),
    ]
    assert data.coverage == (
        (START, START + timedelta(minutes=45)),
        (START + timedelta(minutes=75), START + timedelta(minutes=100)),
    )


def test_all_4_is_no_data_not_free() -> None:
    data = fbdata_to_mailbox_data("4444", Window(START, START + timedelta(hours=1)), 15)
    assert digits(data, Window(START, START + timedelta(hours=1)), 15) == "4444"
    assert data.coverage == () and data.events == ()


def test_fbdata_to_mailbox_data_refuses_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="expected 4"):
        fbdata_to_mailbox_data("000", Window(START, START + timedelta(hours=1)), 15)


def test_client_query_keeps_a_fraction_of_a_second() -> None:
    window = Window(START + timedelta(microseconds=250_000), START + timedelta(hours=1))
    params = freebusy_query_params(window, 15, ["ann@contoso.test"])
    assert ("start", "2024-03-04T08:00:00.250000Z") in params
    assert parse_freebusy_query(params).window == window
