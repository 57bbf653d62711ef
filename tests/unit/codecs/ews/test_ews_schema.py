"""Every EWS body the codec emits validates against the EWS schema in tests/data/ews/schema/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from lxml import etree

import cas.errors
from cas.codecs.ews import (
    TimeZonesQuery,
    parse_envelope,
    parse_get_user_availability,
    render_convert_id,
    render_fault,
    render_get_server_time_zones,
    render_get_user_availability,
)
from cas.codecs.ews.soap import SOAP_NS, TYPES_NS
from cas.errors import MAILBOX_ERROR_CODES, MailboxError, RequestFault
from cas.model.availability import AvailabilityRequest, FreeBusyView, MailboxQuery
from cas.model.freebusy import (
    BusyType,
    Event,
    EventDetails,
    MailboxData,
    WorkingHours,
    WorkingPeriod,
    default_working_hours,
)
from tests.support.ews_schema import ews_schema, validate_ews_body


@pytest.fixture(scope="session", autouse=True)
def schema() -> etree.XMLSchema:
    return ews_schema()


def test_schema_is_loaded_once(schema: etree.XMLSchema) -> None:
    assert ews_schema() is schema


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


EVENTS = (
    Event(
        u(2024, 3, 4, 9),
        u(2024, 3, 4, 10),
        BusyType.BUSY,
        EventDetails(id="AAMk1", subject="Sync & <plan>", location="Room 1", is_meeting=True),
    ),
    Event(u(2024, 3, 4, 11), u(2024, 3, 4, 12), BusyType.TENTATIVE, EventDetails(is_private=True)),
    Event(u(2024, 3, 4, 12), u(2024, 3, 4, 13), BusyType.WORKING_ELSEWHERE),
    Event(u(2024, 3, 4, 13), u(2024, 3, 4, 13), BusyType.OOF),
    Event(u(2024, 3, 4, 14), u(2024, 3, 4, 15), BusyType.NO_DATA, EventDetails(subject="")),
)
FULL = MailboxData(events=EVENTS, working_hours=default_working_hours("Europe/Berlin"))


@pytest.fixture(scope="module")
def base(request_bytes: Callable[[str], bytes]) -> AvailabilityRequest:
    return parse_get_user_availability(parse_envelope(request_bytes("exchangelib_berlin.xml")))


def render(
    base: AvailabilityRequest, results: list[MailboxData | MailboxError], **changes: object
) -> bytes:
    mailboxes = tuple(MailboxQuery(f"user{i}@example.com") for i in range(len(results)))
    request = replace(base, mailboxes=mailboxes, **changes)  # type: ignore[arg-type]
    return render_get_user_availability(request, results)


@pytest.mark.parametrize(
    "view", [v for v in FreeBusyView if v is not FreeBusyView.NONE], ids=lambda v: v.value
)
@pytest.mark.parametrize("version", ["Exchange2016", "Exchange2010_SP2"])
def test_every_view_with_events_details_and_working_hours(
    base: AvailabilityRequest, view: FreeBusyView, version: str
) -> None:
    validate_ews_body(render(base, [FULL, MailboxData()], view=view, server_version=version))


def test_error_mailboxes(base: AvailabilityRequest) -> None:
    errors: list[MailboxData | MailboxError] = [
        MailboxError.of(code, site="eu" if i % 2 else None)
        for i, code in enumerate(MAILBOX_ERROR_CODES)
    ]
    validate_ews_body(render(base, errors + [FULL]))


def test_merged_only_data(base: AvailabilityRequest) -> None:
    legacy = MailboxData(merged="44402222", merged_only=True)
    covered = MailboxData(events=EVENTS, coverage=((u(2024, 3, 4, 7), u(2024, 3, 4, 10)),))
    validate_ews_body(render(base, [legacy, covered], view=FreeBusyView.DETAILED))


@pytest.mark.parametrize(
    "zone",
    [
        "Asia/Tokyo",
        "Europe/Moscow",
        "Australia/Sydney",
        "America/Sao_Paulo",
        "Etc/UTC",
        "Asia/Kathmandu",
        "America/Asuncion",
    ],
)
def test_working_hours_in_zones_with_and_without_dst(base: AvailabilityRequest, zone: str) -> None:
    hours = WorkingHours(zone, (WorkingPeriod(("Sunday", "Saturday"), 0, 1440),))
    validate_ews_body(render(base, [MailboxData(working_hours=hours)], view=FreeBusyView.FREE_BUSY))


def test_empty_response(base: AvailabilityRequest) -> None:
    validate_ews_body(render(base, []))


@pytest.mark.parametrize(
    "ids",
    [
        (
            "W. Europe Standard Time",
            "UTC",
            "Pacific Standard Time",
            "AUS Eastern Standard Time",
            "Tokyo Standard Time",
            "E. South America Standard Time",
            "Russian Standard Time",
            "Paraguay Standard Time",
            "Morocco Standard Time",
            "Nepal Standard Time",
        ),
        ("UTC", "No Such Standard Time", "Tokyo Standard Time"),
        ("No Such Standard Time",),
    ],
    ids=["known", "mixed", "unknown"],
)
@pytest.mark.parametrize("full", [True, False])
def test_get_server_time_zones(ids: tuple[str, ...], full: bool) -> None:
    validate_ews_body(render_get_server_time_zones(TimeZonesQuery(ids, full), year=2026))


def test_get_server_time_zones_every_zone_with_full_data() -> None:
    validate_ews_body(render_get_server_time_zones(TimeZonesQuery(None, True), year=2026))


def test_convert_id(request_bytes: Callable[[str], bytes]) -> None:
    validate_ews_body(render_convert_id(parse_envelope(request_bytes("convert_id.xml"))))


def test_the_validator_catches_schema_errors(base: AvailabilityRequest) -> None:
    data = render(base, [FULL], view=FreeBusyView.DETAILED)
    swapped = data.replace(b"<t:ID>AAMk1</t:ID><t:Subject>", b"<t:Subject>AAMk1</t:Subject><t:ID>")
    swapped = swapped.replace(b"</t:Subject><t:Location>", b"</t:ID><t:Location>", 1)
    assert swapped != data
    with pytest.raises(AssertionError, match="not schema-valid"):
        validate_ews_body(swapped)
    with pytest.raises(AssertionError, match="Fault"):
        validate_ews_body(render_fault(RequestFault("x")))


FAULT_CLASSES = sorted(
    (c for c in vars(cas.errors).values() if isinstance(c, type) and issubclass(c, RequestFault)),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("cls", FAULT_CLASSES, ids=lambda c: c.__name__)
def test_faults_are_soap_faults_with_the_version_header(cls: type[RequestFault]) -> None:
    root = etree.fromstring(render_fault(cls("Something went wrong.")))
    assert root.find(f"{{{SOAP_NS}}}Header/{{{TYPES_NS}}}ServerVersionInfo") is not None
    fault = root.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode") == f"a:{cls.code}"
    assert fault.find("faultcode").nsmap["a"] == TYPES_NS
    assert fault.findtext("faultstring") == "Something went wrong."
    errors_ns = "http://schemas.microsoft.com/exchange/services/2006/errors"
    assert fault.findtext(f"detail/{{{errors_ns}}}ResponseCode") == cls.code
    assert fault.findtext(f"detail/{{{errors_ns}}}Message") == "Something went wrong."
