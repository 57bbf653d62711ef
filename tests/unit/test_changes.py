"""The change feed's announcements to other sites: coalesced, per site, none left behind."""

from __future__ import annotations

import asyncio
from typing import Any

from cas.changes import ChangeFeed
from cas.sources.signed import SiteUnreachable
from sitemap.model import Mailbox

ANN = Mailbox("ann@contoso.test", "us")
BOB = Mailbox("bob@contoso.test", "us")


class Caller:
    """Records each call; a site in `held` answers only when its event is set."""

    def __init__(self, held: tuple[str, ...] = (), down: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.held = {site: asyncio.Event() for site in held}
        self.down = down

    async def post(self, site: str, path: str, document: Any, *, timeout: float) -> Any:
        self.calls.append((site, list(document["addresses"])))
        if site in self.held:
            await self.held[site].wait()
        if site in self.down:
            raise SiteUnreachable(f"site {site!r}: no answer within {timeout:g}s")
        return {"dropped": 1}

    def to(self, site: str) -> list[list[str]]:
        return [addresses for s, addresses in self.calls if s == site]


async def forget(mailbox: Mailbox) -> int:
    return 0


def feed(caller: Caller, **options: Any) -> ChangeFeed:
    return ChangeFeed("us", ["eu", "ap"], forget, caller, delay=0.01, **options)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.02)


async def test_changes_close_together_go_in_one_call_per_site_once_each() -> None:
    caller = Caller()
    changes = feed(caller)
    for mailbox in (ANN, BOB, ANN):
        changes.announce(mailbox)
    await settle()
    assert caller.to("eu") == [[ANN.address, BOB.address]]
    assert caller.to("ap") == [[ANN.address, BOB.address]]
    await changes.aclose()


async def test_a_change_announced_during_a_call_goes_in_the_next_one() -> None:
    caller = Caller(held=("eu",))
    changes = feed(caller)
    changes.announce(ANN)
    await settle()  # the call to eu is under way and hangs
    changes.announce(BOB)
    await settle()
    assert caller.to("ap") == [[ANN.address], [BOB.address]]  # a slow eu delays only itself
    assert caller.to("eu") == [[ANN.address]]
    caller.held["eu"].set()
    await settle()
    assert caller.to("eu") == [[ANN.address], [BOB.address]]  # not left behind
    await changes.aclose()


async def test_an_unreachable_site_is_logged_and_the_next_change_still_goes(caplog) -> None:  # type: ignore[no-untyped-def]
    caller = Caller(down=("eu",))
    changes = feed(caller)
    changes.announce(ANN)
    await settle()
    assert "changes not announced to site 'eu'" in caplog.text
    changes.announce(BOB)
    await settle()
    assert caller.to("eu") == [[ANN.address], [BOB.address]]
    assert caller.to("ap") == [[ANN.address], [BOB.address]]
    await changes.aclose()


async def test_past_the_bound_further_changes_are_dropped_with_a_warning(caplog) -> None:  # type: ignore[no-untyped-def]
    caller = Caller(held=("eu", "ap"))
    changes = feed(caller, max_pending=1)
    changes.announce(ANN)
    await settle()  # ANN is being sent; the queue is empty again
    changes.announce(BOB)
    changes.announce(Mailbox("cid@contoso.test", "us"))  # one waits already: dropped
    assert "too many changes waiting to be announced to site 'eu'" in caplog.text
    caller.held["eu"].set()
    caller.held["ap"].set()
    await settle()
    assert caller.to("eu") == [[ANN.address], [BOB.address]]
    await changes.aclose()
