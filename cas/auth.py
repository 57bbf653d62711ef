"""The old home of the client authenticator, kept for the name `BasicAuthenticator`.

Authentication lives in `cas.identity` (password file, LDAP, JWT, remembered credentials).
"""

from __future__ import annotations

from cas.identity.authenticator import Authenticator
from cas.identity.authenticator import Authenticator as BasicAuthenticator

__all__ = ["Authenticator", "BasicAuthenticator"]
