"""Connections to the organisation's directory server (ldap3), with its failures in two words.

`open_connection(server, dn, password)` opens, secures (ldaps:// or StartTLS, verified against
`ca_file` or the system's CAs) and binds one synchronous connection, bounded by the server's
`timeout_seconds`. ldap3's many exceptions become two:

* `LdapRefused`: the server answered and refused the bind (wrong password, unknown DN);
* `LdapUnavailable`: it could not be asked (refused connection, TLS failure, time out, busy).

Neither message ever holds a password. The LDAP login (`cas.identity`) and the LDAP directory
(`sitemap.ldapdir`) both connect through here.
"""

from __future__ import annotations

import math
import ssl

from ldap3 import NONE, SIMPLE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from sitemap.model import LdapServer, SecretUnavailable

__all__ = [
    "LdapError",
    "LdapRefused",
    "LdapUnavailable",
    "escape_filter_chars",
    "first_rdn_value",
    "open_connection",
    "service_connection",
]

INVALID_CREDENTIALS = 49


class LdapError(Exception):
    """Something went wrong with the directory server; the message says what, in words."""


class LdapRefused(LdapError):
    """The server refused the bind."""


class LdapUnavailable(LdapError):
    """The server could not be asked."""


def _server(config: LdapServer) -> Server:
    tls = None
    if config.url.startswith("ldaps:") or config.start_tls:
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=config.ca_file,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return Server(config.url, get_info=NONE, connect_timeout=config.timeout_seconds, tls=tls)


def open_connection(config: LdapServer, dn: str | None, password: str | None) -> Connection:
    """A bound connection (anonymous when `dn` is None); close it with `.unbind()`."""
    if dn is not None and not password:
        raise LdapRefused("an empty password is never sent (it would be an anonymous bind)")
    connection = Connection(
        _server(config),
        user=dn,
        password=password,
        authentication=SIMPLE if dn is not None else None,
        client_strategy=SYNC,
        read_only=True,
        receive_timeout=max(1, math.ceil(config.timeout_seconds)),  # ldap3 wants whole seconds
        raise_exceptions=False,
        auto_referrals=False,  # a referral names another server: never followed
    )
    try:
        connection.open()
        if config.start_tls and not connection.start_tls():
            raise LdapUnavailable(f"StartTLS refused by {config.url}")
        if not connection.bind():
            result = connection.result or {}
            code = result.get("result")
            if code == INVALID_CREDENTIALS:
                raise LdapRefused("invalid credentials")
            raise LdapUnavailable(
                f"bind failed at {config.url}: {result.get('description') or 'no answer'}"
            )
    except LdapError:
        connection.unbind()
        raise
    except Exception as exc:  # ldap3 raises LDAPException, OSError, ssl and struct errors
        connection.unbind()
        raise LdapUnavailable(f"{config.url}: {_words(exc)}") from None
    return connection


def service_connection(config: LdapServer) -> Connection:
    """A connection bound as the node's service account (or anonymous without one)."""
    try:
        password = config.password.resolve() if config.password is not None else None
    except SecretUnavailable as exc:
        raise LdapUnavailable(f"the service account's password is unavailable: {exc}") from None
    try:
        return open_connection(config, config.bind_dn, password)
    except LdapRefused:
        raise LdapUnavailable(
            f"{config.url} refused the service account {config.bind_dn} (invalid credentials)"
        ) from None


def _words(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "timed out" in text or "timeout" in text.lower():
        return "no answer in time"
    if "refused" in text.lower():
        return "connection refused"
    if "certificate" in text.lower() or isinstance(exc, ssl.SSLError):
        return f"TLS failed: {text[:200]}"
    return text[:200]


def first_rdn_value(dn: str, attribute: str) -> str | None:
    """The value of the DN's first RDN when it is `attribute` (`cn=sales,ou=...` -> `sales`)."""
    try:
        parts = parse_dn(dn)
    except (LDAPException, IndexError, ValueError):
        return None
    if not parts:
        return None
    name, value, _ = parts[0]
    return value if name.casefold() == attribute.casefold() else None
