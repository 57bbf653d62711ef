"""Routing plan and privacy projection over a small in-memory sitemap."""

from __future__ import annotations

from datetime import UTC, datetime

from cas.model.availability import MailboxQuery
from cas.model.freebusy import BusyType, Event, EventDetails, MailboxData
from cas.model.projection import Requester, project
from cas.planning import RouteKind, plan_routes
from sitemap.model import Mailbox, Site, Sitemap

SITEMAP = Sitemap(
    source="test",
    sites=(Site("eu"), Site("us")),
    mailboxes=(
        Mailbox("ann@contoso.test", "eu", aliases=("anna@contoso.test",), legacy_dn="/o=C/cn=ann"),
        Mailbox("old@contoso.test", "eu", kind="legacy"),
        Mailbox("bob@contoso.test", "us"),
    ),
)


def test_routes_by_site_kind_and_directory() -> None:
    queries = [
        MailboxQuery("ANN@contoso.test"),
        MailboxQuery("anna@contoso.test"),
        MailboxQuery("/o=C/cn=ANN", routing_type="EX"),
        MailboxQuery("old@contoso.test"),
        MailboxQuery("bob@contoso.test"),
        MailboxQuery("nobody@contoso.test"),
    ]
    routes = plan_routes(SITEMAP, "eu", queries)
    assert [r.kind for r in routes] == [
        RouteKind.LOCAL,
        RouteKind.LOCAL,
        RouteKind.LOCAL,
        RouteKind.LOCAL_LEGACY,
        RouteKind.REMOTE,
        RouteKind.UNKNOWN,
    ]
    # address, alias and legacy DN all name the same mailbox, so they share one fetch
    assert routes[0].key == routes[1].key == routes[2].key == "ann@contoso.test"
    assert routes[5].key is None


def test_private_details_are_masked_for_everyone_but_the_owner() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    private = Event(t, t, BusyType.BUSY, EventDetails("x", "Doctor", "Clinic", is_private=True))
    public = Event(t, t, BusyType.BUSY, EventDetails("y", "Standup", "Room 1"))
    data = MailboxData(events=(private, public))
    seen = project(data, Requester("bob@contoso.test"), "ann@contoso.test")
    assert seen.events[0].details == EventDetails(is_private=True)
    assert seen.events[1].details.subject == "Standup"
    own = project(data, Requester("Ann@Contoso.test"), "ann@contoso.test")
    assert own.events[0].details.subject == "Doctor"
    assert project(data, Requester(None), "ann@contoso.test").events[0].details.subject is None
