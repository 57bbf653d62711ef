"""Reading the `auth` and `ldap` sections of a site map: who may call the nodes, and how.

`read_auth` checks the client users of old site maps, the users file, the LDAP login and the
JWT issuer, and which front doors are anonymous; `read_ldap` checks the connection to the
organisation's directory server that the LDAP login and the LDAP directory share. Filters,
DNs and attribute names are checked for form here; whether the server accepts them is
`cas doctor`'s question.
"""

from __future__ import annotations

import ipaddress
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from sitemap._checks import Fields, Report, section
from sitemap._values import (
    Invalid,
    as_flag,
    as_positive_int,
    as_positive_number,
    as_text,
    as_url,
    describe,
    resolve_path,
)
from sitemap.model import (
    DEFAULT_ANONYMOUS_DOORS,
    DOORS,
    ClientAuth,
    ClientUser,
    JwtIssuer,
    LdapLogin,
    LdapServer,
)

AUTH_FIELDS = ("anonymous", "users", "users_file", "ldap", "jwt", "cache_seconds", "realm")
USER_FIELDS = ("username", "password_env", "password_file")
LDAP_FIELDS = (
    "url", "bind_dn", "password_env", "password_file", "start_tls", "ca_file",
    "timeout_seconds", "page_size",
)  # fmt: skip
LDAP_LOGIN_FIELDS = (
    "user_base", "user_filter", "groups", "member_of_attribute", "group_base", "group_filter",
    "group_name_attribute",
)  # fmt: skip
JWT_FIELDS = (
    "issuer", "audience", "jwks_url", "algorithms", "username_claim", "groups_claim",
    "leeway_seconds", "ca_file",
)  # fmt: skip
JWT_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
GROUP_MODES = ("member_of", "search", "none")

_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|\d+(\.\d+)+")


def as_dn(value: Any) -> str:
    """A distinguished name, e.g. `ou=people,dc=contoso,dc=test`."""
    dn = as_text(value)
    try:
        parse_dn(dn)
    except (LDAPInvalidDnError, IndexError, ValueError):
        raise Invalid(f"not an LDAP DN (e.g. ou=people,dc=example,dc=com): {dn!r}") from None
    return dn


def as_attribute(value: Any) -> str:
    name = as_text(value)
    if not _ATTRIBUTE.fullmatch(name):
        raise Invalid(f"not an LDAP attribute name: {name!r}")
    return name


def ldap_filter(*placeholders: str) -> Any:
    """A converter of LDAP search filters that may use only `placeholders` ({user}, {dn})."""

    def convert(value: Any) -> str:
        text = as_text(value).strip()
        depth = 0
        for char in text:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth < 0:
                break
        if not (text.startswith("(") and text.endswith(")")) or depth != 0:
            raise Invalid(f"not an LDAP filter in parentheses, e.g. (mail=*): {text!r}")
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
        except ValueError as exc:
            raise Invalid(f"bad filter {text!r}: {exc}") from None
        for name in names:
            if name not in placeholders:
                allowed = ", ".join(f"{{{p}}}" for p in placeholders) or "none"
                raise Invalid(f"unknown placeholder {{{name}}} in {text!r} (allowed: {allowed})")
        for needed in placeholders:
            if needed not in names:
                raise Invalid(f"the filter must use {{{needed}}}: {text!r}")
        return text

    return convert


