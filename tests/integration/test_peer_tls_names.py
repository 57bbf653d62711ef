"""A node found through DNS SRV is verified by its DNS name, not by the address it is dialled at.

In Kubernetes a headless Service's SRV targets resolve to pod addresses that no certificate
can list; certificates name the hosts (`*.<service>.<namespace>.svc...`). Here the remote
node's certificate names only `node-0.us.contoso.test`, and the entry node reaches it through
SRV at 127.0.0.1.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trustme
from lxml import etree

from cas.app import create_app
from cas.model.freebusy import BusyType, Event, MailboxData
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from caslab.dnsserver import DnsResponder
from sitemap.model import ClientAuth, DnsConfig, Mailbox, Site, Sitemap
from tests.support.node import TestCA, ThreadedServer
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T0 = datetime(2024, 3, 4, 9, tzinfo=UTC)
NAME = "node-0.us.contoso.test"


def files(ca: trustme.CA, directory: Path, *names: str) -> TestCA:
    directory.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    paths = [directory / "ca.pem", directory / "node.pem", directory / "node.key"]
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return TestCA(ca, *paths)


def test_an_srv_peer_is_verified_by_its_name(tmp_path: Path) -> None:
    ca = trustme.CA()
    named_only = files(ca, tmp_path / "us", NAME)  # no IP in this certificate
    entry_tls = files(ca, tmp_path / "eu", "127.0.0.1")
    (tmp_path / "secret").write_text(secrets.token_urlsafe(32))
    settings = load_settings(
        {
            "cluster_secret_file": str(tmp_path / "secret"),
            "peer_ca_file": str(named_only.ca_pem),
            "remote_cache_seconds": 0,
        },
        environ={},
    )
    with DnsResponder() as dns:
        sitemap = Sitemap(
            source="test",
            sites=(
                Site("eu", nodes=("https://127.0.0.1:1",)),
                Site("us", srv="_cas._tcp.us.contoso.test"),
            ),
            mailboxes=(Mailbox("bob@contoso.test", "us"),),
            auth=ClientAuth(anonymous=True),
            dns=DnsConfig(nameservers=("127.0.0.1",), port=dns.port, timeout_seconds=1),
        )
        busy = MailboxData(events=(Event(T0, T0 + timedelta(hours=1), BusyType.BUSY),))
        us = create_app(
            settings, sitemap, "us", backends={"modern": FakeBackend({"bob@contoso.test": busy})}
        )
        eu = create_app(settings, sitemap, "eu", backends={})
        with ThreadedServer(us, named_only) as remote, ThreadedServer(eu, entry_tls) as entry:
            dns.set_srv("_cas._tcp.us.contoso.test", [(0, 0, remote.port, NAME + ".")])
            dns.set_a(NAME, ["127.0.0.1"])
            with httpx.Client(verify=str(entry_tls.ca_pem), trust_env=False, timeout=15) as client:
                r = client.post(
                    entry.url + "/EWS/Exchange.asmx",
                    content=availability(
                        ["bob@contoso.test"],
                        start="2024-03-04T08:00:00Z",
                        end="2024-03-04T12:00:00Z",
                    ),
                )
    assert r.status_code == 200
    codes = [c.text for c in etree.fromstring(r.content).iter(f"{M}ResponseCode")]
    assert codes == ["NoError"], r.text
