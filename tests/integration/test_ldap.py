"""Identities and the mailbox directory against a real slapd seeded by the test.

Expectations are computed from the seed in tests/support/slapd.py (what was written to the
directory), never from the code under test.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from cas.app import create_app
from cas.doctor.directory import ldap_check
from cas.errors import AuthenticationUnavailable, Unauthorized
from cas.identity.authenticator import Authenticator
from cas.identity.ldap_login import LdapPasswords
from cas.model.projection import Proof, Requester
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from caslab.process import free_port
from caslab.slapd import SlapdProcess
from sitemap.directory import Group
from sitemap.ldap import LdapUnavailable
from sitemap.ldapdir import DirectoryUnavailable, LdapDirectory
from sitemap.load import parse_sitemap
from sitemap.model import LdapDirectoryConfig, LdapLogin, LdapServer, SecretRef, Site
from tests.support.slapd import (
    GROUPS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Person,
    seed_directory,
)

SITES = (Site("eu", timezone="Europe/Amsterdam"), Site("us", timezone="America/Los_Angeles"))
DOMAINS = ("contoso.test",)
CONFIG = LdapDirectoryConfig(
    base=PEOPLE,
    site_attribute="l",
    sites={"Amsterdam": "eu", "Seattle": "us"},
    kind_attribute="employeeType",
    legacy_values=("exchange2003",),
    group_base=GROUPS,
)


@pytest.fixture
def service(slapd: SlapdProcess, tmp_path: Path) -> LdapServer:
    secret = tmp_path / "ldap-secret"
    secret.write_text(SERVICE_PASSWORD + "\n")
    return LdapServer(url=slapd.url, bind_dn=SERVICE_DN, password=SecretRef(file=str(secret)))


def login(server: LdapServer, **changes: object) -> LdapPasswords:
    return LdapPasswords(server, LdapLogin(user_base=PEOPLE, **changes))  # type: ignore[arg-type]


# --- the LDAP login ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["member_of", "search"])
async def test_a_bind_names_the_user_by_mail_with_the_groups(
    service: LdapServer, ldap_people: dict[str, Person], mode: str
) -> None:
    ann = ldap_people["ann"]
    check = login(service, groups=mode, group_base=GROUPS)
    for name in ("ann", "ann@contoso.test"):  # uid or mail, as the default filter allows
        requester = await check.verify(name, ann.password)
        assert requester == Requester(ann.mail, frozenset(ann.groups), Proof.LDAP)


async def test_wrong_passwords_unknown_names_and_filter_tricks_are_refused(
    service: LdapServer, ldap_people: dict[str, Person]
) -> None:
    check = login(service)
    assert await check.verify("ann", "not-her-password") is None
    assert await check.verify("nobody", "whatever") is None
    for trick in ("*", "ann)(uid=*", "a*", "*)(|(uid=*"):
        assert await check.verify(trick, ldap_people["ann"].password) is None
    assert await check.verify("ann", "") is None  # an empty password is never an anonymous bind


async def test_groups_none_reads_no_groups(
    service: LdapServer, ldap_people: dict[str, Person]
) -> None:
    requester = await login(service, groups="none").verify("bob", ldap_people["bob"].password)
    assert requester is not None and requester.groups == frozenset()


async def test_an_unreachable_directory_is_unavailable_not_a_refusal(tmp_path: Path) -> None:
    closed = LdapServer(url=f"ldap://127.0.0.1:{free_port()}", timeout_seconds=2)
    with pytest.raises(AuthenticationUnavailable):
        await login(closed).verify("ann", "x")


async def test_a_refused_service_account_is_unavailable(
    slapd: SlapdProcess, tmp_path: Path
) -> None:
    (tmp_path / "wrong").write_text("not-the-service-password")
    server = LdapServer(
        url=slapd.url, bind_dn=SERVICE_DN, password=SecretRef(file=str(tmp_path / "wrong"))
    )
    with pytest.raises(AuthenticationUnavailable):
        await login(server).verify("ann", "x")


async def test_ldaps_and_starttls_verify_the_server_against_the_ca(
    slapd: SlapdProcess, ldap_tls: tuple[str, str, str], ldap_people: dict[str, Person]
) -> None:
    ann = ldap_people["ann"]
    for server in (
        LdapServer(url=slapd.ldaps_url, ca_file=ldap_tls[2]),
        LdapServer(url=slapd.url, start_tls=True, ca_file=ldap_tls[2]),
    ):
        assert await login(server).verify("ann", ann.password) is not None
    untrusted = LdapServer(url=slapd.ldaps_url, timeout_seconds=3)  # system CAs: not ours
    with pytest.raises(AuthenticationUnavailable):
        await login(untrusted).verify("ann", ann.password)


async def test_basic_through_the_authenticator_is_remembered(
    service: LdapServer, ldap_people: dict[str, Person], slapd: SlapdProcess
) -> None:
    from sitemap.model import ClientAuth

    auth = Authenticator(ClientAuth(ldap=LdapLogin(user_base=PEOPLE)), service)
    header = "Basic " + base64.b64encode(f"carol:{ldap_people['carol'].password}".encode()).decode()
    first = await auth.verify_header(header, "ews")
    assert first.username == "carol@contoso.test" and first.proof is Proof.LDAP
    assert await auth.verify_header(header, "ews") == first
    assert auth.memo.hits == 1
    with pytest.raises(Unauthorized):
        await auth.verify_header(header.replace("Basic ", "Basic x"), "ews")


# --- the directory -----------------------------------------------------------------------------


def expected_mailboxes(people: dict[str, Person]) -> dict[str, dict[str, object]]:
    """What the seed should give, worked out by hand from tests/support/slapd.py."""
    return {
        "ann@contoso.test": {"site": "eu", "kind": "modern", "aliases": ("anna@contoso.test",),
                             "legacy_dn": people["ann"].legacy_dn},
        "bob@contoso.test": {"site": "us", "kind": "modern", "aliases": ("robert@contoso.test",),
                             "legacy_dn": "/o=contoso/ou=us/cn=Recipients/cn=bob"},
        "carol@contoso.test": {"site": "eu", "kind": "legacy", "aliases": (),
                               "legacy_dn": "/o=contoso/ou=eu/cn=Recipients/cn=carol"},
        "gus@contoso.test": {"site": "us", "kind": "modern", "aliases": (),  # ann's taken
                             "legacy_dn": "/o=contoso/ou=us/cn=Recipients/cn=gus"},
    }  # fmt: skip


def test_the_directory_reads_mailboxes_aliases_sites_kinds_and_groups(
    service: LdapServer, ldap_people: dict[str, Person]
) -> None:
    directory = LdapDirectory(service, CONFIG, SITES, DOMAINS)
    report = directory.refresh()
    got = {
        m.address: {"site": m.site, "kind": m.kind, "aliases": m.aliases, "legacy_dn": m.legacy_dn}
        for m in directory
    }
    assert got == expected_mailboxes(ldap_people)
    assert len(report.skipped) == 2  # dave (domain), erin (site); fay has no mail: not matched
    ann = directory.lookup("ANNA@contoso.test")
    assert ann is not None and ann.address == "ann@contoso.test"
    assert ann.display_name == "Ann Andersen" and ann.timezone == "Europe/Amsterdam"
    assert directory.by_legacy_dn(ldap_people["ann"].legacy_dn or "") == ann
    assert directory.group("sales@contoso.test") == Group(
        "sales", "sales@contoso.test", ("ann@contoso.test", "bob@contoso.test")
    )
    everyone = directory.group("everyone")
    assert everyone is not None and set(everyone.members) == {
        "ann@contoso.test", "bob@contoso.test", "carol@contoso.test",
    }  # fmt: skip
    assert {g.name for g in directory.groups_of("anna@contoso.test")} == {
        "sales", "eu-staff", "everyone",
    }  # fmt: skip


def test_a_refresh_sees_changes(service: LdapServer, slapd: SlapdProcess) -> None:
    directory = LdapDirectory(service, CONFIG, SITES, DOMAINS)
    directory.refresh()
    dn = f"uid=hal,{PEOPLE}"
    admin = slapd.admin()
    try:
        assert admin.add(dn, ["inetOrgPerson"], {"uid": "hal", "cn": "Hal", "sn": "h",
                                                  "mail": "hal@contoso.test", "l": "Seattle"})  # fmt: skip
        assert directory.lookup("hal@contoso.test") is None
        directory.refresh()
        found = directory.lookup("hal@contoso.test")
        assert found is not None and found.site == "us"
    finally:
        admin.delete(dn)
        admin.unbind()
    directory.refresh()
    assert directory.lookup("hal@contoso.test") is None


def test_the_last_good_copy_stays_while_the_directory_is_down(tmp_path: Path) -> None:
    own = SlapdProcess(tmp_path / "slapd")
    own.start()
    try:
        seed_directory(own)
        (tmp_path / "pw").write_text(SERVICE_PASSWORD)
        server = LdapServer(url=own.url, bind_dn=SERVICE_DN,
                            password=SecretRef(file=str(tmp_path / "pw")), timeout_seconds=2)  # fmt: skip
        cache = tmp_path / "directory.json"
        cached = replace(CONFIG, cache_file=str(cache))
        directory = LdapDirectory(server, cached, SITES, DOMAINS)
        directory.load()
        before = list(directory)
        assert len(before) == 4 and cache.exists()
        own.stop()
        with pytest.raises(LdapUnavailable):
            directory.refresh()
        assert list(directory) == before and directory.last_error
        # a node starting now, while the directory is down, serves the cached copy
        restarted = LdapDirectory(server, cached, SITES, DOMAINS)
        restarted.load()
        assert [m.address for m in restarted] == [m.address for m in before]
        assert restarted.group("sales") == directory.group("sales")
        with pytest.raises(DirectoryUnavailable, match="cannot be read"):
            LdapDirectory(server, CONFIG, SITES, DOMAINS).load()
    finally:
        own.stop()


def test_the_refresh_thread_runs_on_its_interval(service: LdapServer, slapd: SlapdProcess) -> None:
    directory = LdapDirectory(service, replace(CONFIG, refresh_seconds=0.2), SITES, DOMAINS)
    directory.start()
    try:
        limit = time.monotonic() + 30
        while directory.last_refresh is None and time.monotonic() < limit:
            time.sleep(0.05)
        assert directory.loaded and len(directory) == 4
    finally:
        directory.stop()


# --- the node and the tools ------------------------------------------------------------------


def sitemap_text(slapd: SlapdProcess, tmp_path: Path) -> str:
    (tmp_path / "ldap-secret").write_text(SERVICE_PASSWORD)
    return f"""
