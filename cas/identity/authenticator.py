"""Who is asking: one object every front door asks, built from the site map's `auth` section.

`await authenticator.authenticate(request, door)` answers a `Requester` or raises
`Unauthorized` (401, with `challenge()` as its `WWW-Authenticate`), or
`AuthenticationUnavailable` (503) when the directory or the issuer's keys cannot be reached.

* No `Authorization` header: an anonymous requester where the door is anonymous
  (`auth.anonymous`; by default Autodiscover JSON and health), else 401.
* `Basic`: tried against the site map's client users, then the users file, then the
  directory (LDAP bind); the first that accepts the password names the requester.
* `Bearer`: a JWT of the configured issuer.

A header that was verified is remembered `auth.cache_seconds` (`CredentialMemo`), so a warm
request costs one keyed hash. Refusals are logged with the user name, never the password or
token, and are not remembered.
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.requests import HTTPConnection

from cas.errors import CasError, Unauthorized
from cas.identity.credentials import BasicCredentials, read_authorization
from cas.identity.ldap_login import LdapPasswords
from cas.identity.memo import CredentialMemo
from cas.identity.passwords import SecretUsers, UsersFile, UsersFileError
from cas.identity.tokens import JwtVerifier
from cas.model.projection import Requester
from sitemap.model import ClientAuth, LdapServer, Sitemap

__all__ = ["Authenticator", "IdentityConfigError", "PasswordCheck", "build_authenticator"]

log = logging.getLogger(__name__)


class IdentityConfigError(CasError, ValueError):
    """The auth configuration cannot be used (a bad users file); a reload keeps the old one."""


class PasswordCheck(Protocol):
    async def verify(self, username: str, password: str) -> Requester | None: ...


class Authenticator:
    def __init__(
        self,
        auth: ClientAuth,
        ldap: LdapServer | None = None,
        *,
        jwt: JwtVerifier | None = None,
    ) -> None:
        self.auth = auth
        self.ldap = ldap
        self.memo = CredentialMemo(auth.cache_seconds)
        self.passwords: list[PasswordCheck] = []
        self.users_file: UsersFile | None = None
        users = SecretUsers(auth.users)
        if users:
            self.passwords.append(users)
        if auth.users_file is not None:
            try:
                self.users_file = UsersFile(auth.users_file, on_change=self.memo.forget_all)
            except UsersFileError as exc:
                raise IdentityConfigError(str(exc)) from None
            self.passwords.append(self.users_file)
        if auth.ldap is not None and ldap is not None:
            self.passwords.append(LdapPasswords(ldap, auth.ldap))
        self.jwt = jwt or (JwtVerifier(auth.jwt) if auth.jwt is not None else None)

    @property
    def schemes(self) -> tuple[str, ...]:
        schemes = ("Basic",) if self.passwords or self.jwt is None else ()
        return schemes + (("Bearer",) if self.jwt is not None else ())

    def challenge(self) -> dict[str, str]:
        realm = self.auth.realm
        parts = []
        if "Basic" in self.schemes:
            parts.append(f'Basic realm="{realm}", charset="UTF-8"')
        if "Bearer" in self.schemes:
            parts.append(f'Bearer realm="{realm}"')
        return {"WWW-Authenticate": ", ".join(parts)}

    async def authenticate(self, request: HTTPConnection, door: str) -> Requester:
        return await self.verify_header(request.headers.get("authorization"), door)

    async def verify_header(self, header: str | None, door: str) -> Requester:
        if header is None:
            if self.auth.is_anonymous(door):
                return Requester()
            raise Unauthorized(f"Authentication required ({' or '.join(self.schemes)}).")
        credentials = read_authorization(header)
        if isinstance(credentials, BasicCredentials):
            if not self.passwords:
                raise Unauthorized("Basic credentials are not accepted here; use Bearer.")
            if self.users_file is not None:
                # a changed file (a removed user, new groups) forgets what is remembered, even
                # when every request is answered from memory (a stat every 2 s at most)
                self.users_file.users()
            return await self.memo.single_flight(header, lambda: self._password(credentials))
        if self.jwt is None:
            raise Unauthorized("Bearer tokens are not accepted here; use Basic.")
        jwt = self.jwt
        return await self.memo.single_flight(header, lambda: jwt.verify(credentials.token))

    async def _password(self, credentials: BasicCredentials) -> tuple[Requester, float | None]:
        for check in self.passwords:
            requester = await check.verify(credentials.username, credentials.password)
            if requester is not None:
                return requester, None
        log.info("refused the password of user %r", credentials.username)
        raise Unauthorized("Invalid user name or password.")


def build_authenticator(sitemap: Sitemap, previous: Authenticator | None = None) -> Authenticator:
    """The authenticator of `sitemap`; `previous` is kept (with what it remembers) when the
    site map's `auth` and `ldap` sections did not change (and it names no plain client users,
    whose secrets a reload reads again)."""
    same = previous is not None and (previous.auth, previous.ldap) == (sitemap.auth, sitemap.ldap)
    if previous is not None and same and not sitemap.auth.users:
        return previous
    return Authenticator(sitemap.auth, sitemap.ldap)
