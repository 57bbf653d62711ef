"""The `auth`, `ldap` and `directory` sections: the values a valid file gives, each problem a
broken one reports with its entry and field, and the directory the site map then reads from."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitemap.directory import StaticDirectory
from sitemap.ldapdir import LdapDirectory
from sitemap.load import Problem, SitemapError, parse_sitemap
from sitemap.model import DEFAULT_ANONYMOUS_DOORS, DOORS, LdapLogin, SecretRef

BASE = """
domains: [contoso.test]
sites: [{name: eu}, {name: us}]
"""
LDAP = """
ldap: {url: "ldaps://127.0.0.1:6360", bind_dn: "cn=cas,dc=contoso,dc=test",
       password_file: ldap-secret, ca_file: ca.pem, timeout_seconds: 3}
"""


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_sitemap(BASE + text, "/etc/cas/sitemap.yaml")


def problems(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(SitemapError) as caught:
        load(text)
    return [(p.entry, p.field, p.message) for p in caught.value.problems]


def one(text: str) -> tuple[str, str, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- auth --------------------------------------------------------------------------------------


def test_auth_defaults_keep_lookups_closed_and_discovery_and_health_open() -> None:
    auth = load("").auth
    assert not auth.anonymous and auth.anonymous_doors == DEFAULT_ANONYMOUS_DOORS
    assert auth.is_anonymous("health") and auth.is_anonymous("autodiscover_json")
    for door in ("ews", "api", "public", "autodiscover"):
        assert not auth.is_anonymous(door)
    assert auth.cache_seconds == 60 and auth.users_file is None


@pytest.mark.parametrize(
    ("written", "flag", "doors"),
    [
        ("true", True, DOORS),
        ("false", False, DEFAULT_ANONYMOUS_DOORS),
        ("[health]", False, ("health",)),
        ("[]", False, ()),
    ],
)
def test_anonymous_is_a_flag_or_a_list_of_doors(written: str, flag: bool, doors: tuple) -> None:
    auth = load(f"auth: {{anonymous: {written}}}").auth
    assert (auth.anonymous, auth.anonymous_doors) == (flag, doors)


def test_unknown_door_is_named() -> None:
    entry, field, message = one("auth: {anonymous: [health, soap]}")
    assert (entry, field) == ("auth", "anonymous[1]") and "'soap'" in message and "ews" in message


def test_users_file_is_relative_to_the_site_map_and_cache_seconds_read() -> None:
    auth = load("auth: {users_file: users.txt, cache_seconds: 5, realm: Contoso}").auth
    assert auth.users_file == "/etc/cas/users.txt"
    assert (auth.cache_seconds, auth.realm) == (5.0, "Contoso")


def test_realm_cannot_break_the_challenge_header() -> None:
    assert one('auth: {realm: "a\\"b"}')[1] == "realm"


def test_plain_client_users_still_load() -> None:
    auth = load("auth: {users: [{username: scheduler, password_env: PW}]}").auth
    assert auth.users[0].username == "scheduler" and auth.users[0].password == SecretRef(env="PW")


def test_ldap_login_needs_the_ldap_section_and_a_user_base() -> None:
    found = problems("auth: {ldap: {groups: search}}")
    fields = {f for _, f, _ in found}
    assert {"ldap", "ldap.user_base", "ldap.group_base"} <= fields


def test_ldap_login_values() -> None:
    sitemap = load(
        LDAP
        + """auth: {ldap: {user_base: "ou=people,dc=contoso,dc=test", groups: search,
                group_base: "ou=groups,dc=contoso,dc=test"}}"""
    )
    assert sitemap.ldap is not None
    assert sitemap.ldap.password == SecretRef(file="/etc/cas/ldap-secret")
    assert sitemap.ldap.ca_file == "/etc/cas/ca.pem" and sitemap.ldap.timeout_seconds == 3
    assert sitemap.auth.ldap == LdapLogin(
        user_base="ou=people,dc=contoso,dc=test",
        groups="search",
        group_base="ou=groups,dc=contoso,dc=test",
    )


@pytest.mark.parametrize(
    ("section", "field", "words"),
    [
        ('ldap: {url: "http://x"}', "url", "LDAP URL"),
        ('ldap: {url: "ldap://u:p@x"}', "url", "credentials"),
        ('ldap: {url: "ldap://x", bind_dn: "not a dn"}', "bind_dn", "DN"),
        ('ldap: {url: "ldap://x", bind_dn: "cn=a,dc=b"}', "password_env", "needs a password"),
        ('ldap: {url: "ldaps://x", start_tls: true}', "start_tls", "TLS already"),
    ],
)
def test_ldap_problems(section: str, field: str, words: str) -> None:
    entry, got, message = one(section)
    assert (entry, got) == ("ldap", field) and words in message


@pytest.mark.parametrize(
    ("login", "field", "words"),
    [
        ('user_filter: "(uid=x)"', "ldap.user_filter", "{user}"),
        ('user_filter: "(uid={name})"', "ldap.user_filter", "unknown placeholder"),
        ('user_filter: "uid={user}"', "ldap.user_filter", "parentheses"),
        ('user_filter: "((uid={user})"', "ldap.user_filter", "parentheses"),
        ("member_of_attribute: 'member of'", "ldap.member_of_attribute", "attribute"),
    ],
)
def test_ldap_login_filter_problems(login: str, field: str, words: str) -> None:
    text = LDAP + f'auth: {{ldap: {{user_base: "dc=contoso,dc=test", {login}}}}}'
    entry, got, message = one(text)
    assert (entry, got) == ("auth", field) and words in message


JWT = 'issuer: "https://id.contoso.test", audience: cas, jwks_url: "https://id.contoso.test/keys"'


def test_jwt_values_and_defaults() -> None:
    jwt = load(f"auth: {{jwt: {{{JWT}, groups_claim: roles}}}}").auth.jwt
    assert jwt is not None and jwt.algorithms == ("RS256",)
    assert (jwt.username_claim, jwt.groups_claim) == ("preferred_username", "roles")


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("algorithms: [HS256]", "jwt.algorithms[0]", "not an accepted"),
        ("algorithms: [none]", "jwt.algorithms[0]", "not an accepted"),
        ("algorithms: []", "jwt.algorithms", "at least one"),
        ('jwks_url: "http://id.contoso.test/keys"', "jwt.jwks_url", "https only"),
    ],
)
def test_jwt_problems(extra: str, field: str, words: str) -> None:
    text = (
        f"auth: {{jwt: {{{JWT.split(', jwks_url')[0] if 'jwks_url' in extra else JWT}, {extra}}}}}"
    )
    entry, got, message = one(text)
    assert (entry, got) == ("auth", field) and words in message


def test_jwks_over_plain_http_is_allowed_on_loopback_only() -> None:
    text = 'auth: {jwt: {issuer: i, audience: a, jwks_url: "http://127.0.0.1:9999/keys"}}'
    assert load(text).auth.jwt is not None


# --- directory ---------------------------------------------------------------------------------

DIRECTORY = """
directory: {source: ldap, base: "ou=people,dc=contoso,dc=test", site_attribute: l,
            sites: {Amsterdam: eu, Seattle: us}, kind_attribute: employeeType,
            legacy_values: [exchange2003], group_base: "ou=groups,dc=contoso,dc=test",
            display_name_attribute: false, refresh_seconds: 120, cache_file: dir.json}
