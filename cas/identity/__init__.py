"""Identities: who is asking, proven by a password (site map secret, users file, LDAP bind) or
a bearer token (JWT), remembered briefly once verified. See `authenticator`."""

from __future__ import annotations

from cas.identity.authenticator import (
    Authenticator,
    IdentityConfigError,
    build_authenticator,
)
from cas.identity.passwords import hash_password

__all__ = ["Authenticator", "IdentityConfigError", "build_authenticator", "hash_password"]
