"""The `permissions` section: what a valid one gives, the file it may name, and every problem a
broken one reports with its file, entry and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sitemap.load import SitemapError, load_sitemap, parse_sitemap
from sitemap.model import DEFAULT_LEVEL, Grant, MailboxPermissions

BASE = """
domains: [contoso.test]
sites: [{name: eu}, {name: us}]
mailboxes:
  - {address: ann@contoso.test, site: eu, aliases: [anna@contoso.test]}
  - {address: bob@contoso.test, site: us}
"""
SOURCE = "/etc/cas/sitemap.yaml"


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_sitemap(BASE + text, SOURCE)


def problems(text: str, base: str = BASE) -> list[tuple[str, str, str, str]]:
    with pytest.raises(SitemapError) as caught:
        parse_sitemap(base + text, SOURCE)
    return [(p.file, p.entry, p.field, p.message) for p in caught.value.problems]


def test_no_section_keeps_what_every_caller_saw_before() -> None:
    permissions = load("").permissions
    assert permissions.default == DEFAULT_LEVEL == "FreeBusyTimeAndSubjectAndLocation"
    assert permissions.anonymous is None and permissions.grants == () and not permissions.mailboxes


def test_a_full_section_in_every_spelling() -> None:
    permissions = load("""
permissions:
  default: availabilityonly
  anonymous: None
  grants:
    - {group: helpdesk, level: LimitedDetails}
    - {user: boss@contoso.test, level: reviewer}
  mailboxes:
    ANNA@contoso.test:                     # an alias, any case: kept under the primary address
      default: none
      grants:
        - {user: dave@contoso.test, level: FullDetails, delegate: true}
        - {group: managers, level: FreeBusyTimeOnly}
    bob@contoso.test:
""").permissions
    assert (permissions.default, permissions.anonymous) == ("FreeBusyTimeOnly", "None")
    assert permissions.grants == (
        Grant("FreeBusyTimeAndSubjectAndLocation", group="helpdesk"),
        Grant("FullDetails", user="boss@contoso.test"),
    )
    assert dict(permissions.mailboxes) == {
        "ann@contoso.test": MailboxPermissions(
            "None",
            (
                Grant("FullDetails", user="dave@contoso.test", delegate=True),
                Grant("FreeBusyTimeOnly", group="managers"),
            ),
        ),
        "bob@contoso.test": MailboxPermissions(),
    }


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("default: Full", "default", "not a permission level: 'Full'"),
        ("default: 3", "default", "expected a permission level"),
        ("anonymous: [None]", "anonymous", "expected a permission level"),
        ("grants: {user: x}", "grants", "expected a list of grants"),
        ("grants: [x]", "grants[0]", "expected a mapping"),
        ("grants: [{level: None}]", "grants[0].user", "name a user or a group"),
        ("grants: [{user: a, group: b, level: None}]", "grants[0].group", "not both"),
        ("grants: [{user: a}]", "grants[0].level", "required field missing"),
        ("grants: [{user: a, level: Owner}]", "grants[0].level", "'Owner'"),
        ("grants: [{user: a, level: FullDetails, delegate: 'yes'}]", "grants[0].delegate", "true or false"),
        ("grants: [{user: a, level: FullDetails, delegate: true}]", "grants[0].delegate", "under mailboxes"),
        ("grants: [{user: a, level: None, rights: x}]", "grants[0].rights", "unknown field"),
        ("grants: [{user: A, level: None}, {user: a, level: FullDetails}]", "grants[1]", "repeats grants[0]"),
        ("mailboxes: [ann@contoso.test]", "mailboxes", "mapping of address"),
        ("mailboxes: {ann@other.test: {}}", "mailboxes.ann@other.test", "not in domains"),
        ("mailboxes: {nobody@contoso.test: {}}", "mailboxes.nobody@contoso.test", "no such mailbox"),
        ("mailboxes: {ann@contoso.test: {}, anna@contoso.test: {}}", "mailboxes.anna@contoso.test", "the same mailbox as mailboxes.ann@contoso.test"),
        ("mailboxes: {ann@contoso.test: {}, ANN@contoso.test: {}}", "mailboxes.ANN@contoso.test", "repeats"),
        ("mailboxes: {ann@contoso.test: None}", "mailboxes.ann@contoso.test", "expected a mapping"),
        ("mailboxes: {ann@contoso.test: {default: some}}", "mailboxes.ann@contoso.test.default", "'some'"),
        ("mailboxes: {ann@contoso.test: {grants: [{user: d, level: FreeBusyTimeOnly, delegate: true}]}}",
         "mailboxes.ann@contoso.test.grants[0].delegate", "level FullDetails, not FreeBusyTimeOnly"),
        ("mailboxes: {ann@contoso.test: {owner: me}}", "mailboxes.ann@contoso.test.owner", "unknown field"),
        ("level: None", "level", "unknown field"),
    ],
)  # fmt: skip
def test_each_problem_names_its_entry_and_field(text: str, field: str, words: str) -> None:
    indented = "\n".join("  " + line for line in text.splitlines())
    [(file, entry, where, message)] = problems("permissions:\n" + indented + "\n")
    assert (file, entry, where) == (SOURCE, "permissions", field)
    assert words in message


def test_a_section_that_is_not_a_mapping() -> None:
    [(_, entry, field, message)] = problems("permissions: [default]\n")
    assert (entry, field) == ("(top level)", "permissions") and "mapping" in message


def test_with_an_ldap_directory_mailbox_entries_are_kept_as_written(tmp_path: Path) -> None:
    base = """