"""


def test_directory_section_makes_an_ldap_directory() -> None:
    sitemap = load(LDAP + DIRECTORY)
    directory = sitemap.directory
    assert isinstance(directory, LdapDirectory) and sitemap.mailboxes is directory
    config = directory.config
    assert dict(config.sites) == {"Amsterdam": "eu", "Seattle": "us"}
    assert config.display_name_attribute is None and config.aliases_attribute == "proxyAddresses"
    assert config.cache_file == "/etc/cas/dir.json" and config.refresh_seconds == 120
    assert not directory.loaded and len(directory) == 0  # nothing is read by loading the file


def test_the_same_sections_give_the_same_directory_object() -> None:
    assert load(LDAP + DIRECTORY).directory is load(LDAP + DIRECTORY).directory
    other = DIRECTORY.replace("refresh_seconds: 120", "refresh_seconds: 60")
    assert load(LDAP + other).directory is not load(LDAP + DIRECTORY).directory


def test_yaml_mailboxes_stay_a_static_directory() -> None:
    sitemap = load("mailboxes: [{address: ann@contoso.test, site: eu, aliases: [a@contoso.test]}]")
    assert isinstance(sitemap.directory, StaticDirectory)
    assert sitemap.lookup(" A@CONTOSO.test ") == sitemap.mailboxes[0]


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (DIRECTORY.replace("Seattle: us", "Seattle: asia"), ("directory", "sites.Seattle"), "asia"),
        (DIRECTORY.replace("source: ldap", "source: ad"), ("directory", "source"), "ldap"),
        (DIRECTORY.replace("site_attribute: l,", ""), ("directory", "sites"), "site_attribute"),
        (
            DIRECTORY.replace("kind_attribute: employeeType,", ""),
            ("directory", "legacy_values"),
            "kind_attribute",
        ),
        (
            DIRECTORY + "mailboxes: [{address: a@contoso.test, site: eu}]",
            ("(top level)", "mailboxes"),
            "directory",
        ),
    ],
)
def test_directory_problems(text: str, where: tuple[str, str], words: str) -> None:
    found = [(e, f, m) for e, f, m in problems(LDAP + text) if (e, f) == where]
    assert found and words in found[0][2], problems(LDAP + text)


def test_directory_needs_the_ldap_server() -> None:
    assert ("directory", "source") in {(e, f) for e, f, _ in problems(DIRECTORY)}


def test_problem_reports_name_the_file() -> None:
    with pytest.raises(SitemapError) as caught:
        load('ldap: {url: "ftp://x"}')
    assert str(caught.value.problems[0]).startswith("/etc/cas/sitemap.yaml: ldap: url:")
    assert isinstance(caught.value.problems[0], Problem)
    assert Path(caught.value.problems[0].file).name == "sitemap.yaml"
