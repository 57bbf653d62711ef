"""Autodiscover end to end: exchangelib finds a node through real DNS SRV, then asks EWS.

The node serves verified HTTPS on loopback; a real DNS responder (dnspython) serves
`_autodiscover._tcp.<domain>` and the site's own node SRV records. exchangelib only follows
port-443 SRV records and connects with the OS resolver, so a requests adapter maps the SRV
target's host name to the node's loopback port (the URL, TLS verification and every byte
exchanged are otherwise what a client sends).
"""

from __future__ import annotations

import datetime as dt
import pathlib
import tempfile
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import requests
from lxml import etree

from cas.app import create_app
from cas.model.freebusy import BusyType, Event, EventDetails, MailboxData
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from caslab.dnsserver import DnsResponder
from sitemap.model import ClientAuth, ClientUser, DnsConfig, Mailbox, SecretRef, Site, Sitemap
from tests.support.node import ThreadedServer, make_test_ca

UTC = dt.UTC
CLIENT = ("scheduler", "pw-" + uuid.uuid4().hex[:8])
TARGETS = {"contoso.test": "ad.contoso.test", "fabrikam.test": "ad.fabrikam.test"}
T9 = dt.datetime(2024, 3, 4, 9, tzinfo=UTC)
EVENTS = {
    "alice@contoso.test": MailboxData(
        events=(Event(T9, T9 + dt.timedelta(hours=1), BusyType.BUSY, EventDetails(subject="Sync")),)
    ),
}


class LoopbackAdapter(requests.adapters.HTTPAdapter):
    """Sends requests for the SRV targets to the node's loopback port; refuses other hosts."""

    port = 0

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        parts = urlsplit(request.url)
        if parts.hostname not in TARGETS.values():
            raise requests.exceptions.ConnectionError(f"no route to {parts.hostname} in this test")
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
        return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autodiscover")
    tls = make_test_ca(tmp / "tls")
    secret = tmp / "client"
    secret.write_text(CLIENT[1])
    with DnsResponder() as dns:
        sitemap = Sitemap(
            source="test",
            sites=(
                Site("eu", srv="_cas._tcp.eu.contoso.test"),
                Site("us", nodes=("https://127.0.0.9:4443",)),
            ),
            mailboxes=(
                Mailbox(
                    "alice@contoso.test",
                    "eu",
                    aliases=("alice@fabrikam.test", "ally@contoso.test"),
                    display_name="Alice Example",
                    legacy_dn="/o=Contoso/ou=EU/cn=Recipients/cn=alice",
                ),
                Mailbox("bob@contoso.test", "us", display_name="Bob"),
            ),
            domains=("contoso.test", "fabrikam.test"),
            auth=ClientAuth(users=(ClientUser(CLIENT[0], SecretRef(file=str(secret))),)),
            dns=DnsConfig(nameservers=("127.0.0.1",), port=dns.port, timeout_seconds=1.0),
        )
        app = create_app(
            load_settings({}, environ={}), sitemap, "eu", backends={"modern": FakeBackend(EVENTS)}
        )
        with ThreadedServer(app, tls) as node:
            # exchangelib remembers the URLs it tried across a redirect, so each domain has its
            # own Autodiscover host name, as in real deployments
            for domain, target in TARGETS.items():
                dns.set_srv(f"_autodiscover._tcp.{domain}", [(0, 0, 443, target + ".")])
                dns.set_a(target, ["127.0.0.1"])
            # the site's nodes come from DNS too, as a Kubernetes headless Service publishes them
            dns.set_srv(
                "_cas._tcp.eu.contoso.test", [(0, 0, node.port, "node-0.eu.contoso.test.")], ttl=1
            )
            dns.set_a("node-0.eu.contoso.test", ["127.0.0.1"])
            yield node, tls, dns


@pytest.fixture
def exchangelib_pointed_at(cluster, monkeypatch):
    """exchangelib with its DNS at the responder, its cache in a temp dir, the adapter mounted."""
    import exchangelib.autodiscover.cache as cache
    from exchangelib.autodiscover import Autodiscovery, clear_cache
    from exchangelib.autodiscover.protocol import AutodiscoverProtocol
    from exchangelib.protocol import close_connections

    node, tls, dns = cluster
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_pem))
    monkeypatch.setattr(
        cache, "AUTODISCOVER_PERSISTENT_STORAGE", pathlib.Path(tempfile.mkdtemp()) / "adcache"
    )
    LoopbackAdapter.port = node.port
    monkeypatch.setattr(AutodiscoverProtocol, "HTTP_ADAPTER_CLS", LoopbackAdapter)
    monkeypatch.setattr(Autodiscovery, "DNS_RESOLVER_KWARGS", {"configure": False})
    monkeypatch.setattr(
        Autodiscovery,
        "DNS_RESOLVER_ATTRS",
        {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2},
    )
    clear_cache()
    close_connections()
    yield node
    clear_cache()
    close_connections()


