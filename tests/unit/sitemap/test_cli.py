"""The `sitemap` command: `validate` prints a summary or every problem, with the exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sitemap.cli import build_parser, main

DATA = Path(__file__).resolve().parents[2] / "data" / "sitemaps"
ROOT = Path(__file__).resolve().parents[3]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():  # another checkout layout: the running interpreter
    PYTHON = sys.executable


def test_validate_a_good_file_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DATA / "valid.yaml")
    assert main(["validate", path]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok (3 sites, 6 mailboxes)\n" and err == ""


def test_validate_a_bad_file_prints_each_problem_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(DATA / "bad_url.yaml")
    assert main(["validate", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}: sites[1] (us): caldav.url: not an http(s) URL: 'ftp://x'\n"


def test_validate_reports_all_problems_of_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DATA / "many_problems.yaml")
    assert main(["validate", path]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 18
    assert f"{path}: sites[0] (eu): timezone: unknown time zone 'Mars/Olympus'" in "\n".join(lines)
    assert f"{path}: mailboxes[3] (carol@fabrikam.test): colour: unknown field 'colour'" in lines


def test_validate_names_the_csv_file_for_directory_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", str(DATA / "bad_csv.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{DATA / 'bad_directory.csv'}: line 2 (bob@contoso.test): kind: " in err


def test_validate_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "no/such/sitemap.yaml"]) == 1
    assert capsys.readouterr().err.startswith("no/such/sitemap.yaml: cannot read")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["validate"]) == 2
    assert main(["frobnicate"]) == 2
    assert "usage: sitemap" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "validate" in capsys.readouterr().out


def test_subcommands_are_listed_in_the_parser() -> None:
    help_text = build_parser().format_help()
    assert "validate" in help_text


@pytest.mark.parametrize("module", ["sitemap", "sitemap.cli"])
def test_run_as_a_module(module: str) -> None:
    good = subprocess.run(
        [PYTHON, "-m", module, "validate", str(DATA / "minimal.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (good.returncode, good.stdout) == (
        0,
        f"{DATA / 'minimal.yaml'}: ok (1 sites, 0 mailboxes)\n",
    )
    bad = subprocess.run(
        [PYTHON, "-m", module, "validate", "tests/data/sitemaps/syntax_error.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr == (
        "tests/data/sitemaps/syntax_error.yaml: line 4, column 10: YAML syntax error: expected ',' "
        "or ']', but got ':' (while parsing a flow sequence at line 3, column 12)\n"
    )


def test_no_broken_fixture_gives_a_traceback() -> None:
    for path in sorted(DATA.glob("*.yaml")):
        run = subprocess.run(
            [PYTHON, "-m", "sitemap", "validate", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in run.stderr, path
        valid = path.name in ("valid.yaml", "minimal.yaml", "multisite.yaml")
        assert run.returncode == (0 if valid else 1), path