domains: [contoso.test]
ldap: {{url: "{slapd.url}", bind_dn: "{SERVICE_DN}", password_file: ldap-secret}}
auth:
  ldap: {{user_base: "{PEOPLE}"}}
directory: {{source: ldap, base: "{PEOPLE}", site_attribute: l,
             sites: {{Amsterdam: eu, Seattle: us}}, group_base: "{GROUPS}",
             refresh_seconds: 3600}}
sites:
  - {{name: eu, nodes: ["https://127.0.0.1:1"]}}
  - {{name: us, nodes: ["https://127.0.0.1:2"]}}
"""


async def test_a_node_answers_from_the_ldap_directory_and_logs_in_against_it(
    slapd: SlapdProcess, tmp_path: Path, ldap_people: dict[str, Person]
) -> None:
    sitemap = parse_sitemap(sitemap_text(slapd, tmp_path), str(tmp_path / "sitemap.yaml"))
    app = create_app(
        load_settings({}, environ={}), sitemap, "eu", backends={"modern": FakeBackend({})}
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            path = "/autodiscover/autodiscover.json/v1.0/anna@contoso.test?Protocol=EWS"
            found = await client.get(path)  # anonymous by default; the alias is LDAP's
            assert found.status_code == 200, found.text
            missing = await client.get(path.replace("anna@", "nobody@"))
            assert missing.status_code == 404
            body = json.dumps({"schedules": ["ann@contoso.test"],
                               "startTime": {"dateTime": "2024-03-04T00:00:00"},
                               "endTime": {"dateTime": "2024-03-05T00:00:00"}})  # fmt: skip
            refused = await client.post("/api/v1/availability", content=body)
            assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
            answered = await client.post(
                "/api/v1/availability", content=body, auth=("ann", ldap_people["ann"].password)
            )
            assert answered.status_code == 200, answered.text
            [entry] = answered.json()["value"]
            assert entry["scheduleId"] == "ann@contoso.test" and "error" not in entry
            wrong = await client.post("/api/v1/availability", content=body, auth=("ann", "nope"))
            assert wrong.status_code == 401
    finally:
        sitemap.directory.stop()  # type: ignore[attr-defined]


async def test_doctor_binds_and_finds_each_base(slapd: SlapdProcess, tmp_path: Path) -> None:
    sitemap = parse_sitemap(sitemap_text(slapd, tmp_path), str(tmp_path / "sitemap.yaml"))
    outcome = await ldap_check(sitemap).probe()
    assert outcome.ok and SERVICE_DN in outcome.detail and "directory" in outcome.detail
    bad = sitemap_text(slapd, tmp_path).replace(
        f'base: "{PEOPLE}"', 'base: "ou=nowhere,dc=contoso,dc=test"'
    )
    outcome = await ldap_check(parse_sitemap(bad, str(tmp_path / "s.yaml"))).probe()
    assert not outcome.ok and "ou=nowhere" in outcome.detail
    (tmp_path / "ldap-secret").write_text("not-the-service-password")
    outcome = await ldap_check(sitemap).probe()  # the secret file is read at each bind
    assert not outcome.ok and "refused the service account" in outcome.detail


def test_sitemap_locate_reads_the_ldap_directory(slapd: SlapdProcess, tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "sitemap.yaml"
    path.write_text(sitemap_text(slapd, tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "sitemap", "locate", "ROBERT@contoso.test", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "address:   bob@contoso.test" in result.stdout and "site:      us" in result.stdout
    validated = subprocess.run(
        [sys.executable, "-m", "sitemap", "validate", str(path)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert validated.returncode == 0 and f"mailboxes from LDAP {slapd.url}" in validated.stdout


def test_a_directory_cut_short_by_a_size_limit_never_replaces_a_whole_one(tmp_path: Path) -> None:
    own = SlapdProcess(tmp_path / "slapd", size_limit=2)
    own.start()
    try:
        seed_directory(own)
        (tmp_path / "pw").write_text(SERVICE_PASSWORD)
        server = LdapServer(
            url=own.url, bind_dn=SERVICE_DN, password=SecretRef(file=str(tmp_path / "pw"))
        )
        directory = LdapDirectory(server, CONFIG, SITES, DOMAINS)
        with pytest.raises(DirectoryUnavailable, match="size limit"):
            directory.load()
        assert not directory.loaded and len(directory) == 0
    finally:
        own.stop()
