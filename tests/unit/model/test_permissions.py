"""Permission levels: which entry decides (the precedence in cas/model/permissions.py), and what
each level leaves of a mailbox's data (cas/model/projection.py).

Every expectation below is written out by hand from the documented rules, not computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from cas.errors import MailboxError
from cas.model.availability import FreeBusyView, view_for
from cas.model.freebusy import BusyType, Event, EventDetails, MailboxData
from cas.model.permissions import PermissionPolicy
from cas.model.projection import OWNER, Access, Level, Requester, project
from sitemap.model import Grant, Mailbox, MailboxPermissions, Permissions

ANN = Mailbox("ann@contoso.test", "eu", aliases=("anna@contoso.test",))
BOB = Mailbox("bob@contoso.test", "eu")
CAROL = Mailbox("carol@contoso.test", "us", aliases=("caro@contoso.test",))

CONFIG = Permissions(
    default="FreeBusyTimeOnly",
    grants=(
        Grant("FreeBusyTimeAndSubjectAndLocation", group="helpdesk"),
        Grant("FullDetails", group="auditors"),
        Grant("None", user="mallory@contoso.test"),
        Grant("FullDetails", user="boss@contoso.test"),
    ),
    mailboxes=MappingProxyType(
        {
            "ann@contoso.test": MailboxPermissions(
                default="None",
                grants=(
                    Grant("FullDetails", user="Dave@Contoso.test", delegate=True),
                    Grant("FreeBusyTimeOnly", group="managers"),
                    Grant("FreeBusyTimeAndSubjectAndLocation", group="Team-A"),
                    Grant("None", user="boss@contoso.test"),
                ),
            ),
            # an LDAP directory: the entry names an alias
            "caro@contoso.test": MailboxPermissions(
                grants=(Grant("FullDetails", user="erin@contoso.test"),)
            ),
        }
    ),
)
POLICY = PermissionPolicy(CONFIG)


def who(name: str | None, *groups: str) -> Requester:
    return Requester(name, frozenset(groups))


@pytest.mark.parametrize(
    ("mailbox", "requester", "level", "private", "why"),
    [
        # 1. the owner, by address or alias, any case
        (ANN, who("ANN@contoso.test"), Level.FULL_DETAILS, True, "owner"),
        (ANN, who("anna@contoso.test"), Level.FULL_DETAILS, True, "owner"),
        # 2. an entry on the mailbox naming the user beats its groups and everything after
        (ANN, who("dave@contoso.test", "auditors"), Level.FULL_DETAILS, True, "user Dave"),
        (ANN, who("boss@contoso.test"), Level.NONE, False, "user boss"),
        # 3. groups on the mailbox: the highest of them, names in any case
        (
            ANN,
            who("x@contoso.test", "managers", "team-a"),
            Level.SUBJECT_AND_LOCATION,
            False,
            "group",
        ),
        (ANN, who("x@contoso.test", "Managers"), Level.TIME_ONLY, False, "group managers"),
        # 4. the mailbox's default beats organisation-wide grants
        (ANN, who("x@contoso.test", "auditors"), Level.NONE, False, "default"),
        (ANN, who("mallory@contoso.test"), Level.NONE, False, "default"),
        # 5. organisation-wide user grants beat organisation-wide groups
        (BOB, who("mallory@contoso.test", "auditors"), Level.NONE, False, "user mallory"),
        (BOB, who("boss@contoso.test"), Level.FULL_DETAILS, False, "user boss"),
        # 6. organisation-wide groups: the highest
        (BOB, who("x@contoso.test", "helpdesk", "AUDITORS"), Level.FULL_DETAILS, False, "auditors"),
        (BOB, who("x@contoso.test", "helpdesk"), Level.SUBJECT_AND_LOCATION, False, "helpdesk"),
        # 7. the organisation default
        (BOB, who("x@contoso.test", "nobody-names-this"), Level.TIME_ONLY, False, "organisation"),
        # an entry written under an alias applies to the mailbox
        (CAROL, who("erin@contoso.test"), Level.FULL_DETAILS, False, "user erin"),
        # anonymous: the anonymous level, never above the mailbox's default
        (BOB, who(None), Level.TIME_ONLY, False, "anonymous"),
        (ANN, who(None), Level.NONE, False, "default"),
    ],
)
def test_the_most_specific_entry_decides(
    mailbox: Mailbox, requester: Requester, level: Level, private: bool, why: str
) -> None:
    access = POLICY.access(mailbox, requester)
    assert (access.level, access.private) == (level, private)
    assert why.casefold() in access.source.casefold()


def test_without_a_permissions_section_everyone_sees_subjects_as_before() -> None:
    policy = PermissionPolicy()
    assert policy.access(BOB, who("x@contoso.test")).level is Level.SUBJECT_AND_LOCATION
    assert policy.access(BOB, who(None)).level is Level.SUBJECT_AND_LOCATION
    assert policy.access(BOB, who("bob@contoso.test")) == OWNER


def test_anonymous_level_is_its_own_setting() -> None:
    closed = PermissionPolicy(Permissions(default="FullDetails", anonymous="None"))
    assert closed.access(BOB, who(None)).level is Level.NONE
    assert closed.access(BOB, who("x@contoso.test")).level is Level.FULL_DETAILS


def test_only_groups_some_entry_names_are_vouched_for() -> None:
    requester = who("x@contoso.test", "Helpdesk", "TEAM-A", "unrelated", "other")
    assert POLICY.relevant_groups(requester) == {"Helpdesk", "TEAM-A"}
    assert PermissionPolicy().relevant_groups(requester) == frozenset()


# --- projection ---------------------------------------------------------------------------------

T = datetime(2024, 3, 4, 9, tzinfo=UTC)
MEETING = Event(T, T + timedelta(hours=1), BusyType.BUSY,
                EventDetails("id-1", "Design review", "Room 1", is_meeting=True))  # fmt: skip
PRIVATE = Event(T + timedelta(hours=2), T + timedelta(hours=3), BusyType.OOF,
                EventDetails("id-2", "Doctor", "Clinic", is_private=True, is_recurring=True))  # fmt: skip
BARE = Event(T + timedelta(hours=4), T + timedelta(hours=5), BusyType.TENTATIVE)
DATA = MailboxData(events=(MEETING, PRIVATE, BARE))


def test_none_is_no_free_busy_access_for_that_mailbox_only() -> None:
    result = project(DATA, Access(Level.NONE), "eu")
    assert isinstance(result, MailboxError)
    assert (result.code, result.site) == ("ErrorNoFreeBusyAccess", "eu")
    # a backend's error does not tell someone without access anything more
    failed = MailboxError.of("ErrorFreeBusyGenerationFailed", "down", "eu")
    assert project(failed, Access(Level.NONE), "eu").code == "ErrorNoFreeBusyAccess"
    assert project(failed, Access(Level.FULL_DETAILS), "eu") is failed


def test_time_only_keeps_times_and_busy_types_and_no_details() -> None:
    seen = project(DATA, Access(Level.TIME_ONLY))
    assert isinstance(seen, MailboxData) and seen.times_only
    assert [(e.start, e.end, e.busy_type, e.details) for e in seen.events] == [
        (T, T + timedelta(hours=1), BusyType.BUSY, None),
        (T + timedelta(hours=2), T + timedelta(hours=3), BusyType.OOF, None),
        (T + timedelta(hours=4), T + timedelta(hours=5), BusyType.TENTATIVE, None),
    ]


def test_subject_and_location_without_ids_and_private_items_masked() -> None:
    seen = project(DATA, Access(Level.SUBJECT_AND_LOCATION))
    assert isinstance(seen, MailboxData) and not seen.times_only
    assert seen.events[0].details == EventDetails(None, "Design review", "Room 1", is_meeting=True)
    assert seen.events[1].details == EventDetails(is_recurring=True, is_private=True)
    assert seen.events[2].details is None


def test_full_details_keep_ids_but_private_items_stay_masked() -> None:
    seen = project(DATA, Access(Level.FULL_DETAILS))
    assert isinstance(seen, MailboxData)
    assert seen.events[0].details == MEETING.details
    assert seen.events[1].details == EventDetails(is_recurring=True, is_private=True)


def test_the_owner_and_a_delegate_see_private_items() -> None:
    assert project(DATA, OWNER) == DATA
    assert project(DATA, Access(Level.FULL_DETAILS, private=True)) == DATA
    with pytest.raises(ValueError):
        Access(Level.SUBJECT_AND_LOCATION, private=True)


@pytest.mark.parametrize(
    ("asked", "answered"),
    [
        (FreeBusyView.DETAILED, FreeBusyView.FREE_BUSY),
        (FreeBusyView.DETAILED_MERGED, FreeBusyView.FREE_BUSY_MERGED),
        (FreeBusyView.FREE_BUSY, FreeBusyView.FREE_BUSY),
        (FreeBusyView.FREE_BUSY_MERGED, FreeBusyView.FREE_BUSY_MERGED),
        (FreeBusyView.MERGED_ONLY, FreeBusyView.MERGED_ONLY),
    ],
)
def test_detailed_views_are_downgraded_for_time_only(
    asked: FreeBusyView, answered: FreeBusyView
) -> None:
    seen = project(DATA, Access(Level.TIME_ONLY))
    assert isinstance(seen, MailboxData)
    assert view_for(asked, seen) is answered
    assert view_for(asked, DATA) is asked  # full data: as asked


def test_merged_only_data_stays_merged_only_at_every_level() -> None:
    legacy = MailboxData(merged="0022", merged_only=True)
    for level in (Level.TIME_ONLY, Level.SUBJECT_AND_LOCATION, Level.FULL_DETAILS):
        seen = project(legacy, Access(level))
        assert isinstance(seen, MailboxData) and seen.merged == "0022"
        assert view_for(FreeBusyView.DETAILED, seen) is FreeBusyView.MERGED_ONLY


def test_a_requester_key_changes_with_name_and_groups_but_not_case_or_order() -> None:
    a = Requester("Ann@Contoso.test", frozenset({"Sales", "managers"}))
    assert a.key == Requester("ann@contoso.test", frozenset({"MANAGERS", "sales"})).key
    assert a.key != Requester("ann@contoso.test", frozenset({"sales"})).key
    assert a.key != Requester("bob@contoso.test", frozenset({"sales", "managers"})).key
    assert Requester(None).key != Requester("-").key
    assert len({Requester(None).key, Requester("", frozenset({"x"})).key}) == 2
