"""What a caller presents in its `Authorization` header, read strictly and without echoing it.

`read_authorization(header)` gives `BasicCredentials` (user name and password, RFC 7617, UTF-8)
or `BearerToken` (RFC 6750), or raises `Unauthorized` with a message that never contains the
credential. Limits keep hostile headers cheap: a header longer than `MAX_HEADER_CHARS`, a
user name or password with control characters, or a token that is not base64url JWT text is
refused before any hash, bind or signature check runs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cas.errors import Unauthorized

__all__ = [
    "MAX_HEADER_CHARS",
    "BasicCredentials",
    "BearerToken",
    "Credentials",
    "read_authorization",
]

MAX_HEADER_CHARS = 8192
MAX_NAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024

_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"BasicCredentials({self.username!r}, password=...)"


@dataclass(frozen=True, slots=True)
class BearerToken:
    token: str

    def __repr__(self) -> str:
        return "BearerToken(...)"


Credentials = BasicCredentials | BearerToken


def _printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def read_basic(token: str) -> BasicCredentials:
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("Malformed Basic credentials.") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username or not password:
        raise Unauthorized("Basic credentials need a user name and a password.")
    if len(username) > MAX_NAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
        raise Unauthorized("Basic credentials too long.")
    if not _printable(username) or not _printable(password):
        raise Unauthorized("Basic credentials hold control characters.")
    return BasicCredentials(username, password)


def read_authorization(header: str) -> Credentials:
    """The credentials in an `Authorization` header value; `Unauthorized` when unusable."""
    if len(header) > MAX_HEADER_CHARS:
        raise Unauthorized("The Authorization header is too long.")
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.casefold()
    if scheme == "basic":
        return read_basic(rest)
    if scheme == "bearer":
        token = rest.strip()
        if not _TOKEN.fullmatch(token):
            raise Unauthorized("The bearer token is not a JWT.")
        return BearerToken(token)
    shown = scheme if scheme.isascii() and scheme.isalnum() and len(scheme) <= 20 else "?"
    raise Unauthorized(f"Authentication scheme {shown!r} is not supported.")