def test_exchangelib_discovers_the_node_through_srv_and_gets_free_busy(
    exchangelib_pointed_at,
) -> None:
    from exchangelib import DELEGATE, Account, Credentials, EWSTimeZone

    node = exchangelib_pointed_at
    account = Account(
        "alice@contoso.test",
        credentials=Credentials(*CLIENT),
        autodiscover=True,
        access_type=DELEGATE,
    )
    assert account.protocol.service_endpoint == f"https://127.0.0.1:{node.port}/EWS/Exchange.asmx"
    assert account.primary_smtp_address == "alice@contoso.test"
    start = dt.datetime(2024, 3, 4, 8, tzinfo=EWSTimeZone("UTC"))
    [view] = account.protocol.get_free_busy_info(
        [(account, "Required", False)], start, start + dt.timedelta(hours=4), 60, "DetailedMerged"
    )
    assert view.merged == "0200"
    assert [e.details.subject for e in view.calendar_events] == ["Sync"]


def test_alias_in_another_domain_is_redirected_to_the_primary_address(
    exchangelib_pointed_at,
) -> None:
    from exchangelib import DELEGATE, Account, Credentials

    account = Account(
        "alice@fabrikam.test",
        credentials=Credentials(*CLIENT),
        autodiscover=True,
        access_type=DELEGATE,
    )
    assert account.primary_smtp_address == "alice@contoso.test"


def test_unknown_address_is_reported_as_such(exchangelib_pointed_at) -> None:
    from exchangelib import DELEGATE, Account, Credentials
    from exchangelib.errors import ErrorNonExistentMailbox

    with pytest.raises(ErrorNonExistentMailbox):
        Account(
            "nobody@contoso.test",
            credentials=Credentials(*CLIENT),
            autodiscover=True,
            access_type=DELEGATE,
        )


# --- the same answers through httpx, for every front door -----------------------------------

A = "{http://schemas.microsoft.com/exchange/2010/Autodiscover}"
R = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
AD_NS = "http://schemas.microsoft.com/exchange/2010/Autodiscover"


def settings_request(
    *addresses: str, settings=("ExternalEwsUrl", "AutoDiscoverSMTPAddress", "UserDN")
) -> bytes:
    users = "".join(f"<a:User><a:Mailbox>{a}</a:Mailbox></a:User>" for a in addresses)
    names = "".join(f"<a:Setting>{s}</a:Setting>" for s in settings)
    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:a="{AD_NS}"><s:Header><a:RequestedServerVersion>Exchange2016</a:RequestedServerVersion>'
        "</s:Header><s:Body><a:GetUserSettingsRequestMessage><a:Request>"
        f"<a:Users>{users}</a:Users><a:RequestedSettings>{names}</a:RequestedSettings>"
        "</a:Request></a:GetUserSettingsRequestMessage></s:Body></s:Envelope>"
    ).encode()


def pox_request(
    address: str,
    schema: str = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a",
) -> bytes:
    return (
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>{schema}"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


@pytest.fixture
def http(cluster):
    node, tls, _ = cluster
    with httpx.Client(
        base_url=node.url, verify=str(tls.ca_pem), trust_env=False, timeout=10
    ) as client:
        yield client


def test_soap_answers_each_user_with_only_the_requested_settings(http, cluster) -> None:
    node = cluster[0]
    r = http.post(
        "/autodiscover/autodiscover.svc",
        auth=CLIENT,
        content=settings_request(
            "ALLY@contoso.test", "bob@contoso.test", "x@contoso.test", "x@elsewhere.test"
        ),
    )
    assert r.status_code == 200
    users = etree.fromstring(r.content).findall(f".//{A}UserResponse")
    codes = [u.findtext(f"{A}ErrorCode") for u in users]
    assert codes == ["NoError", "NoError", "InvalidUser", "InvalidUser"]
    alice = {
        s.findtext(f"{A}Name"): s.findtext(f"{A}Value") for s in users[0].iter(f"{A}UserSetting")
    }
    assert alice == {
        "ExternalEwsUrl": f"https://127.0.0.1:{node.port}/EWS/Exchange.asmx",
        "AutoDiscoverSMTPAddress": "alice@contoso.test",
        "UserDN": "/o=Contoso/ou=EU/cn=Recipients/cn=alice",
    }
    # bob lives in site "us": the answer names a node of HIS site, not this one
    bob = {
        s.findtext(f"{A}Name"): s.findtext(f"{A}Value") for s in users[1].iter(f"{A}UserSetting")
    }
    assert bob["ExternalEwsUrl"] == "https://127.0.0.9:4443/EWS/Exchange.asmx"


def test_soap_requires_a_login_and_refuses_garbage(http) -> None:
    r = http.post("/autodiscover/autodiscover.svc", content=settings_request("alice@contoso.test"))
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
    for body in (b"not xml", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', b"<Envelope/>"):
        r = http.post("/autodiscover/autodiscover.svc", auth=CLIENT, content=body)
        assert r.status_code == 400
        assert etree.fromstring(r.content).findtext(f".//{A}ErrorCode") == "InvalidRequest"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (pox_request("nobody@contoso.test"), "500"),
        (
            pox_request(
                "alice@contoso.test",
                schema="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006",
            ),
            "601",
        ),
        (b"<oops", "600"),
        (b'<!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/passwd">]><x>&a;</x>', "600"),
    ],
)
def test_pox_errors_use_the_protocol_codes(http, body: bytes, code: str) -> None:
    r = http.post("/autodiscover/autodiscover.xml", auth=CLIENT, content=body)
    assert r.status_code == 200 and b"root:" not in r.content
    assert etree.fromstring(r.content).findtext(".//{*}ErrorCode") == code


