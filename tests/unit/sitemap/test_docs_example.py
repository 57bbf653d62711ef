"""docs/sitemap.md and the loader agree: the documented example loads, and what the docs print
for it (the default legacy DN in the `sitemap locate` example) is what the loader computes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sitemap.load import load_sitemap
from sitemap.model import Sitemap

DOC = Path(__file__).resolve().parents[3] / "docs" / "sitemap.md"


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


@pytest.fixture(scope="module")
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def example(doc_text: str, tmp_path_factory: pytest.TempPathFactory) -> Sitemap:
    """The `## Example` site map, with its `directory.csv`, written out and loaded."""
    folder = tmp_path_factory.mktemp("doc-example")
    yaml_text = fenced_blocks(doc_text, "yaml")[0]
    csv_text = next(b for b in fenced_blocks(doc_text, "text") if b.startswith("address,site"))
    (folder / "sitemap.yaml").write_text(yaml_text, encoding="utf-8")
    (folder / "directory.csv").write_text(csv_text, encoding="utf-8")
    return load_sitemap(folder / "sitemap.yaml")


def test_the_documented_example_loads(example: Sitemap) -> None:
    assert [site.name for site in example.sites] == ["eu", "us", "apac"]
    assert example.lookup("anna@contoso.test") is not None


def test_the_locate_example_prints_the_legacy_dn_the_loader_computes(
    doc_text: str, example: Sitemap
) -> None:
    console = next(b for b in fenced_blocks(doc_text, "console") if "sitemap locate" in b)
    shown = re.search(r"^legacy DN: (.+)$", console, flags=re.M)
    assert shown is not None, "the locate example shows no legacy DN"
    ann = example.lookup("anna@contoso.test")
    assert ann is not None
    assert shown.group(1) == ann.legacy_dn


def test_the_documented_default_legacy_dn_pattern_matches_the_loader(
    doc_text: str, example: Sitemap
) -> None:
    """The mailbox table's default, filled in by hand for bob (site us, domain contoso.test)."""
    row = next(line for line in doc_text.splitlines() if line.startswith("| `legacy_dn` |"))
    pattern = re.search(r"`(/o=[^`]+)`", row)
    assert pattern is not None
    filled = (
        pattern.group(1)
        .replace("<org>", "contoso")
        .replace("<site>", "us")
        .replace("<local part>", "bob")
    )
    bob = example.lookup("bob@contoso.test")
    assert bob is not None
    assert filled == bob.legacy_dn
