"""The emulator's directory file (caslab.oldserver.directory): CSV, JSON and YAML forms, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caslab.oldserver.directory import (
    DirectoryEntry,
    DirectoryFileError,
    directory_from_mailboxes,
    load_directory,
    write_directory_json,
)
from sitemap.model import Mailbox

SITEMAP_CSV = Path(__file__).resolve().parents[3] / "data" / "sitemaps" / "directory.csv"
ANN_DN = "/o=Contoso/ou=EU/cn=Recipients/cn=ann"


def test_the_sitemap_directory_csv_gives_its_legacy_rows() -> None:
    assert load_directory(SITEMAP_CSV) == {
        "dave@fabrikam.test": DirectoryEntry(
            "/o=Fabrikam/ou=APAC/cn=Recipients/cn=dave", "Dave Doe"
        )
    }


def test_minimal_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"address,legacy_dn\nAnn@Contoso.test,{ANN_DN}\n\n")
    assert load_directory(path) == {"ann@contoso.test": DirectoryEntry(ANN_DN, "Ann@Contoso.test")}


@pytest.mark.parametrize(
    "data",
    [
        [{"address": "ann@contoso.test", "legacy_dn": ANN_DN, "display_name": "Ann"}],
        {"ann@contoso.test": {"legacy_dn": ANN_DN, "display_name": "Ann"}},
    ],
)
def test_json_forms(tmp_path: Path, data: object) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    assert load_directory(path) == {"ann@contoso.test": DirectoryEntry(ANN_DN, "Ann")}


def test_yaml_mapping_to_a_dn(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(f"ann@contoso.test: {ANN_DN}\n")
    assert load_directory(path)["ann@contoso.test"].legacy_dn == ANN_DN


def test_written_json_reads_back(tmp_path: Path) -> None:
    directory = {"ann@contoso.test": DirectoryEntry(ANN_DN, "Ann")}
    assert load_directory(write_directory_json(tmp_path / "d.json", directory)) == directory


def test_directory_from_mailboxes_keeps_legacy_ones_and_their_aliases() -> None:
    mailboxes = [
        Mailbox("ann@contoso.test", "eu", "legacy", ANN_DN, ("a@contoso.test",), "Ann"),
        Mailbox("bob@contoso.test", "eu", "modern", "/o=Contoso/ou=EU/cn=Recipients/cn=bob"),
    ]
    assert directory_from_mailboxes(mailboxes) == {
        "ann@contoso.test": DirectoryEntry(ANN_DN, "Ann"),
        "a@contoso.test": DirectoryEntry(ANN_DN, "Ann"),
    }


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("d.csv", "address,display_name\nann@contoso.test,Ann\n", "lacks column\\(s\\) legacy_dn"),
        ("d.csv", "address,legacy_dn\nann@contoso.test,ann\n", "line 2: a legacy DN starts with"),
        ("d.csv", f"address,legacy_dn\nann,{ANN_DN}\n", "line 2: address 'ann' is not"),
        (
            "d.csv",
            f"address,legacy_dn\na@x,{ANN_DN}\nA@X,{ANN_DN}\n",
            "line 3: address a@x is listed twice",
        ),
        ("d.json", "{", "not JSON"),
        ("d.json", '"just text"', "expected a list or an object"),
        ("d.json", '[{"address": "a@x"}]', "entry 1: a@x has no legacy_dn"),
        ("d.yaml", "a@x: [1, 2]", "expected a legacy DN or an object"),
        ("d.yaml", "a: [", "not YAML"),
        ("d.txt", "", "unknown directory format"),
    ],
)
def test_errors_name_the_file_and_entry(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DirectoryFileError, match=message) as caught:
        load_directory(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError, match="cannot read"):
        load_directory(tmp_path / "none.json")
    with pytest.raises(DirectoryFileError, match="cannot read"):
        load_directory(tmp_path / "none.csv")
