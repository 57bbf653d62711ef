"""A real multi-site cluster for tests: `cas serve` processes behind fault proxies.

Each site gets its own Radicale and N nodes. Every node is a real uvicorn process serving
HTTPS with a trustme certificate, and the sitemap names each node by the address of a
`FaultProxy` in front of it, so a test can delay, cut or reset one node or a whole site.
Processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import caldav
import httpx
import yaml

from cas.lab.faultproxy import FaultProxy
from cas.lab.process import free_port
from cas.lab.radicale import RadicaleServer, ensure_calendar
from tests.support.node import TestCA


@dataclass
class Node:
    site: str
    index: int
    port: int
    proxy: FaultProxy
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The address other nodes use: through the fault proxy."""
        return f"https://127.0.0.1:{self.proxy.port}"

    @property
    def direct_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    root: Path
    ca: TestCA
    secret: str
    client: tuple[str, str]
    sites: dict[str, list[Node]] = field(default_factory=dict)
    radicales: dict[str, RadicaleServer] = field(default_factory=dict)
    caldav_proxies: dict[str, FaultProxy] = field(default_factory=dict)  # site -> proxy
    calendars: dict[str, str] = field(default_factory=dict)  # address -> calendar URL
    admin: tuple[str, str] = ("admin", "")
    admin_token: str = ""

    def nodes(self) -> list[Node]:
        return [n for nodes in self.sites.values() for n in nodes]

    def wait_ready(self, nodes: list[Node] | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=str(self.ca.ca_pem), trust_env=False, timeout=2) as client:
            for node in nodes or self.nodes():
                while True:
                    assert node.process is not None
                    if node.process.poll() is not None:
                        raise RuntimeError(f"node exited:\n{node.log.read_text()[-3000:]}")
                    try:
                        if client.get(node.direct_url + "/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"node {node.direct_url} not ready:\n{node.log.read_text()[-3000:]}"
                        )
                    time.sleep(0.1)

    def write_events(self, address: str, components: list[str]) -> None:
        client = caldav.DAVClient(
            url=self.radicales[address.split("@")[0].split("-")[0]].url,
            username=self.admin[0],
            password=self.admin[1],
        )
        calendar = client.calendar(url=self.calendars[address])
        for component in components:
            calendar.add_event(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\n"
                + component.strip().replace("\n", "\r\n")
                + "\r\nEND:VCALENDAR\r\n"
            )

    def stop(self) -> None:
        for node in self.nodes():
            node.stop()
            node.proxy.stop()
        for proxy in self.caldav_proxies.values():
            proxy.stop()
        for radicale in self.radicales.values():
            radicale.stop()


def start_cluster(
    root: Path,
    ca: TestCA,
    site_mailboxes: dict[str, list[str]],
    *,
    nodes_per_site: int = 2,
    settings: dict[str, object] | None = None,
    extra_sites: list[dict[str, object]] | None = None,
    redis_url: str | None = None,
    caldav_proxy: bool = False,
    site_fields: Mapping[str, Mapping[str, object]] | None = None,
    top_fields: Mapping[str, object] | None = None,
    extra_mailboxes: Sequence[Mapping[str, object]] = (),
) -> Cluster:
    """Start Radicale and nodes for `site_mailboxes` ({site: [local part, ...]}).

    Mailbox addresses are `<site>-<local>@contoso.test`; each gets an empty calendar.
    `site_fields` adds or replaces keys of a site's sitemap entry ({site: {"redis": ...}}),
    `top_fields` top-level keys (e.g. `dns`), and `extra_mailboxes` are appended as given.
    """
    secret = secrets.token_urlsafe(32)
    (root / "cluster-secret").write_text(secret + "\n")
    client = ("scheduler", secrets.token_urlsafe(8))
    (root / "client-password").write_text(client[1])
    admin = ("admin", secrets.token_urlsafe(8))
    service = ("cas", secrets.token_urlsafe(8))
    (root / "caldav-password").write_text(service[1])
    admin_token = secrets.token_urlsafe(24)
    (root / "admin-token").write_text(admin_token)
    cluster = Cluster(root, ca, secret, client, admin=admin, admin_token=admin_token)
    for site in site_mailboxes:
        radicale = RadicaleServer(
            root / f"radicale-{site}",
            {admin[0]: admin[1], service[0]: service[1]},
            admins=[admin[0]],
            readers=[service[0]],
        )
        radicale.start()
        cluster.radicales[site] = radicale
        if caldav_proxy:
            proxy = FaultProxy("127.0.0.1", int(radicale.url.rsplit(":", 1)[1]))
            proxy.start()
            cluster.caldav_proxies[site] = proxy

    async def calendars() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            for site, locals_ in site_mailboxes.items():
                for local in locals_:
                    address = f"{site}-{local}@contoso.test"
                    cluster.calendars[address] = await ensure_calendar(
                        http, cluster.radicales[site].url, address, admin
                    )

    asyncio.run(calendars())

    for site in site_mailboxes:
        nodes = []
        for index in range(nodes_per_site):
            port = free_port()
            proxy = FaultProxy("127.0.0.1", port)
            proxy.start()
            nodes.append(Node(site, index, port, proxy, [], root / f"node-{site}-{index}.log"))
        cluster.sites[site] = nodes

    document = {
        "settings": {
            "cluster_secret_file": str(root / "cluster-secret"),
            "peer_ca_file": str(ca.ca_pem),
            "admin_token_file": str(root / "admin-token"),
            "shutdown_drain_seconds": 0,
            **(settings or {}),
        },
        "domains": ["contoso.test"],
        "auth": {
            "users": [{"username": client[0], "password_file": str(root / "client-password")}]
        },
        "sites": [
            {
                "name": site,
                "timezone": "UTC",
                "nodes": [n.url for n in cluster.sites[site]],
                "caldav": {
                    "url": (
                        f"http://127.0.0.1:{cluster.caldav_proxies[site].port}/"
                        if site in cluster.caldav_proxies
                        else cluster.radicales[site].url + "/"
                    ),
                    "username": service[0],
                    "password_file": str(root / "caldav-password"),
                },
                **({"redis": redis_url} if redis_url else {}),
                **(site_fields or {}).get(site, {}),
            }
            for site in site_mailboxes
        ]
        + list(extra_sites or []),
        "mailboxes": [
            {"address": f"{site}-{local}@contoso.test", "site": site}
            for site, locals_ in site_mailboxes.items()
            for local in locals_
        ]
        + [
            {"address": f"{s['name']}-{local}@contoso.test", "site": s["name"]}
            for s in (extra_sites or [])
            for local in s.get("x-mailboxes", [])  # type: ignore[union-attr]
        ]
        + [dict(m) for m in extra_mailboxes],
        **(top_fields or {}),
    }
    for extra in document["sites"]:
        extra.pop("x-mailboxes", None)  # type: ignore[union-attr]
    sitemap = root / "sitemap.yaml"
    sitemap.write_text(yaml.safe_dump(document, sort_keys=False))
    for node in cluster.nodes():
        node.command = [
            sys.executable, "-m", "cas", "serve", "--config", str(sitemap), "--site", node.site,
            "--host", "127.0.0.1", "--port", str(node.port),
            "--tls-cert", str(ca.cert_pem), "--tls-key", str(ca.key_pem),
        ]  # fmt: skip
        node.start()
    cluster.wait_ready()
    return cluster
