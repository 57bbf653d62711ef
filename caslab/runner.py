"""`cas lab`: a whole lab on loopback with embedded defaults, and its manifest.

It makes a cluster CA and node certificates, starts one Radicale per site and seeds it with
realistic calendars, writes a sitemap for it, starts the nodes (`cas serve` subprocesses) over
HTTPS, waits until every part answers, writes the manifest (docs/lab.md: `lab.json` in the
current directory unless `--manifest` says otherwise), prints where everything is and commands
to paste (`caslab.summary`), and runs until Ctrl-C, SIGTERM or `--duration`, printing a line
for each failure a node logs (`caslab.watch`). It stops everything it started, by PID, all
parts at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from caslab.dnsserver import DnsResponder
from caslab.documents import legacy_dn, manifest_document, write_sitemap
from caslab.faultproxy import FaultProxy
from caslab.oldserver.process import LegacyServer
from caslab.process import free_port
from caslab.radicale import RadicaleServer, change_hook, ensure_calendar, put_event
from caslab.redis import RedisProcess, find_redis_server
from caslab.seed import (
    SeedMailbox,
    generate_calendar,
    generate_directory,
    generate_mailboxes,
    merge_calendars,
)
from caslab.tls import CertPair, issue_cert, make_ca
from caslab.topology import DOMAIN, LabTopology, lab_topology

LEGACY_SITES = 2  # the first two sites keep some mailboxes on the old server
LEGACY_PER_SITE = 3
SEED_DAYS_BACK = 7
SEED_DAYS = 42
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0  # for all nodes together, after SIGTERM; then SIGKILL
DEFAULT_MANIFEST = "lab.json"


@dataclass(frozen=True)
class LabOptions:
    sites: int = 3
    nodes_per_site: int = 2
    mailboxes_per_site: int = 24
    manifest: str | None = None
    state_dir: str | None = None
    duration: float | None = None
    backend_delay_ms: int = 0
    restart: bool = True  # a part that dies is started again (caslab.keeper)
    push: bool = True  # Radicale's storage hook pushes every write to the site's nodes


@dataclass
class LabSite:
    name: str
    timezone: str
    radicale: RadicaleServer
    mailboxes: list[SeedMailbox]
    legacy_mailboxes: list[SeedMailbox] = field(default_factory=list)
    node_hosts: list[str] = field(default_factory=list)
    node_ports: list[int] = field(default_factory=list)
    backend_proxy: FaultProxy | None = None
    redis: RedisProcess | None = None

    @property
    def backend_url(self) -> str:
        """Where nodes reach the CalDAV server: through the delaying proxy when there is one."""
        if self.backend_proxy is not None:
            return f"http://127.0.0.1:{self.backend_proxy.port}/"
        return self.radicale.url + "/"

    @property
    def nodes(self) -> list[str]:
        return [f"https://127.0.0.1:{port}" for port in self.node_ports]

    @property
    def srv(self) -> str:
        return f"_cas._tcp.{self.name}.{DOMAIN}"


@dataclass(frozen=True)
class NodeProcess:
    name: str  # "cas-eu-1", as the topology (and compose.yaml) names it
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    site: str = ""
    index: int = 0
    port: int = 0


class LabError(Exception):
    """A part of the lab would not start; the message says which and why."""


def _write_secret(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return path


class Lab:
    def __init__(self, options: LabOptions) -> None:
        try:
            self.topology: LabTopology = lab_topology(options.sites, options.nodes_per_site)
        except ValueError as exc:
            raise LabError(str(exc)) from None
        self.options = options
        self._temporary = options.state_dir is None
        self._wrote_manifest = False
        self.manifest_path = Path(options.manifest or DEFAULT_MANIFEST).resolve()
        self.root = Path(options.state_dir or tempfile.mkdtemp(prefix="cas-lab-")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.sites: list[LabSite] = []
        self.nodes: list[NodeProcess] = []
        self.dns = DnsResponder()
        self.legacy: LegacyServer | None = None
        self.passwords = {
            "caldav-admin": secrets.token_urlsafe(12),
            "caldav-cas": secrets.token_urlsafe(12),
            "client": secrets.token_urlsafe(12),
            "viewer": secrets.token_urlsafe(12),  # the requester who sees times only
            "cluster": secrets.token_urlsafe(32),  # signs node-to-node requests
            "admin-token": secrets.token_urlsafe(24),  # the admin API (cache invalidation)
            "change-token": secrets.token_urlsafe(24),  # the storage hooks' pushed changes
        }
        self.client_user = "scheduler"

    @property
    def temporary(self) -> bool:
        """The state folder is a temporary one, removed when the lab stops."""
        return self._temporary

    # --- start ----------------------------------------------------------------------------

    def start(self) -> dict[str, object]:
        secret_dir = self.root / "secrets"
        secret_dir.mkdir(exist_ok=True)
        for name, value in self.passwords.items():
            _write_secret(secret_dir / name, value)
        self.ca = make_ca(self.root / "tls")
        # Nodes are reached at 127.0.0.1 but found through SRV by name, and verified by that name.
        names = ["localhost", "127.0.0.1", *(node.host for node in self.topology.nodes)]
        self.node_cert: CertPair = issue_cert(self.ca, self.root / "tls", "node", names)
        names = [site.name for site in self.topology.sites]
        directory = generate_directory(names, self.options.mailboxes_per_site, DOMAIN)
        taken = {m.address for people in directory.values() for m in people}
        redis_binary = find_redis_server()
        if redis_binary is None:
            print(
                "cas lab: no redis-server found; nodes use an in-process cache (not shared)",
                file=sys.stderr,
            )
        for index, part in enumerate(self.topology.sites):
            node_ports = [free_port() for _ in range(self.options.nodes_per_site)]
            hook = ""
            if self.options.push:
                urls = [f"https://127.0.0.1:{port}" for port in node_ports]
                tokens = secret_dir / "change-token"
                hook = change_hook(urls, self.ca.cert, tokens, when=self.root / "seeded")
            server = RadicaleServer(
                self.root / part.name / "radicale",
                {"admin": self.passwords["caldav-admin"], "cas": self.passwords["caldav-cas"]},
                admins=["admin"],
                readers=["cas"],
                hook=hook,
            )
            legacy_people: list[SeedMailbox] = []
            if index < LEGACY_SITES:
                legacy_people = generate_mailboxes(
                    f"{part.name}-legacy", LEGACY_PER_SITE, DOMAIN, taken=taken
                )
                taken |= {m.address for m in legacy_people}
            site = LabSite(
                part.name, part.timezone, server, directory[part.name], legacy_people,
                [node.host for node in part.nodes],
            )  # fmt: skip
            self.sites.append(site)
            server.start()
            if redis_binary is not None:
                site.redis = RedisProcess(self.root / part.name / "redis", binary=redis_binary)
                site.redis.start()
            if self.options.backend_delay_ms > 0:
                # every node-to-CalDAV round trip pays this delay, like a distant backend
                site.backend_proxy = FaultProxy("127.0.0.1", int(urlsplit(server.url).port or 0))
                site.backend_proxy.start()
                site.backend_proxy.delay(self.options.backend_delay_ms / 1000)
            site.node_ports = node_ports
        self._start_legacy()
        asyncio.run(self._seed_all())
        (self.root / "seeded").touch()  # from now on, every write is pushed to the nodes
        self._serve_dns()
        self.sitemap_path = write_sitemap(self)
        for site in self.sites:
            for index, port in enumerate(site.node_ports):
                self.nodes.append(self._start_node(site.name, index, port))
        self._wait_for_nodes()
        manifest = manifest_document(self)
        path = self.manifest_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(path)  # appears whole, once everything answers
        self._wrote_manifest = True
        return manifest

    async def _seed_all(self) -> None:
        today = datetime.datetime.now(datetime.UTC).date()
        start = today - datetime.timedelta(days=SEED_DAYS_BACK)
        auth = ("admin", self.passwords["caldav-admin"])
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:

            async def seed(site: LabSite, mailbox: SeedMailbox, n: int) -> None:
                async with gate:
                    url = await ensure_calendar(client, site.radicale.url, mailbox.address, auth)
                    for event in generate_calendar(
                        mailbox, start=start, days=SEED_DAYS, rng_seed=n
                    ):
                        await put_event(client, url, event.uid, event.ics, auth)

            async def publish(mailbox: SeedMailbox, n: int) -> None:
                assert self.legacy is not None
                events = generate_calendar(mailbox, start=start, days=SEED_DAYS, rng_seed=1000 + n)
                begin = datetime.datetime.combine(start, datetime.time(), datetime.UTC)
                async with gate:
                    response = await client.put(
                        f"{self.legacy.public_url}publish/{mailbox.address}.ics",
                        params={
                            "publish_start": begin.isoformat(),
                            "publish_end": (begin + datetime.timedelta(days=SEED_DAYS)).isoformat(),
                            "tz": mailbox.timezone,
                        },
                        content=merge_calendars([e.ics for e in events]).encode(),
                        headers={"Content-Type": "text/calendar; charset=utf-8"},
                    )
                if response.status_code != 200:
                    raise LabError(
                        f"publishing {mailbox.address} to the legacy server: "
                        f"HTTP {response.status_code} {response.text[:200]}"
                    )

            await asyncio.gather(
                *(
                    seed(site, mailbox, n)
                    for site in self.sites
                    for n, mailbox in enumerate(site.mailboxes)
                ),
                *(
                    publish(mailbox, n)
                    for site in self.sites
                    for n, mailbox in enumerate(site.legacy_mailboxes)
                ),
            )

    def _start_legacy(self) -> None:
        """One old server for the legacy mailboxes of every site that has some."""
        people = {
            m.address: (legacy_dn(site.name, m), m.display_name)
            for site in self.sites
            for m in site.legacy_mailboxes
        }
        if not people:
            return
        self.legacy = LegacyServer(self.root / "legacy", people)
        self.legacy.start()

    def _serve_dns(self) -> None:
        """SRV for Autodiscover (any node) and for each site's nodes, A records for targets.

        Ports are the nodes' real ports: `cas lookup` follows them. (exchangelib's own SRV step
        only takes port-443 records, so point it at a node with `service_endpoint` instead.)
        """
        self.dns.start()
        every: list[tuple[int, int, int, str]] = []
        for site in self.sites:
            records = []
            for host, port in zip(site.node_hosts, site.node_ports):
                self.dns.set_a(host, ["127.0.0.1"], ttl=30)
                records.append((0, 10, port, host + "."))
            self.dns.set_srv(site.srv, records, ttl=30)
            every += records
        self.dns.set_srv(f"_autodiscover._tcp.{DOMAIN}", every, ttl=30)

    def restart_node(self, name: str) -> NodeProcess:
        """Start the node `name` again on its port (after it died); the new process."""
        old = next(node for node in self.nodes if node.name == name)
        if old.process.poll() is None:
            raise LabError(f"node {name} is still running")
        new = self._start_node(old.site, old.index, old.port)
        self.nodes[self.nodes.index(old)] = new
        return new

    def _start_node(self, site: str, index: int, port: int) -> NodeProcess:
        name = self.topology.site(site).nodes[index].name
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        command = [
            sys.executable, "-m", "cas", "serve",
            "--config", str(self.sitemap_path), "--site", site,
            "--host", "127.0.0.1", "--port", str(port),
            "--tls-cert", str(self.node_cert.cert), "--tls-key", str(self.node_cert.key),
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"https://127.0.0.1:{port}"
        return NodeProcess(name, url, process, log_path, site, index, port)

    def _wait_for_nodes(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        with httpx.Client(verify=context, trust_env=False, timeout=2) as client:
            for node in self.nodes:
                while True:
                    if node.process.poll() is not None:
                        raise LabError(
                            f"node {node.url} exited with status {node.process.returncode}:\n"
                            + node.log.read_text(errors="replace")[-2000:]
                        )
                    try:
                        if client.get(node.url + "/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise LabError(
                            f"node {node.url} did not become ready in {START_TIMEOUT:g}s"
                        )
                    time.sleep(0.1)

    # --- describe -------------------------------------------------------------------------

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every part at once: nodes first (SIGTERM, one shared deadline, then SIGKILL)."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for node in self.nodes:
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        parts: list[Callable[[], None]] = []
        for site in self.sites:
            if site.backend_proxy is not None:
                parts.append(site.backend_proxy.stop)
            parts.append(site.radicale.stop)
            if site.redis is not None:
                parts.append(site.redis.stop)
        if self.legacy is not None:
            parts.append(self.legacy.stop)
        parts.append(self.dns.stop)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(parts)) as pool:
            for future in [pool.submit(part) for part in parts]:
                future.result()
        if self._wrote_manifest and self.options.manifest is None:
            self.manifest_path.unlink(missing_ok=True)  # it describes a lab that is gone
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
