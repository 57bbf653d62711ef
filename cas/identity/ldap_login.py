"""HTTP Basic checked against the organisation's directory: find the entry, bind as it, read
its groups.

For a user name and password, `LdapPasswords.verify` (in a worker thread: ldap3 is
synchronous) searches `user_base` with `user_filter` as the node's service account, the name
escaped (RFC 4515) so it cannot change the filter; exactly one entry must match. It then binds
as that entry with the password (never an empty one: that would be an anonymous bind and
succeed). The groups are the entry's `memberOf` values (each named by its first RDN when that
is `group_name_attribute`, else by its DN), or the `group_name_attribute` of the entries a
search under `group_base` finds. The requester is named by the entry's `mail` when it has one
(the address its own mailbox has), else by the name given.

A refused bind, or no such user, is a refusal (`None`); a directory that cannot be asked
raises `AuthenticationUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cas.errors import AuthenticationUnavailable
from cas.model.projection import Proof, Requester
from sitemap.ldap import (
    LdapRefused,
    LdapUnavailable,
    escape_filter_chars,
    first_rdn_value,
    open_connection,
    service_connection,
)
from sitemap.model import LdapLogin, LdapServer

__all__ = ["LdapPasswords"]

log = logging.getLogger(__name__)


def _values(entry: dict[str, Any], name: str) -> list[str]:
    value = entry.get("attributes", {}).get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items if v]


class LdapPasswords:
    def __init__(self, server: LdapServer, login: LdapLogin) -> None:
        self.server = server
        self.login = login

    async def verify(self, username: str, password: str) -> Requester | None:
        try:
            return await asyncio.to_thread(self._verify, username, password)
        except LdapUnavailable as exc:
            log.warning("LDAP login of %r could not be checked: %s", username, exc)
            raise AuthenticationUnavailable(
                "The directory that checks passwords cannot be reached; try again later."
            ) from None

    def _find(self, username: str) -> dict[str, Any] | None:
        login = self.login
        wanted = ["mail"]
        if login.groups == "member_of":
            wanted.append(login.member_of_attribute)
        search_filter = login.user_filter.format(user=escape_filter_chars(username))
        connection = service_connection(self.server)
        try:
            connection.search(
                login.user_base, search_filter, attributes=wanted, size_limit=2,
                time_limit=max(1, int(self.server.timeout_seconds)),
            )  # fmt: skip
            code = (connection.result or {}).get("result")
            if code not in (0, 4, 32):  # success, size limit exceeded, no such object
                raise LdapUnavailable(f"user search failed: {connection.result.get('description')}")
            entries = [e for e in connection.response or [] if e.get("type") == "searchResEntry"]
        finally:
            connection.unbind()
        if len(entries) != 1:
            return None  # no such user, or a name that is not unique: refused either way
        entry: dict[str, Any] = entries[0]
        return entry

    def _groups(self, entry: dict[str, Any]) -> frozenset[str]:
        login = self.login
        if login.groups == "none":
            return frozenset()
        if login.groups == "member_of":
            dns = _values(entry, login.member_of_attribute)
            return frozenset(first_rdn_value(dn, login.group_name_attribute) or dn for dn in dns)
        assert login.group_base is not None
        search_filter = login.group_filter.format(dn=escape_filter_chars(entry["dn"]))
        connection = service_connection(self.server)
        try:
            connection.search(
                login.group_base, search_filter, attributes=[login.group_name_attribute]
            )
            found = [e for e in connection.response or [] if e.get("type") == "searchResEntry"]
        finally:
            connection.unbind()
        names = set()
        for group in found:
            values = _values(group, login.group_name_attribute)
            names.add(values[0] if values else group["dn"])
        return frozenset(names)

    def _verify(self, username: str, password: str) -> Requester | None:
        entry = self._find(username)
        if entry is None:
            return None
        try:
            open_connection(self.server, entry["dn"], password).unbind()
        except LdapRefused:
            return None
        mail = _values(entry, "mail")
        return Requester(mail[0] if mail else username, self._groups(entry), Proof.LDAP)
