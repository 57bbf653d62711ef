"""The directory a site map answers from: lookups, legacy DNs, groups, and live replacement."""

from __future__ import annotations

from sitemap._ldapentries import smtp_aliases
from sitemap.directory import Group, LiveDirectory, Snapshot, StaticDirectory
from sitemap.model import Mailbox, Site, Sitemap

ANN = Mailbox("ann@contoso.test", "eu", aliases=("anna@contoso.test",), legacy_dn="/o=c/cn=ann")
BOB = Mailbox("bob@contoso.test", "us")
SALES = Group("sales", "sales@contoso.test", ("ann@contoso.test", "bob@contoso.test"))


def test_static_directory_is_a_sequence_with_lookups() -> None:
    directory = StaticDirectory([ANN, BOB], [SALES])
    assert list(directory) == [ANN, BOB] and len(directory) == 2 and directory[1] == BOB
    assert directory == (ANN, BOB)
    assert directory.lookup(" ANNA@Contoso.Test ") == ANN
    assert directory.lookup("nobody@contoso.test") is None
    assert directory.by_legacy_dn("/O=C/CN=ANN") == ANN
    assert directory.group("SALES@contoso.test") == SALES == directory.group("sales")
    assert directory.groups_of("anna@contoso.test") == (SALES,)
    assert directory.groups_of("carol@contoso.test") == ()


def test_a_live_directory_swaps_its_whole_content() -> None:
    directory = LiveDirectory()
    assert not directory.loaded and list(directory) == []
    directory.replace(Snapshot((ANN,)))
    assert directory.loaded and directory.lookup("ann@contoso.test") == ANN
    directory.replace(Snapshot((BOB,)))
    assert directory.lookup("ann@contoso.test") is None and list(directory) == [BOB]


def test_the_sitemap_reads_whichever_directory_it_has() -> None:
    static = Sitemap("t", (Site("eu"), Site("us")), (ANN, BOB))
    assert static.lookup("anna@contoso.test") == ANN and static.mailboxes_of("us") == (BOB,)
    live = LiveDirectory()
    sitemap = Sitemap("t", (Site("eu"), Site("us")), live)
    assert sitemap.lookup("bob@contoso.test") is None
    live.replace(Snapshot((BOB,)))
    assert sitemap.lookup("bob@contoso.test") == BOB and sitemap.directory is live
    assert sitemap.mailboxes_of("us") == (BOB,)


def test_only_smtp_proxy_addresses_are_aliases() -> None:
    assert smtp_aliases(
        ["SMTP:ann@contoso.test", "smtp:a@contoso.test", "X500:/o=x", "SIP:ann@contoso.test",
         "plain@contoso.test", "smtp:"]
    ) == ["ann@contoso.test", "a@contoso.test", "plain@contoso.test"]  # fmt: skip
