"""Client authentication: HTTP Basic against the sitemap's client users.

Secrets are resolved once, when the node starts, so a missing variable or file stops the node
with a clear message instead of failing requests later.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request

from cas.errors import Unauthorized
from cas.model.projection import Requester
from sitemap.model import ClientAuth

REALM = "CAS availability"


class BasicAuthenticator:
    def __init__(self, auth: ClientAuth) -> None:
        self.anonymous = auth.anonymous
        self._passwords = {user.username: user.password.resolve().encode() for user in auth.users}

    def authenticate(self, request: Request) -> Requester:
        header = request.headers.get("authorization")
        if header is None:
            if self.anonymous:
                return Requester(None)
            raise Unauthorized("Authentication required (HTTP Basic).")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized(f"Authentication scheme {scheme!r} is not supported; use Basic.")
        try:
            username, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed Basic credentials.") from None
        expected = self._passwords.get(username)
        if not sep or expected is None or not hmac.compare_digest(expected, password.encode()):
            raise Unauthorized("Invalid user name or password.")
        return Requester(username)

    @staticmethod
    def challenge() -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
