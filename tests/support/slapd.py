"""Pytest fixtures around a real OpenLDAP slapd (`caslab.slapd.SlapdProcess`).

* `slapd` (session): one slapd on free loopback ports (ldap:// with StartTLS, and ldaps://,
  with a trustme certificate), seeded with `seed_directory`: people with mail, aliases
  (`proxyAddresses`), a site (`l`), a kind (`employeeType`) and legacy DNs; groups, one nested;
  a service account; and entries that cannot be mailboxes. Skips only when slapd is missing.
* `ldap_people`: the seeded people, {uid: Person}, to compute expectations from.

The seed is data written here, independent of the code that reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import trustme

from caslab.slapd import SlapdProcess, find_slapd, ssha

SUFFIX = "dc=contoso,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SERVICE_DN = f"cn=cas,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-account-secret"


@dataclass(frozen=True)
class Person:
    uid: str
    password: str
    mail: str | None
    city: str | None  # `l`: the site attribute
    aliases: tuple[str, ...] = ()  # proxyAddresses values as written
    legacy_dn: str | None = None
    kind: str | None = None  # employeeType
    name: str = ""
    groups: tuple[str, ...] = field(default=())

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE}"


SEED_PEOPLE = (
    Person(
        "ann", "ann-pass-1", "ann@contoso.test", "Amsterdam",
        ("SMTP:ann@contoso.test", "smtp:anna@contoso.test", "X500:/o=old/cn=ann", "SIP:ann@contoso.test"),
        "/o=Contoso/ou=Exchange Administrative Group/cn=Recipients/cn=ann", None, "Ann Andersen",
        ("sales", "eu-staff"),
    ),
    Person("bob", "bob-pass-2", "bob@contoso.test", "Seattle", ("smtp:robert@contoso.test",),
           None, None, "Bob Brown", ("sales",)),
    Person("carol", "carol-pass-3", "carol@contoso.test", "Amsterdam", (), None,
           "exchange2003", "Carol Clark", ("eu-staff",)),
    Person("dave", "dave-pass-4", "dave@fabrikam.example", "Amsterdam", name="Dave (other domain)"),
    Person("erin", "erin-pass-5", "erin@contoso.test", "Atlantis", name="Erin (no such site)"),
    Person("fay", "fay-pass-6", None, "Seattle", name="Fay (no mail)"),
    Person("gus", "gus-pass-7", "gus@contoso.test", "Seattle", ("smtp:ann@contoso.test",),
           name="Gus (claims ann's address as an alias)"),
)  # fmt: skip
SEED_GROUPS = {  # name -> (mail, member DNs)
    "sales": ("sales@contoso.test", [p.dn for p in SEED_PEOPLE if "sales" in p.groups]),
    "eu-staff": (None, [p.dn for p in SEED_PEOPLE if "eu-staff" in p.groups]),
    "everyone": ("all@contoso.test", [f"cn=sales,{GROUPS}", f"cn=eu-staff,{GROUPS}"]),
}


def seed_directory(server: SlapdProcess) -> None:
    admin = server.admin()
    try:
        adds = [
            (SUFFIX, ["dcObject", "organization"], {"o": "Contoso", "dc": "contoso"}),
            (PEOPLE, ["organizationalUnit"], {"ou": "people"}),
            (GROUPS, ["organizationalUnit"], {"ou": "groups"}),
            (f"ou=services,{SUFFIX}", ["organizationalUnit"], {"ou": "services"}),
            (SERVICE_DN, ["organizationalRole", "simpleSecurityObject"],
             {"cn": "cas", "userPassword": ssha(SERVICE_PASSWORD)}),
        ]  # fmt: skip
        for person in SEED_PEOPLE:
            attributes: dict[str, object] = {
                "uid": person.uid, "cn": person.name or person.uid, "sn": person.uid,
                "userPassword": ssha(person.password), "displayName": person.name,
            }  # fmt: skip
            for key, value in (("mail", person.mail), ("l", person.city),
                               ("legacyExchangeDN", person.legacy_dn),
                               ("employeeType", person.kind)):  # fmt: skip
                if value:
                    attributes[key] = value
            if person.aliases:
                attributes["proxyAddresses"] = list(person.aliases)
            adds.append((person.dn, ["inetOrgPerson", "casMailRecipient"], attributes))
        for name, (mail, members) in SEED_GROUPS.items():
            attributes = {"cn": name, "member": members}
            if mail:
                attributes["mail"] = mail
            classes = ["groupOfNames", "extensibleObject"] if mail else ["groupOfNames"]
            adds.append((f"cn={name},{GROUPS}", classes, attributes))
        for dn, classes, attributes in adds:
            if not admin.add(dn, classes, attributes):
                raise RuntimeError(f"seeding {dn} failed: {admin.result}")
    finally:
        admin.unbind()


@pytest.fixture(scope="session")
def ldap_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    folder = tmp_path_factory.mktemp("ldap-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = (folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(files[0]))
    cert.private_key_pem.write_to_path(str(files[1]))
    ca.cert_pem.write_to_path(str(files[2]))
    return (str(files[0]), str(files[1]), str(files[2]))


@pytest.fixture(scope="session")
def slapd(
    tmp_path_factory: pytest.TempPathFactory, ldap_tls: tuple[str, str, str]
) -> Iterator[SlapdProcess]:
    if find_slapd() is None:
        pytest.skip("slapd not found: install the Debian package slapd (scripts/setup)")
    server = SlapdProcess(tmp_path_factory.mktemp("slapd"), tls=ldap_tls)
    server.start()
    try:
        seed_directory(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ldap_people() -> dict[str, Person]:
    return {p.uid: p for p in SEED_PEOPLE}
