"""Passwords checked locally: the users file (argon2 hashes) and the site map's client users.

The users file holds one user per line, `name:hash[:group,group...]`, e.g.::

    # who may call the nodes; make lines with `cas hash-password NAME --groups a,b`
    ann:$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$...:sales,managers
    robot:$argon2id$v=19$m=65536,t=3,p=4$...

Blank lines and lines starting with `#` are ignored. Only argon2 hashes (argon2-cffi's
encoded form) are accepted. `UsersFile` reads the file when the node starts (a bad file stops
it, naming the line) and again when it changes (a bad new file is logged and the previous one
kept), so accounts are added, removed and rotated without a restart. A name that is not in the
file is checked against a dummy hash, so a refusal takes as long whether the name exists or not.
Hashing runs in a worker thread: it costs tens of milliseconds of CPU by design.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cas.errors import CasError
from cas.model.projection import Proof, Requester
from sitemap.model import ClientUser

__all__ = ["SecretUsers", "UsersFile", "UsersFileError", "hash_password", "parse_users_file"]

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
_HASHER = PasswordHasher()


class UsersFileError(CasError):
    """The users file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class FileUser:
    name: str
    hash: str
    groups: frozenset[str]


def hash_password(password: str) -> str:
    """An argon2id hash of `password` for the users file."""
    digest: str = _HASHER.hash(password)
    return digest


def parse_users_file(text: str, source: str) -> dict[str, FileUser]:
    users: dict[str, FileUser] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}: line {number}"
        name, _, rest = line.partition(":")
        digest, _, groups = rest.partition(":")
        name = name.strip()
        if not name or not name.isprintable():
            raise UsersFileError(f"{where}: expected name:hash[:groups]")
        if not digest.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
            raise UsersFileError(
                f"{where} ({name}): not an argon2 hash; make one with `cas hash-password {name}`"
            )
        try:
            _HASHER.check_needs_rehash(digest)  # parses the parameters
        except (InvalidHashError, ValueError):
            raise UsersFileError(f"{where} ({name}): the argon2 hash is malformed") from None
        if name in users:
            raise UsersFileError(f"{where}: user {name!r} appears twice")
        names = frozenset(g.strip() for g in groups.split(",") if g.strip())
        users[name] = FileUser(name, digest, names)
    return users


class UsersFile:
    """The users file at `path`, read again when it changes (checked every `check_seconds`)."""

    def __init__(
        self,
        path: str,
        *,
        on_change: Callable[[], None] = lambda: None,
        check_seconds: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.check_seconds = check_seconds
        self.clock = clock
        self._dummy = hash_password(os.urandom(16).hex())
        self._stamp = self._stat()
        self._users = self._read()
        self._checked = clock()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _read(self) -> dict[str, FileUser]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsersFileError(f"users_file {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsersFileError(f"users_file {self.path}: not UTF-8 text") from None
        return parse_users_file(text, self.path)

    def users(self) -> Mapping[str, FileUser]:
        now = self.clock()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._users = self._read()
                except UsersFileError as exc:
                    log.error("%s; keeping the users read before", exc)
                else:
                    log.info("users_file %s read again: %d users", self.path, len(self._users))
                    self.on_change()
        return self._users

    def _check(self, digest: str, password: str) -> bool:
        try:
            return bool(_HASHER.verify(digest, password))
        except (VerificationError, InvalidHashError):
            return False

    async def verify(self, username: str, password: str) -> Requester | None:
        user = self.users().get(username)
        digest = user.hash if user is not None else self._dummy
        ok = await asyncio.to_thread(self._check, digest, password)
        if not ok or user is None:
            return None
        return Requester(user.name, user.groups, Proof.PASSWORD_FILE)


class SecretUsers:
    """The client users of `auth.users`: one shared secret each, resolved when the node starts."""

    def __init__(self, users: tuple[ClientUser, ...]) -> None:
        self._secrets = {user.username: user.password.resolve().encode() for user in users}

    def __bool__(self) -> bool:
        return bool(self._secrets)

    async def verify(self, username: str, password: str) -> Requester | None:
        expected = self._secrets.get(username)
        given = password.encode()
        if expected is None or not hmac.compare_digest(expected, given):
            return None
        return Requester(username, frozenset(), Proof.SECRET)