domains: [contoso.test]
sites: [{name: eu}]
ldap: {url: "ldap://127.0.0.1:3890"}
directory: {source: ldap, base: "ou=people,dc=contoso,dc=test"}
"""
    sitemap = parse_sitemap(
        base + "permissions: {mailboxes: {Someone@contoso.test: {default: None}}}\n", SOURCE
    )
    assert dict(sitemap.permissions.mailboxes) == {
        "someone@contoso.test": MailboxPermissions("None")
    }


def write(folder: Path, permissions: str, inline: str = "permissions: {file: grants.yaml}") -> Path:
    (folder / "grants.yaml").write_text(permissions)
    path = folder / "sitemap.yaml"
    path.write_text(BASE + inline + "\n")
    return path


def test_the_permissions_may_live_in_a_file_the_site_map_names(tmp_path: Path) -> None:
    path = write(
        tmp_path, "default: FreeBusyTimeOnly\nmailboxes: {ann@contoso.test: {default: None}}\n"
    )
    permissions = load_sitemap(path).permissions
    assert permissions.file == str(tmp_path / "grants.yaml")
    assert permissions.default == "FreeBusyTimeOnly"
    assert permissions.mailboxes["ann@contoso.test"] == MailboxPermissions("None")


@pytest.mark.parametrize(
    ("content", "entry", "field", "words"),
    [
        ("default: Most\n", "(top level)", "default", "'Most'"),
        ("file: other.yaml\n", "(top level)", "file", "unknown field"),
        ("mailboxes: {nobody@contoso.test: {}}\n", "(top level)", "mailboxes.nobody@contoso.test", "no such mailbox"),
        ("", "(top level)", "", "empty file"),
        ("default: [\n", "line 2, column 1", "", "YAML syntax error"),
        ("default: None\ndefault: None\n", "line 2, column 1", "default", "duplicate key"),
    ],
)  # fmt: skip
def test_problems_in_the_file_name_the_file(
    tmp_path: Path, content: str, entry: str, field: str, words: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(SitemapError) as caught:
        load_sitemap(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.entry, problem.field) == (
        str(tmp_path / "grants.yaml"),
        entry,
        field,
    )
    assert words in problem.message


def test_a_file_and_inline_permissions_together_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "default: None\n", "permissions: {file: grants.yaml, default: None}")
    with pytest.raises(SitemapError) as caught:
        load_sitemap(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.entry, problem.field) == (str(path), "permissions", "file")
    assert "not both" in problem.message


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "sitemap.yaml"
    path.write_text(BASE + "permissions: {file: nowhere.yaml}\n")
    with pytest.raises(SitemapError) as caught:
        load_sitemap(path)
    [problem] = caught.value.problems
    assert (problem.entry, problem.field) == (
        "permissions",
        "file",
    ) and "cannot read" in problem.message


def test_sitemap_validate_prints_each_problem_with_file_entry_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "grants: [{group: g, level: Lots}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "sitemap", "validate", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        f"{tmp_path / 'grants.yaml'}: (top level): grants[0].level: not a permission level: 'Lots'"
        in done.stderr
    )
