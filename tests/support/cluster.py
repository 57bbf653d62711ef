"""A real multi-site cluster for tests: `cas serve` processes behind fault proxies.

Each site gets its own Radicale and N nodes. Every node is a real uvicorn process serving
HTTPS with a trustme certificate, and the sitemap names each node by the address of a
`FaultProxy` in front of it, so a test can delay, cut or reset one node or a whole site.
Processes are stopped by PID. Once stopped, the nodes' logs are read: a task whose exception
nobody retrieved (work a node started and abandoned) fails the fixture that stops the cluster.
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
from typing import cast

import caldav
import httpx
import yaml

from cas.identity import hash_password
from caslab.faultproxy import FaultProxy
from caslab.process import free_port
from caslab.radicale import RadicaleServer, change_hook, ensure_calendar
from tests.support.asyncio_guard import NEVER_RETRIEVED
from tests.support.node import TestCA
from tests.support.processes import STOP_GRACE, stop_processes, stop_together


@dataclass
class Node:
    site: str
    index: int
    port: int
    proxy: FaultProxy
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)  # every one, in order

    @property
    def url(self) -> str:
        """The address other nodes use: through the fault proxy."""
        return f"https://127.0.0.1:{self.proxy.port}"

    @property
    def direct_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the node; one still running from before is stopped (and reaped) first, and
        every process ever started is kept in `started`, so `Cluster.stop` can stop them all."""
        self.stop()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.started.append(self.process)

    def kill(self) -> None:
        """SIGKILL by PID (a crash: no shutdown) and reap."""
        stop_processes(self.started, grace=0, signum=signal.SIGKILL)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM by PID, SIGKILL after `grace` seconds, and reap."""
        stop_processes(self.started, grace)


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
    service: tuple[str, str] = ("cas", "")  # the nodes' read-only CalDAV account
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
        """Stop the proxies, then every node process at once (SIGTERM to all, one deadline,
        then SIGKILL), then the Radicale servers in parallel.

        The proxies go first: that resets the keep-alive TLS connections between nodes, which
        a stopping node would otherwise wait on (up to its grace period) for its peer's
        close_notify, while the peer, stopping too, waits on it.
        """
        proxies = [n.proxy for n in self.nodes()] + list(self.caldav_proxies.values())
        try:
            stop_together(p.stop for p in proxies)
        finally:
            try:
                stop_processes([p for node in self.nodes() for p in node.started], STOP_GRACE)
            finally:
                stop_together(r.stop for r in self.radicales.values())
        self.check_logs()

    def check_logs(self) -> None:
        """AssertionError naming each node log that reports an abandoned task."""
        found = [
            f"{node.log.name}: {line.strip()}"
            for node in self.nodes()
            if node.log.exists()
            for line in node.log.read_text(errors="replace").splitlines()
            if NEVER_RETRIEVED in line
        ]
        if found:
            raise AssertionError("a node abandoned tasks:\n" + "\n".join(found))


def users_file_auth(root: Path, users: Mapping[str, tuple[str, str]]) -> dict[str, object]:
    """The site map's `auth`: the cluster's client user, and a users file with `users` (name ->
    (password, comma-separated groups)) hashed with argon2, written under `root`."""
    path = root / "users.txt"
    path.write_text(
        "".join(f"{name}:{hash_password(pw)}:{groups}\n" for name, (pw, groups) in users.items())
    )
    return {
        "users": [{"username": "scheduler", "password_file": str(root / "client-password")}],
        "users_file": str(path),
    }


def start_cluster(
    root: Path,
    ca: TestCA,
    site_mailboxes: dict[str, list[str]],
    *,
    nodes_per_site: int | Mapping[str, int] = 2,
    settings: dict[str, object] | None = None,
    extra_sites: list[dict[str, object]] | None = None,
    redis_url: str | None = None,
    caldav_proxy: bool = False,
    site_fields: Mapping[str, Mapping[str, object]] | None = None,
    top_fields: Mapping[str, object] | None = None,
    extra_mailboxes: Sequence[Mapping[str, object]] = (),
    push: bool = False,
) -> Cluster:
    """Start Radicale and nodes for `site_mailboxes` ({site: [local part, ...]}).

    Mailbox addresses are `<site>-<local>@contoso.test`; each gets an empty calendar.
    `nodes_per_site` is one count for every site, or a count per site ({site: n}).
    `site_fields` adds or replaces keys of a site's sitemap entry ({site: {"redis": ...}}),
    `top_fields` top-level keys (e.g. `dns`), and `extra_mailboxes` are appended as given.
    With `push`, every site's Radicale runs a storage hook that tells the site's nodes what
    changed (`POST /api/v1/changes`, with the admin token), as `cas lab` wires it.
    When any part fails to start, what was started is stopped before the error propagates.
    """
    cluster = _new_cluster(root, ca)
    try:
        _start_backends(cluster, site_mailboxes, caldav_proxy, push)
        for site in site_mailboxes:
            cluster.sites[site] = []
            count = nodes_per_site if isinstance(nodes_per_site, int) else nodes_per_site[site]
            for index in range(count):
                port = free_port()
                proxy = FaultProxy("127.0.0.1", port).start()
                log = root / f"node-{site}-{index}.log"
                cluster.sites[site].append(Node(site, index, port, proxy, [], log))
        document = _sitemap(cluster, site_mailboxes, settings, extra_sites, redis_url)
        for entry in document["sites"]:  # type: ignore[attr-defined]
            entry.update((site_fields or {}).get(entry["name"], {}))
        document["mailboxes"] += [dict(m) for m in extra_mailboxes]  # type: ignore[operator]
        document.update(top_fields or {})
        sitemap = root / "sitemap.yaml"
        sitemap.write_text(yaml.safe_dump(document, sort_keys=False))
        if push:
            for site, nodes in cluster.sites.items():
                _write_hook(cluster, site, [n.direct_url for n in nodes])
        for node in cluster.nodes():
            node.command = [
                sys.executable, "-m", "cas", "serve", "--config", str(sitemap),
                "--site", node.site, "--host", "127.0.0.1", "--port", str(node.port),
                "--tls-cert", str(ca.cert_pem), "--tls-key", str(ca.key_pem),
            ]  # fmt: skip
            node.start()
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _new_cluster(root: Path, ca: TestCA) -> Cluster:
    """A cluster with fresh secrets written under `root`, and nothing started yet."""
    secret = secrets.token_urlsafe(32)
    (root / "cluster-secret").write_text(secret + "\n")
    client = ("scheduler", secrets.token_urlsafe(8))
    (root / "client-password").write_text(client[1])
    service = ("cas", secrets.token_urlsafe(8))
    (root / "caldav-password").write_text(service[1])
    admin_token = secrets.token_urlsafe(24)
    (root / "admin-token").write_text(admin_token)
    admin = ("admin", secrets.token_urlsafe(8))
    return Cluster(root, ca, secret, client, admin=admin, service=service, admin_token=admin_token)


def _hook_script(cluster: Cluster, site: str) -> Path:
    return cluster.root / f"push-{site}.sh"


def _write_hook(cluster: Cluster, site: str, urls: list[str]) -> None:
    """The script Radicale's hook runs: the lab's hook command, the changed path as `$1`."""
    script = _hook_script(cluster, site)
    body = change_hook(urls, cluster.ca.ca_pem, cluster.root / "admin-token", when=script)
    script.write_text("#!/bin/sh\n" + body.replace("%(path)s", '"$1"') + "\n")
    script.chmod(0o700)


def _start_backends(
    cluster: Cluster, site_mailboxes: dict[str, list[str]], caldav_proxy: bool, push: bool
) -> None:
    """One Radicale per site (behind a fault proxy if asked), and an empty calendar per mailbox."""
    admin, service = cluster.admin, cluster.service
    for site in site_mailboxes:
        script = _hook_script(cluster, site)
        radicale = RadicaleServer(
            cluster.root / f"radicale-{site}",
            {admin[0]: admin[1], service[0]: service[1]},
            admins=[admin[0]],
            readers=[service[0]],
            hook=f"[ -x {script} ] && {script} %(path)s; exit 0" if push else "",
        )
        radicale.start()
        cluster.radicales[site] = radicale
        if caldav_proxy:
            proxy = FaultProxy("127.0.0.1", int(radicale.url.rsplit(":", 1)[1]))
            cluster.caldav_proxies[site] = proxy.start()

    async def calendars() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            for site, locals_ in site_mailboxes.items():
                for local in locals_:
                    address = f"{site}-{local}@contoso.test"
                    cluster.calendars[address] = await ensure_calendar(
                        http, cluster.radicales[site].url, address, admin
                    )

    asyncio.run(calendars())


def _sitemap(
    cluster: Cluster,
    site_mailboxes: dict[str, list[str]],
    settings: dict[str, object] | None,
    extra_sites: list[dict[str, object]] | None,
    redis_url: str | None,
) -> dict[str, object]:
    root = cluster.root
    extras = [{k: v for k, v in s.items() if k != "x-mailboxes"} for s in extra_sites or []]
    return {
        "settings": {
            "cluster_secret_file": str(root / "cluster-secret"),
            "peer_ca_file": str(cluster.ca.ca_pem),
            "admin_token_file": str(root / "admin-token"),
            "shutdown_drain_seconds": 0,
            **(settings or {}),
        },
        "domains": ["contoso.test"],
        "auth": {
            "users": [
                {"username": cluster.client[0], "password_file": str(root / "client-password")}
            ]
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
                    "username": cluster.service[0],
                    "password_file": str(root / "caldav-password"),
                },
                **({"redis": redis_url} if redis_url else {}),
            }
            for site in site_mailboxes
        ]
        + extras,
        "mailboxes": [
            {"address": f"{site}-{local}@contoso.test", "site": site}
            for site, locals_ in site_mailboxes.items()
            for local in locals_
        ]
        + [
            {"address": f"{s['name']}-{local}@contoso.test", "site": str(s["name"])}
            for s in (extra_sites or [])
            for local in cast(list[str], s.get("x-mailboxes", []))
        ],
    }
