"""The users file: its format, its errors by line, argon2 checks, and reading it again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from cas.identity.passwords import (
    SecretUsers,
    UsersFile,
    UsersFileError,
    hash_password,
    parse_users_file,
)
from cas.model.projection import Proof, Requester
from sitemap.model import ClientUser, SecretRef

# cheap parameters: these tests check the format and the flow, not argon2's strength
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ANN_HASH = FAST.hash("ann-pw")
BOB_HASH = FAST.hash("bob-pw")


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stamp = path.stat().st_mtime_ns + 1_000_000_000  # a visible change even within one tick
    os.utime(path, ns=(stamp, stamp))


def test_lines_give_users_with_groups() -> None:
    users = parse_users_file(
        f"# comment\n\nann:{ANN_HASH}:sales, managers\nbob:{BOB_HASH}\n", "users.txt"
    )
    assert users["ann"].groups == frozenset({"sales", "managers"})
    assert users["bob"].groups == frozenset()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ann:plaintext\n", "line 1 (ann): not an argon2 hash"),
        ("\n:$argon2id$x\n", "line 2: expected name:hash"),
        ("ann:$argon2id$v=19$garbage\n", "line 1 (ann): the argon2 hash is malformed"),
        (f"ann:{ANN_HASH}\nann:{BOB_HASH}\n", "line 2: user 'ann' appears twice"),
    ],
)
def test_bad_lines_are_named(text: str, words: str) -> None:
    with pytest.raises(UsersFileError) as caught:
        parse_users_file(text, "users.txt")
    assert str(caught.value) == f"users.txt: {words}" or words in str(caught.value)
    assert ANN_HASH not in str(caught.value)


def test_hash_password_makes_argon2id_that_verifies() -> None:
    digest = hash_password("pw")
    assert digest.startswith("$argon2id$") and PasswordHasher().verify(digest, "pw")


async def test_verify_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    write(path, f"ann:{ANN_HASH}:sales\n")
    users = UsersFile(str(path))
    assert await users.verify("ann", "ann-pw") == Requester(
        "ann", frozenset({"sales"}), Proof.PASSWORD_FILE
    )
    assert await users.verify("ann", "wrong") is None
    assert await users.verify("nobody", "ann-pw") is None


async def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    write(path, f"ann:{ANN_HASH}\n")
    now = [0.0]
    changes = []
    users = UsersFile(str(path), clock=lambda: now[0], on_change=lambda: changes.append(1))
    write(path, f"bob:{BOB_HASH}\n")
    assert await users.verify("bob", "bob-pw") is None  # not checked again yet
    now[0] = 5
    assert await users.verify("bob", "bob-pw") is not None
    assert await users.verify("ann", "ann-pw") is None  # removed: refused at once
    assert changes == [1]


async def test_a_broken_new_file_keeps_the_users_read_before(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "users.txt"
    write(path, f"ann:{ANN_HASH}\n")
    now = [0.0]
    users = UsersFile(str(path), clock=lambda: now[0])
    write(path, "ann:plaintext-password\n")
    now[0] = 5
    assert await users.verify("ann", "ann-pw") is not None
    assert "keeping the users read before" in caplog.text
    assert "plaintext-password" not in caplog.text


def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="users_file .*missing"):
        UsersFile(str(tmp_path / "missing"))


async def test_plain_secret_users_of_old_site_maps(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    users = SecretUsers((ClientUser("scheduler", SecretRef(file=str(tmp_path / "pw"))),))
    assert await users.verify("scheduler", "s3cret") == Requester(
        "scheduler", frozenset(), Proof.SECRET
    )
    assert await users.verify("scheduler", "s3cre") is None
    assert await users.verify("other", "s3cret") is None
