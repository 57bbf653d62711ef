"""The PIDF document of every presence state validates against the RFC 3863 schema, with its
RPID (RFC 4480) and data-model (RFC 4479) parts checked by their own schemas
(tests/data/pidf/, with their sources named in its README)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from cas.codecs.pidf import DM, PIDF, RPID, render_pidf
from cas.errors import MailboxError
from cas.model.busy import Presence
from cas.model.freebusy import Freshness
from cas.presence.state import PresenceView, Shape, unknown_view
from tests.support.pidf import pidf_schema

NS = {"p": PIDF, "r": RPID, "dm": DM}
NOW = datetime(2030, 1, 7, 9, 12, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return pidf_schema()


def view(state: Presence, **extra: object) -> PresenceView:
    fields: dict[str, object] = dict(
        address="ann@contoso.test", at=NOW, state=state, since=NOW - timedelta(minutes=12),
        until=NOW + timedelta(minutes=48), next_state=Presence.AVAILABLE, subject="Planning",
        location="Room 1", slot_start=NOW.replace(minute=0, second=0), slot_minutes=15,
        slots="22220000", freshness=Freshness("cache", 3.0, "eu"),
    )  # fmt: skip
    fields.update(extra)
    return PresenceView(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "activity", "basic"),
    [
        (Presence.AVAILABLE, None, "open"),
        (Presence.IN_A_MEETING, "meeting", "open"),
        (Presence.BUSY, "busy", "open"),
        (Presence.AWAY, "away", "open"),
        (Presence.UNKNOWN, "unknown", None),
    ],
)
def test_every_state_validates_and_says_its_activity(
    schema: etree.XMLSchema, state: Presence, activity: str | None, basic: str | None
) -> None:
    document = etree.fromstring(render_pidf(view(state)))
    schema.assertValid(document)
    assert document.get("entity") == "pres:ann@contoso.test"
    assert document.findtext("p:tuple/p:status/p:basic", namespaces=NS) == basic
    found = [
        etree.QName(e).localname
        for e in document.iterfind("p:tuple/p:status/r:activities/*", namespaces=NS)
    ]
    assert found == ([activity] if activity else [])
    person = [etree.QName(e).localname for e in document.iterfind("dm:person/r:activities/*", NS)]
    assert person == found
    assert document.findtext("p:tuple/p:timestamp", namespaces=NS) == "2030-01-07T09:12:03Z"


def test_times_subject_and_location_where_visible(schema: etree.XMLSchema) -> None:
    document = etree.fromstring(render_pidf(view(Presence.IN_A_MEETING)))
    activities = document.find("p:tuple/p:status/r:activities", NS)
    assert activities is not None
    assert (activities.get("from"), activities.get("until")) == (
        "2030-01-07T09:00:03Z", "2030-01-07T10:00:03Z",
    )  # fmt: skip
    assert document.findtext("p:tuple/p:note", namespaces=NS) == "Planning (Room 1)"
    hidden = etree.fromstring(render_pidf(view(Presence.BUSY, subject=None, location=None)))
    schema.assertValid(hidden)
    assert hidden.find("p:tuple/p:note", NS) is None


def test_an_error_view_validates_as_unknown(schema: etree.XMLSchema) -> None:
    error = MailboxError.of("ErrorFreeBusyGenerationFailed")
    shape = Shape(slots=8)
    document = etree.fromstring(
        render_pidf(unknown_view("a@contoso.test", NOW, shape, error=error))
    )
    schema.assertValid(document)
    assert document.find("p:tuple/p:status/r:activities/r:unknown", NS) is not None


def test_the_schemas_do_check_what_the_wildcards_let_in(schema: etree.XMLSchema) -> None:
    """The check can fail: a wrong basic value, and an activity RPID does not define."""
    good = render_pidf(view(Presence.IN_A_MEETING))
    assert not schema.validate(etree.fromstring(good.replace(b">open<", b">maybe<")))
    assert not schema.validate(etree.fromstring(good.replace(b"rpid:meeting", b"rpid:meetin")))
