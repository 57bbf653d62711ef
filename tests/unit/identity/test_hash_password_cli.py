"""`cas hash-password`: a users-file line whose hash verifies the password given."""

from __future__ import annotations

import io

import pytest
from argon2 import PasswordHasher

from cas.cli import main
from cas.identity.passwords import parse_users_file


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
        stdin: str = "") -> tuple[int, str, str]:  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main(["hash-password", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_line_parses_and_its_hash_verifies(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    status, out, _ = run(monkeypatch, capsys, "ann", "--groups", "sales, eu", stdin="s3cret pw\n")
    assert status == 0
    user = parse_users_file(out, "stdout")["ann"]
    assert user.groups == frozenset({"sales", "eu"})
    assert PasswordHasher().verify(user.hash, "s3cret pw")
    assert "s3cret" not in out


def test_the_password_may_come_from_the_environment(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEW_PW", "from-env")
    status, out, _ = run(monkeypatch, capsys, "bob", "--password-env", "NEW_PW")
    assert status == 0 and PasswordHasher().verify(
        parse_users_file(out, "-")["bob"].hash, "from-env"
    )


@pytest.mark.parametrize(
    ("argv", "stdin", "words"),
    [
        (("a:b",), "pw\n", "without ':'"),
        (("ann",), "\n", "empty"),
        (("ann", "--groups", "x:y"), "pw\n", "--groups"),
        (("ann", "--password-env", "NOT_SET_ANYWHERE_42"), "", "not set"),
    ],
)
def test_usage_errors_are_one_clear_line(monkeypatch, capsys, argv, stdin, words) -> None:  # type: ignore[no-untyped-def]
    status, out, err = run(monkeypatch, capsys, *argv, stdin=stdin)
    assert status == 2 and out == "" and words in err and "Traceback" not in err
