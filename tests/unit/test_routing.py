"""The routing plan over a small in-memory sitemap."""

from __future__ import annotations

from cas.model.availability import MailboxQuery
from cas.routing import plan_routes
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
    targets = {"local:modern", "local:legacy", "site:us"}
    plan = plan_routes(SITEMAP, "eu", queries, targets=targets)
    assert [r.target for r in plan.routes] == [
        "local:modern", "local:modern", "local:modern", "local:legacy", "site:us", None,
    ]  # fmt: skip
    assert [r.kind for r in plan.routes] == [
        "local",
        "local",
        "local",
        "legacy",
        "remote",
        "unknown",
    ]
    # address, alias and legacy DN all name the same mailbox, so they share one fetch
    assert {t: [m.address for m in b] for t, b in plan.batches.items()} == {
        "local:modern": ["ann@contoso.test"],
        "local:legacy": ["old@contoso.test"],
        "site:us": ["bob@contoso.test"],
    }
    assert plan.routes[5].error is not None
    assert plan.routes[5].error.code == "ErrorMailRecipientNotFound"


def test_what_cannot_be_routed_gets_its_error_at_once() -> None:
    queries = [MailboxQuery("bob@contoso.test"), MailboxQuery("old@contoso.test")]
    no_forwarding = plan_routes(SITEMAP, "eu", queries, targets={"local:modern"})
    bob, old = no_forwarding.routes
    assert bob.error is not None and "cross-site forwarding is not configured" in bob.error.message
    assert (
        old.error is not None
        and "No legacy backend is configured for site 'eu'" in old.error.message
    )
    assert no_forwarding.batches == {}
    forwarded = plan_routes(SITEMAP, "eu", queries[:1], targets={"site:us"}, hop=1, hop_limit=1)
    [route] = forwarded.routes
    assert route.error is not None and route.error.code == "ErrorProxyRequestProcessingFailed"
    assert "hop limit (1)" in route.error.message and route.kind == "remote"
