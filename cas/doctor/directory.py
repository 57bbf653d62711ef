"""Doctor check of the organisation's directory server (the site map's `ldap` section).

`ldap_check` binds as the node's service account (or anonymously, without one) with the
node's own settings (URL, StartTLS, CA, time limit), then asks for one entry under each base
the site map reads: the LDAP directory's `base` and `group_base`, and the LDAP login's
`user_base`. A refused bind, an unreachable server and a base that does not exist are each
said in words. ldap3 is synchronous: the check runs in a worker thread.
"""

from __future__ import annotations

import asyncio

from cas.doctor.run import Check, Outcome, failed, passed
from sitemap.ldap import LdapUnavailable, service_connection
from sitemap.ldapdir import LdapDirectory
from sitemap.model import Sitemap

__all__ = ["ldap_check"]

NO_SUCH_OBJECT = 32


def _bases(sitemap: Sitemap) -> list[tuple[str, str]]:
    bases: list[tuple[str, str]] = []
    directory = sitemap.directory
    if isinstance(directory, LdapDirectory):
        bases.append(("directory", directory.config.base))
        if directory.config.group_base:
            bases.append(("groups", directory.config.group_base))
    if sitemap.auth.ldap is not None:
        bases.append(("users", sitemap.auth.ldap.user_base))
    return bases


def _probe(sitemap: Sitemap) -> Outcome:
    server = sitemap.ldap
    assert server is not None
    who = f"as {server.bind_dn}" if server.bind_dn else "anonymously"
    try:
        connection = service_connection(server)
    except LdapUnavailable as exc:
        return failed(str(exc))
    try:
        missing = []
        for what, base in _bases(sitemap):
            connection.search(base, "(objectClass=*)", search_scope="BASE", attributes=[])
            code = (connection.result or {}).get("result")
            if code == NO_SUCH_OBJECT:
                missing.append(f"{what} base {base} does not exist")
            elif code not in (0, None):
                missing.append(f"{what} base {base}: {connection.result.get('description')}")
    finally:
        connection.unbind()
    if missing:
        return failed(f"bound {who}, but " + "; ".join(missing))
    named = ", ".join(what for what, _ in _bases(sitemap)) or "no base named"
    return passed(f"bound {who}; {named} answer")


def ldap_check(sitemap: Sitemap) -> Check:
    assert sitemap.ldap is not None

    async def probe() -> Outcome:
        return await asyncio.to_thread(_probe, sitemap)

    return Check(None, "ldap", sitemap.ldap.url, probe)