def as_ldap_url(value: Any) -> str:
    link = as_text(value).strip()
    try:
        parts = urlsplit(link)
        _ = parts.port
    except ValueError:
        raise Invalid(f"not an LDAP URL (ldap:// or ldaps://): {link!r}") from None
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise Invalid(f"not an LDAP URL (ldap:// or ldaps://): {link!r}")
    if parts.username is not None or parts.password is not None:
        raise Invalid("credentials go in bind_dn and password_env/password_file, not the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise Invalid(f"an LDAP server URL has no path or query: {link!r}")
    return link


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def as_key_url(value: Any) -> str:
    """An https URL (http only on loopback, for tests and sidecars)."""
    link = as_url(value, base=False)
    parts = urlsplit(link)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        raise Invalid(f"keys are fetched over https only (http on loopback): {link!r}")
    return link


def _anonymous(fields: Fields) -> tuple[bool, tuple[str, ...]]:
    value = fields.data.get("anonymous")
    if value is None or value is False:
        return False, DEFAULT_ANONYMOUS_DOORS
    if value is True:
        return True, DOORS
    if not isinstance(value, list):
        fields.problem(
            "anonymous", f"expected true, false or a list of doors, got {describe(value)}"
        )
        return False, DEFAULT_ANONYMOUS_DOORS
    doors: list[str] = []
    for index, item in enumerate(value):
        if item not in DOORS:
            fields.problem(
                f"anonymous[{index}]", f"not a door: {item!r} (doors: {', '.join(DOORS)})"
            )
        elif item not in doors:
            doors.append(item)
    return False, tuple(doors)


def _users(report: Report, fields: Fields, base_dir: Path) -> list[ClientUser]:
    users: list[ClientUser] = []
    first: dict[str, int] = {}
    for index, item in fields.items("users", lambda item: item):
        if not isinstance(item, dict):
            fields.problem(f"users[{index}]", f"expected a mapping, got {describe(item)}")
            continue
        user = Fields(report, "auth", item, USER_FIELDS, prefix=f"users[{index}].")
        name = user.get("username", as_text, required=True)
        if name is not None and ":" in name:
            user.problem("username", f"a user name cannot contain ':': {name!r}")
        secret = user.secret(base_dir, required=True)
        if name is None:
            continue
        if name in first:
            fields.problem(
                f"users[{index}].username", f"duplicate user {name!r} (also users[{first[name]}])"
            )
        first.setdefault(name, index)
        if secret is not None:
            users.append(ClientUser(username=name, password=secret))
    return users


def _ldap_login(fields: Fields, has_server: bool) -> LdapLogin | None:
    sub = fields.sub("ldap", LDAP_LOGIN_FIELDS)
    if sub is None:
        return None
    if not has_server:
        fields.problem("ldap", "needs the top-level ldap section (the directory server)")
    base = sub.get("user_base", as_dn, required=True)
    mode = sub.get("groups", as_text) or "member_of"
    if mode not in GROUP_MODES:
        sub.problem("groups", f"expected one of {', '.join(GROUP_MODES)}, got {mode!r}")
    group_base = sub.get("group_base", as_dn)
    if mode == "search" and group_base is None:
        sub.problem("group_base", "required when groups is search")
    values = {
        "user_filter": sub.get("user_filter", ldap_filter("user")),
        "member_of_attribute": sub.get("member_of_attribute", as_attribute),
        "group_filter": sub.get("group_filter", ldap_filter("dn")),
        "group_name_attribute": sub.get("group_name_attribute", as_attribute),
    }
    if base is None or mode not in GROUP_MODES:
        return None
    given = {k: v for k, v in values.items() if v is not None}
    return LdapLogin(user_base=base, groups=mode, group_base=group_base, **given)  # type: ignore[arg-type]


def _algorithm(value: Any) -> str:
    name = as_text(value)
    if name not in JWT_ALGORITHMS:
        raise Invalid(
            f"not an accepted signature algorithm: {name!r} ({', '.join(JWT_ALGORITHMS)})"
        )
    return name


def _non_negative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise Invalid(f"expected a number of seconds, 0 or more, got {describe(value)}")
    return float(value)


def _jwt(fields: Fields, base_dir: Path) -> JwtIssuer | None:
    sub = fields.sub("jwt", JWT_FIELDS)
    if sub is None:
        return None
    issuer = sub.get("issuer", as_text, required=True)
    audience = sub.get("audience", as_text, required=True)
    jwks_url = sub.get("jwks_url", as_key_url, required=True)
    algorithms = tuple(a for _, a in sub.items("algorithms", _algorithm))
    if sub.data.get("algorithms") == []:
        sub.problem("algorithms", "list at least one algorithm")
    ca_file = sub.get("ca_file", as_text)
    values = {
        "username_claim": sub.get("username_claim", as_text),
        "groups_claim": sub.get("groups_claim", as_text),
        "leeway_seconds": sub.get("leeway_seconds", _non_negative),
        "algorithms": algorithms or None,
        "ca_file": resolve_path(ca_file, base_dir) if ca_file else None,
    }
    if issuer is None or audience is None or jwks_url is None:
        return None
    given = {k: v for k, v in values.items() if v is not None}
    return JwtIssuer(issuer=issuer, audience=audience, jwks_url=jwks_url, **given)  # type: ignore[arg-type]


def read_auth(report: Report, top: Fields, base_dir: Path, *, has_ldap: bool) -> ClientAuth:
    value = top.data.get("auth")
    if value is None:
        return ClientAuth()
    if not isinstance(value, dict):
        top.problem("auth", f"expected a mapping, got {describe(value)}")
        return ClientAuth()
    fields = Fields(report, "auth", value, AUTH_FIELDS)
    anonymous, doors = _anonymous(fields)
    users = _users(report, fields, base_dir)
    users_file = fields.get("users_file", as_text)
    cache_seconds = fields.get("cache_seconds", _non_negative)
    realm = fields.get("realm", as_text)
    if realm is not None and ('"' in realm or "\\" in realm or not realm.isprintable()):
        fields.problem(
            "realm", f"a realm cannot hold quotes, backslashes or control characters: {realm!r}"
        )
        realm = None
    return ClientAuth(
        users=tuple(users),
        anonymous=anonymous,
        anonymous_doors=doors,
        users_file=resolve_path(users_file, base_dir) if users_file else None,
        ldap=_ldap_login(fields, has_ldap),
        jwt=_jwt(fields, base_dir),
        cache_seconds=60.0 if cache_seconds is None else cache_seconds,
        realm=realm or "CAS availability",
    )


def read_ldap(report: Report, top: Fields, base_dir: Path) -> LdapServer | None:
    fields = section(report, top, "ldap", LDAP_FIELDS)
    if fields is None:
        return None
    url = fields.get("url", as_ldap_url, required=True)
    bind_dn = fields.get("bind_dn", as_dn)
    password = fields.secret(base_dir, required=False)
    if bind_dn is not None and password is None:
        fields.problem("password_env", "bind_dn needs a password (password_env or password_file)")
    if password is not None and bind_dn is None:
        fields.problem("bind_dn", "a password was given without bind_dn")
    start_tls = fields.get("start_tls", as_flag) or False
    if start_tls and url is not None and url.startswith("ldaps:"):
        fields.problem("start_tls", "ldaps:// is TLS already; start_tls is for ldap://")
    ca_file = fields.get("ca_file", as_text)
    timeout = fields.get("timeout_seconds", as_positive_number)
    page_size = fields.get("page_size", as_positive_int)
    if url is None:
        return None
    return LdapServer(
        url=url,
        bind_dn=bind_dn,
        password=password,
        start_tls=start_tls,
        ca_file=resolve_path(ca_file, base_dir) if ca_file else None,
        timeout_seconds=timeout or 5.0,
        page_size=page_size or 500,
    )