def test_pox_success_and_redirect(http, cluster) -> None:
    node = cluster[0]
    r = http.post(
        "/autodiscover/autodiscover.xml", auth=CLIENT, content=pox_request("alice@contoso.test")
    )
    tree = etree.fromstring(r.content)
    protocols = {p.findtext(f"{R}Type"): p for p in tree.iter(f"{R}Protocol")}
    for kind in ("EXCH", "EXPR"):
        assert (
            protocols[kind].findtext(f"{R}EwsUrl")
            == f"https://127.0.0.1:{node.port}/EWS/Exchange.asmx"
        )
        assert (
            protocols[kind].findtext(f"{R}ASUrl")
            == f"https://127.0.0.1:{node.port}/EWS/Exchange.asmx"
        )
    r = http.post(
        "/autodiscover/autodiscover.xml", auth=CLIENT, content=pox_request("alice@fabrikam.test")
    )
    tree = etree.fromstring(r.content)
    assert tree.findtext(f".//{R}Action") == "redirectAddr"
    assert tree.findtext(f".//{R}RedirectAddr") == "alice@contoso.test"


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        (
            "/autodiscover/autodiscover.json/v1.0/alice@contoso.test?Protocol=EWS",
            200,
            {"Protocol": "EWS"},
        ),
        (
            "/autodiscover/autodiscover.json/v1.0/alice@contoso.test?protocol=autodiscoverv1",
            200,
            {"Protocol": "AutodiscoverV1"},
        ),
        (
            "/autodiscover/autodiscover.json/v1.0/nobody@contoso.test?Protocol=EWS",
            404,
            {"ErrorCode": "UserNotFound"},
        ),
        (
            "/autodiscover/autodiscover.json/v1.0/no-domain?Protocol=EWS",
            400,
            {"ErrorCode": "InvalidUser"},
        ),
        (
            "/autodiscover/autodiscover.json/v1.0/alice@contoso.test?Protocol=Gopher",
            400,
            {"ErrorCode": "InvalidProtocol"},
        ),
        (
            "/autodiscover/autodiscover.json/v1.0/alice@elsewhere.test?Protocol=EWS",
            404,
            {"ErrorCode": "UserNotFound"},
        ),
    ],
)
def test_json_front_door(http, cluster, path: str, status: int, body: dict) -> None:
    r = http.get(path)
    assert r.status_code == status, r.text
    got = r.json()
    assert body.items() <= got.items()
    if status == 200 and body["Protocol"] == "EWS":
        assert got["Url"] == f"https://127.0.0.1:{cluster[0].port}/EWS/Exchange.asmx"


def test_node_choice_follows_dns(http, cluster) -> None:
    node, _, dns = cluster
    dns.set_srv("_cas._tcp.eu.contoso.test", [(0, 0, 4444, "node-9.eu.contoso.test.")], ttl=1)
    dns.set_a("node-9.eu.contoso.test", ["127.0.0.1"])
    try:
        import time

        deadline = time.monotonic() + 10
        while True:
            url = http.get(
                "/autodiscover/autodiscover.json/v1.0/alice@contoso.test?Protocol=EWS"
            ).json()["Url"]
            if url == "https://127.0.0.1:4444/EWS/Exchange.asmx" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert url == "https://127.0.0.1:4444/EWS/Exchange.asmx"
    finally:
        dns.set_srv(
            "_cas._tcp.eu.contoso.test", [(0, 0, node.port, "node-0.eu.contoso.test.")], ttl=1
        )
