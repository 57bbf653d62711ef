"""SerializableTimeZone, Windows ids and GetServerTimeZones, checked through exchangelib itself."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from cas.codecs.ews import (
    TimeZonesQuery,
    iana_to_windows,
    parse_envelope,
    parse_get_server_time_zones,
    parse_serializable_time_zone,
    render_get_server_time_zones,
    render_serializable_time_zone,
    windows_to_iana,
)
from cas.codecs.ews.soap import MESSAGES_NS, SOAP_NS, TYPES_NS, element, m, t
from cas.codecs.ews.timezones import render_zone_rules
from cas.errors import InvalidValue

H = timedelta(hours=1)
NS = {"s": SOAP_NS, "m": MESSAGES_NS, "t": TYPES_NS}


@pytest.mark.parametrize(
    ("windows", "iana"),
    [
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("UTC", "Etc/UTC"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("AUS Eastern Standard Time", "Australia/Sydney"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("E. South America Standard Time", "America/Sao_Paulo"),
        ("Russian Standard Time", "Europe/Moscow"),
    ],
)
def test_windows_and_iana_ids_map_both_ways(windows: str, iana: str) -> None:
    assert windows_to_iana(windows) == iana
    assert iana_to_windows(iana) == windows


def test_unknown_ids_map_to_none() -> None:
    assert windows_to_iana("Middle Earth Standard Time") is None
    assert iana_to_windows("Mars/Olympus_Mons") is None
    assert iana_to_windows("Europe/Amsterdam") == "W. Europe Standard Time"


def tz_xml(body: str) -> etree._Element:
    return etree.fromstring(f'<t:TimeZone xmlns:t="{TYPES_NS}">{body}</t:TimeZone>')


def period(
    name: str, bias: str, time: str, order: str, month: str, day: str, extra: str = ""
) -> str:
    return (
        f"<t:{name}><t:Bias>{bias}</t:Bias><t:Time>{time}</t:Time><t:DayOrder>{order}</t:DayOrder>"
        f"<t:Month>{month}</t:Month><t:DayOfWeek>{day}</t:DayOfWeek>{extra}</t:{name}>"
    )


BERLIN_XML = (
    "<t:Bias>-60</t:Bias>"
    + period("StandardTime", "0", "03:00:00", "5", "10", "Sunday")
    + period("DaylightTime", "-60", "02:00:00", "5", "3", "Sunday")
)


def test_parse_keeps_the_raw_rule_values() -> None:
    tz = parse_serializable_time_zone(tz_xml(BERLIN_XML))
    rules = tz.rules
    assert rules.bias == -60 and rules.has_dst
    assert rules.standard is not None and rules.daylight is not None
    assert (rules.daylight.time, rules.daylight.day_order, rules.daylight.month) == (2 * H, 5, 3)
    assert tz.utcoffset(datetime(2024, 7, 1)) == 2 * H
    assert tz.utcoffset(datetime(2024, 1, 1)) == H


@pytest.mark.parametrize(
    ("body", "summer", "winter"),
    [
        # DavMail: every bias 0 -> UTC
        (
            "<t:Bias>0</t:Bias>"
            + period("StandardTime", "0", "02:00:00", "5", "10", "Sunday")
            + period("DaylightTime", "0", "02:00:00", "1", "4", "Sunday"),
            timedelta(0),
            timedelta(0),
        ),
        # no DaylightTime at all
        ("<t:Bias>-180</t:Bias>", 3 * H, 3 * H),
        # Windows' "no transition": Month 0
        (
            "<t:Bias>-60</t:Bias>"
            + period("StandardTime", "0", "00:00:00", "0", "0", "Sunday")
            + period("DaylightTime", "-60", "00:00:00", "0", "0", "Sunday"),
            H,
            H,
        ),
        # -1 means last; short times and a Year element are accepted
        (
            "<t:Bias>-60</t:Bias>"
            + period("StandardTime", "0", "3:00", "-1", "10", "Sunday")
            + period(
                "DaylightTime", "-60", "02:00:00.000", "-1", "3", "Sunday", "<t:Year>2024</t:Year>"
            ),
            2 * H,
            H,
        ),
        # southern hemisphere
        (
            "<t:Bias>-600</t:Bias>"
            + period("StandardTime", "0", "03:00:00", "1", "4", "Sunday")
            + period("DaylightTime", "-60", "02:00:00", "1", "10", "Sunday"),
            10 * H,
            11 * H,
        ),
    ],
    ids=["davmail-utc", "no-daylight", "month-0", "minus-one", "sydney"],
)
def test_parse_variants(body: str, summer: timedelta, winter: timedelta) -> None:
    tz = parse_serializable_time_zone(tz_xml(body))
    assert tz.utcoffset(datetime(2024, 7, 15, 12)) == summer
    assert tz.utcoffset(datetime(2024, 1, 15, 12)) == winter


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("<t:Bias>x</t:Bias>", "Bias"),
        ("", "Bias"),
        (
            "<t:Bias>0</t:Bias>"
            + period("StandardTime", "0", "3pm", "1", "4", "Sunday")
            + period("DaylightTime", "-60", "02:00:00", "1", "10", "Sunday"),
            "Time",
        ),
        (
            "<t:Bias>0</t:Bias>"
            + period("StandardTime", "0", "03:00:00", "9", "4", "Sunday")
            + period("DaylightTime", "-60", "02:00:00", "1", "10", "Sunday"),
            "DayOrder",
        ),
        (
            "<t:Bias>0</t:Bias>"
            + period("StandardTime", "0", "03:00:00", "1", "4", "Funday")
            + period("DaylightTime", "-60", "02:00:00", "1", "10", "Sunday"),
            "DayOfWeek",
        ),
        (
            "<t:Bias>0</t:Bias>"
            + period("StandardTime", "0", "03:00:00", "1", "13", "Sunday")
            + period("DaylightTime", "-60", "02:00:00", "1", "10", "Sunday"),
            "Month",
        ),
        ("<t:Bias>99999</t:Bias>", "Bias"),
    ],
)
def test_bad_time_zones_name_the_element(body: str, names: str) -> None:
    with pytest.raises(InvalidValue, match=names):
        parse_serializable_time_zone(tz_xml(body))


def canonical(elem: etree._Element) -> str:
    detached = copy.deepcopy(elem)  # keeps the namespace declarations of its ancestors
    return etree.tostring(detached, method="c14n2", strip_text=True).decode()


def test_rules_render_back_to_the_same_xml() -> None:
    original = tz_xml(BERLIN_XML)
    parent = element(m("X"))
    rendered = render_zone_rules(parent, parse_serializable_time_zone(original).rules)
    assert canonical(rendered) == canonical(original)


@pytest.mark.parametrize(
    ("iana", "year", "expected"),
    [
        ("Europe/Berlin", 2024, BERLIN_XML),
        (
            "Asia/Tokyo",
            2026,
            "<t:Bias>-540</t:Bias>"
            + period("StandardTime", "0", "00:00:00", "1", "1", "Monday")
            + period("DaylightTime", "0", "00:00:00", "5", "12", "Sunday"),
        ),
        (
            "America/Los_Angeles",
            2024,
            "<t:Bias>480</t:Bias>"
            + period("StandardTime", "0", "02:00:00", "1", "11", "Sunday")
            + period("DaylightTime", "-60", "02:00:00", "2", "3", "Sunday"),
        ),
        (
            "Australia/Sydney",
            2026,
            "<t:Bias>-600</t:Bias>"
            + period("StandardTime", "0", "03:00:00", "1", "4", "Sunday")
            + period("DaylightTime", "-60", "02:00:00", "1", "10", "Sunday"),
        ),
    ],
)
def test_render_serializable_time_zone_of_an_iana_zone(iana: str, year: int, expected: str) -> None:
    rendered = render_serializable_time_zone(element(m("X")), iana, year)
    assert canonical(rendered) == canonical(tz_xml(expected))


def test_render_unknown_iana_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        render_serializable_time_zone(element(m("X")), "Nowhere/Special", 2024)


# ---- GetServerTimeZones ------------------------------------------------------------------------


def gst_request(inner: str, attrs: str = ' ReturnFullTimeZoneData="true"') -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><s:Body>'
        f"<m:GetServerTimeZones{attrs}>{inner}</m:GetServerTimeZones></s:Body></s:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            gst_request("<m:Ids><t:Id>W. Europe Standard Time</t:Id><t:Id> UTC </t:Id></m:Ids>"),
            TimeZonesQuery(("W. Europe Standard Time", "UTC"), True),
        ),
        (gst_request("", ' ReturnFullTimeZoneData="false"'), TimeZonesQuery(None, False)),
        (gst_request("", ""), TimeZonesQuery(None, True)),
        (gst_request("<m:Ids/>", ' ReturnFullTimeZoneData="0"'), TimeZonesQuery(None, False)),
    ],
)
def test_parse_get_server_time_zones(body: bytes, expected: TimeZonesQuery) -> None:
    assert parse_get_server_time_zones(parse_envelope(body)) == expected


def test_parse_get_server_time_zones_golden_file(request_bytes: Callable[[str], bytes]) -> None:
    query = parse_get_server_time_zones(parse_envelope(request_bytes("get_server_time_zones.xml")))
    assert query == TimeZonesQuery(("W. Europe Standard Time",), True)


def test_parse_get_server_time_zones_rejects_bad_input() -> None:
    with pytest.raises(InvalidValue, match="ReturnFullTimeZoneData"):
        body = gst_request("", ' ReturnFullTimeZoneData="yes"')
        parse_get_server_time_zones(parse_envelope(body))
    with pytest.raises(InvalidValue, match="GetServerTimeZones"):
        parse_get_server_time_zones(
            parse_envelope(
                gst_request("").replace(b"GetServerTimeZones", b"GetUserAvailabilityRequest")
            )
        )


def test_berlin_definition_golden(golden: Callable[[str, bytes], None]) -> None:
    query = TimeZonesQuery(("W. Europe Standard Time",), True)
    golden("get_server_time_zones_berlin.xml", render_get_server_time_zones(query, year=2026))


def definitions(data: bytes) -> list[etree._Element]:
    return etree.fromstring(data).xpath("//t:TimeZoneDefinition", namespaces=NS)


def test_name_attribute_and_no_full_data() -> None:
    data = render_get_server_time_zones(
        TimeZonesQuery(("W. Europe Standard Time", "UTC", "Pacific Standard Time"), False),
        year=2026,
    )
    found = definitions(data)
    assert [(d.get("Id"), d.get("Name")) for d in found] == [
        ("W. Europe Standard Time", "(UTC+01:00) Europe/Berlin"),
        ("UTC", "(UTC) Etc/UTC"),
        ("Pacific Standard Time", "(UTC-08:00) America/Los_Angeles"),
    ]
    assert all(len(d) == 0 for d in found)


def test_all_zones_when_no_ids_are_given() -> None:
    from tzlocal.windows_tz import win_tz

    data = render_get_server_time_zones(TimeZonesQuery(None, False), year=2026)
    ids = [d.get("Id") for d in definitions(data)]
    assert sorted(ids) == sorted(win_tz)


def test_unknown_id_gets_its_own_error_message_in_order() -> None:
    data = render_get_server_time_zones(
        TimeZonesQuery(("UTC", "Middle Earth Standard Time"), True), year=2026
    )
    messages = etree.fromstring(data).xpath("//m:GetServerTimeZonesResponseMessage", namespaces=NS)
    assert [msg.get("ResponseClass") for msg in messages] == ["Success", "Error"]
    assert messages[1].findtext(m("ResponseCode")) == "ErrorTimeZone"
    assert "Middle Earth Standard Time" in (messages[1].findtext(m("MessageText")) or "")
    assert messages[1].find(f"{m('TimeZoneDefinitions')}/{t('TimeZoneDefinition')}") is None


# ---- what exchangelib does with the answer -----------------------------------------------------

CLIENT_IDS = [
    "W. Europe Standard Time",
    "UTC",
    "Pacific Standard Time",
    "AUS Eastern Standard Time",
    "Tokyo Standard Time",
    "E. South America Standard Time",
    "Russian Standard Time",
    "Paraguay Standard Time",  # DST in 2024, none in 2026
    "Egypt Standard Time",
    "Morocco Standard Time",
    "GMT Standard Time",
    "Lord Howe Standard Time",
]


def exchangelib_request_tz(protocol: object, windows_id: str, year: int) -> etree._Element:
    """What exchangelib sends as the request TimeZone after reading our GetServerTimeZones."""
    from exchangelib.properties import TimeZone
    from exchangelib.services import GetServerTimeZones

    data = render_get_server_time_zones(TimeZonesQuery((windows_id,), True), year=2026)
    tz_definition = list(GetServerTimeZones(protocol=protocol).parse(data))[0]
    assert tz_definition.id == windows_id
    sent = TimeZone.from_server_timezone(tz_definition=tz_definition, for_year=year)
    return etree.fromstring(etree.tostring(sent.to_xml(version=None)))


@pytest.mark.parametrize("year", [2024, 2026])
@pytest.mark.parametrize("windows_id", CLIENT_IDS)
def test_exchangelib_request_zone_matches_zoneinfo_all_year(
    exchangelib_protocol: object, windows_id: str, year: int
) -> None:
    sent = exchangelib_request_tz(exchangelib_protocol, windows_id, year)
    tz = parse_serializable_time_zone(sent)
    reference = ZoneInfo(windows_to_iana(windows_id) or "")
    moment = datetime(year, 1, 1, tzinfo=UTC)
    wrong = []
    while moment.year == year:
        if moment.astimezone(tz).utcoffset() != moment.astimezone(reference).utcoffset():
            wrong.append(moment.isoformat())
        moment += H
    assert wrong[:5] == []


def test_exchangelib_reads_the_unknown_id_error(exchangelib_protocol: object) -> None:
    from exchangelib.errors import ErrorTimeZone
    from exchangelib.services import GetServerTimeZones

    data = render_get_server_time_zones(TimeZonesQuery(("Nope",), True), year=2026)
    with pytest.raises(ErrorTimeZone):
        list(GetServerTimeZones(protocol=exchangelib_protocol).parse(data))
