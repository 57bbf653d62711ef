"""Permission levels through real node apps of two sites (tests/support/twosite.py): each
requester sees exactly its level of a mailbox, at every front door, through the same node and
across sites, whatever order they ask in and whatever the caches hold.

The mailboxes' data is fixed (`DATA`); every expectation below is written out by hand from it
and from the permissions here, not computed by the code under test:

* ann (site eu): Design review 09-10 (Room 1), Doctor 13-14 (private), Maybe coffee 15-15:30
  (tentative); bob (site us): Dentist 10-12 (OOF), 1:1 14-15 (Room 9), From home 16-17
  (working elsewhere), Therapy 17-17:30 (private).
* Organisation default FreeBusyTimeOnly; the helpdesk group gets subject and location on every
  mailbox; bob's calendar is closed to everyone else (default None) but the helpdesk and his
  delegate ann (full details, private items included).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import MappingProxyType

import pytest
from lxml import etree

from sitemap.model import Grant, MailboxPermissions, Permissions
from tests.support.twosite import TwoSites
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
START, END = "2024-03-04T08:00:00Z", "2024-03-04T18:00:00Z"
ANN, BOB = "ann@contoso.test", "bob@contoso.test"
CAROL = "carol@contoso.test"

PERMISSIONS = Permissions(
    default="FreeBusyTimeOnly",
    grants=(Grant("FreeBusyTimeAndSubjectAndLocation", group="helpdesk"),),
    mailboxes=MappingProxyType(
        {
            BOB: MailboxPermissions(
                default="None",
                grants=(
                    Grant("FreeBusyTimeAndSubjectAndLocation", group="HelpDesk"),
                    Grant("FullDetails", user=ANN, delegate=True),
                ),
            )
        }
    ),
)
GROUPS = {CAROL: ("helpdesk", "unrelated")}

# What each requester sees of each mailbox in a DetailedMerged answer: the view type and the
# subjects (None: a detail without a subject; the list is None when there are no details), or
# the error code.
ANN_TIMES = ("FreeBusyMerged", None)
ANN_SUBJECTS = ("DetailedMerged", ["Design review", None, "Maybe coffee"])
ANN_ALL = ("DetailedMerged", ["Design review", "Doctor", "Maybe coffee"])
BOB_SUBJECTS = ("DetailedMerged", ["Dentist", "1:1", "From home", None])
BOB_ALL = ("DetailedMerged", ["Dentist", "1:1", "From home", "Therapy"])
NO_ACCESS = "ErrorNoFreeBusyAccess"
EXPECTED = {
    "scheduler": {ANN: ANN_TIMES, BOB: NO_ACCESS},
    CAROL: {ANN: ANN_SUBJECTS, BOB: BOB_SUBJECTS},
    ANN: {ANN: ANN_ALL, BOB: BOB_ALL},
    BOB: {ANN: ANN_TIMES, BOB: BOB_ALL},
}


def sites_with_permissions(root: Path, **settings: object) -> TwoSites:
    return TwoSites(root, settings=settings, permissions=PERMISSIONS, groups=GROUPS)


def seen(body: bytes) -> list[object]:
    """Per mailbox: its error code, or (view type, subjects or None without details)."""
    found: list[object] = []
    for item in etree.fromstring(body).iter(f"{M}FreeBusyResponse"):
        code = item.findtext(f"{M}ResponseMessage/{M}ResponseCode")
        if code != "NoError":
            found.append(code)
            continue
        view = item.find(f"{M}FreeBusyView")
        details = list(view.iter(f"{T}CalendarEventDetails"))
        assert not any(d.find(f"{T}ID") is not None for d in details)  # no item ids in DATA
        events = list(view.iter(f"{T}CalendarEvent"))
        subjects = [d.findtext(f"{T}Subject") for d in details] if details else None
        assert details == [] or len(details) == len(events)
        found.append((view.findtext(f"{T}FreeBusyViewType"), subjects))
    return found


async def ews(sites: TwoSites, site: str, user: str, addresses: list[str]) -> list[object]:
    async with sites.client(site, user) as client:
        r = await client.post(
            "/EWS/Exchange.asmx",
            content=availability(addresses, start=START, end=END, view="DetailedMerged"),
        )
    assert r.status_code == 200, r.text
    return seen(r.content)


@pytest.mark.parametrize("entry", ["eu", "us"])
@pytest.mark.parametrize(("first", "second"), [("scheduler", CAROL), (CAROL, "scheduler")])
async def test_two_requesters_see_their_own_levels_in_either_order(
    tmp_path: Path, entry: str, first: str, second: str
) -> None:
    """The same two mailboxes (one local to the entry node, one of the other site) asked by two
    requesters in turn, twice each: the second round comes from the caches."""
    sites = sites_with_permissions(tmp_path)
    for user in (first, second, first, second):
        got = await ews(sites, entry, user, [ANN, BOB])
        assert got == [EXPECTED[user][ANN], EXPECTED[user][BOB]], user


async def test_owners_and_delegates_see_private_items_and_others_do_not(tmp_path: Path) -> None:
    sites = sites_with_permissions(tmp_path)
    for user in (ANN, BOB, CAROL, "scheduler", ANN):
        for entry in ("eu", "us"):
            got = await ews(sites, entry, user, [ANN, BOB])
            assert got == [EXPECTED[user][ANN], EXPECTED[user][BOB]], (user, entry)


async def test_the_owning_site_decides_with_the_groups_the_entry_node_vouched_for(
    tmp_path: Path,
) -> None:
    """carol's helpdesk group travels in the signed token: the us node gives her bob's subjects.
    Only groups some entry names travel (not "unrelated")."""
    sites = sites_with_permissions(tmp_path)
    assert await ews(sites, "eu", CAROL, [BOB]) == [BOB_SUBJECTS]
    eu = sites.apps["eu"].state.holder.current
    [forwarder] = {s.inner.forwarder for s in eu.remote.values()}  # type: ignore[attr-defined]
    carol = await eu.authenticator.verify_header(basic(CAROL, "carol-pw"), "ews")
    assert carol.groups == {"helpdesk", "unrelated"}
    assert forwarder.vouch_groups(carol) == {"helpdesk"}


async def test_a_changed_group_is_not_answered_from_the_old_groups_copy(tmp_path: Path) -> None:
    sites = sites_with_permissions(tmp_path)
    assert await ews(sites, "eu", CAROL, [BOB]) == [BOB_SUBJECTS]
    assert await ews(sites, "eu", CAROL, [BOB]) == [BOB_SUBJECTS]  # now kept at eu
    sites.write_users({CAROL: ("unrelated",)})  # carol leaves the helpdesk
    deadline = time.monotonic() + 15  # the users file is looked at every 2 s
    while (got := await ews(sites, "eu", CAROL, [BOB])) != [NO_ACCESS]:
        assert got == [BOB_SUBJECTS] and time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert await ews(sites, "eu", CAROL, [ANN]) == [ANN_TIMES]


async def test_the_json_api_applies_the_same_levels(tmp_path: Path) -> None:
    sites = sites_with_permissions(tmp_path)
    body = {"schedules": [ANN, BOB], "startTime": {"dateTime": START[:-1], "timeZone": "UTC"},
            "endTime": {"dateTime": END[:-1], "timeZone": "UTC"},
            "availabilityViewInterval": 60, "view": "DetailedMerged"}  # fmt: skip
    answers = {}
    for user in ("scheduler", CAROL):
        async with sites.client("eu", user) as client:
            r = await client.post("/api/v1/availability", json=body)
        assert r.status_code == 200, r.text
        answers[user] = r.json()["value"]
    ann, bob = answers["scheduler"]
    assert ann["availabilityView"] == "0200020100"
    assert [i["status"] for i in ann["scheduleItems"]] == ["busy", "busy", "tentative"]
    assert not any("subject" in i or "location" in i for i in ann["scheduleItems"])
    assert bob["error"]["responseCode"] == NO_ACCESS and bob["error"]["site"] == "us"
    ann, bob = answers[CAROL]
    assert [i["subject"] for i in ann["scheduleItems"]] == ["Design review", None, "Maybe coffee"]
    assert [i["location"] for i in bob["scheduleItems"]] == [None, "Room 9", None, None]


async def test_the_old_front_door_applies_the_same_levels(tmp_path: Path) -> None:
    sites = sites_with_permissions(tmp_path)
    query = {"cmd": "freebusy", "start": START, "end": END, "interval": "60"}
    digits = {}
    for user in ("scheduler", CAROL):
        async with sites.client("eu", user) as client:
            r = await client.get("/public/", params=[*query.items(), ("u", ANN), ("u", BOB)])
        assert r.status_code == 200, r.text
        tree = etree.fromstring(r.content)
        digits[user] = [i.findtext("{WM}fbdata") for i in tree.iter("{WM}item")][1:]
    assert digits["scheduler"] == ["0200020100", "4444444444"]  # bob: no access, never free
    assert digits[CAROL] == ["0200020100", "0033002002"]


async def test_an_unauthenticated_lookup_is_refused(tmp_path: Path) -> None:
    sites = sites_with_permissions(tmp_path)
    async with sites.client("eu", None) as client:
        r = await client.post("/EWS/Exchange.asmx", content=availability([ANN]))
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]


def basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
