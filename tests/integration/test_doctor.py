"""`cas doctor` against a real two-site cluster, run as a user runs it (`python -m cas doctor`).

Site eu: two static nodes, a Radicale, an old server (the legacy emulator) and its own
redis-server. Site us: nodes found only through DNS SRV (a real DNS responder on loopback,
targets verified by name), a Radicale and its own redis-server. Every node is a real
`cas serve` process behind a fault proxy. The expected rows are worked out from how the
deployment was built; then a stopped Redis, a killed node, a node that never answers and a
stopped Radicale must each be reported by name, and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from caslab.dnsserver import DnsResponder
from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.process import LegacyServer
from caslab.redis import RedisProcess, find_redis_server
from tests.support.cluster import Cluster, start_cluster
from tests.support.node import make_test_ca
from tests.support.redis import MISSING

SITES = {"eu": ["a", "b"], "us": ["a"]}
SRV = "_cas._tcp.us.contoso.test"
US_NAMES = ["node-0.us.contoso.test", "node-1.us.contoso.test"]
AUTODISCOVER = "_autodiscover._tcp.contoso.test"
OLD = "eu-old@contoso.test"
OLD_DN = "/o=Contoso/ou=EU/cn=Recipients/cn=eu-old"
NODE_KINDS = ("tls", "ready", "version", "trust", "breakers")

Row = tuple[str | None, str, str]


@dataclass
class Deployment:
    cluster: Cluster
    redis: dict[str, RedisProcess]
    legacy: LegacyServer

    @property
    def sitemap(self) -> Path:
        return self.cluster.root / "sitemap.yaml"

    def node_target(self, site: str, index: int) -> str:
        node = self.cluster.sites[site][index]
        return f"{node.url} ({US_NAMES[index]})" if site == "us" else node.url

    def node_rows(self, site: str, index: int) -> set[Row]:
        return {(site, kind, self.node_target(site, index)) for kind in NODE_KINDS}

    def caldav_row(self, site: str) -> Row:
        return (site, "caldav", self.cluster.calendars[f"{site}-{SITES[site][0]}@contoso.test"])

    def redis_row(self, site: str) -> Row:
        return (site, "redis", self.redis[site].url)

    def expected_rows(self) -> set[Row]:
        rows: set[Row] = {("us", "dns", SRV), (None, "dns", AUTODISCOVER)}
        for site in SITES:
            for index in range(len(self.cluster.sites[site])):
                rows |= self.node_rows(site, index)
            rows |= {self.caldav_row(site), self.redis_row(site)}
        rows.add(("eu", "legacy", self.legacy.public_url))
        return rows


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if find_redis_server() is None:
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("doctor")
    ca = make_test_ca(root / "tls", *US_NAMES)
    with ExitStack() as stack:
        dns = stack.enter_context(DnsResponder())
        redis: dict[str, RedisProcess] = {}
        for site in SITES:
            redis[site] = RedisProcess(root / f"redis-{site}")
            stack.callback(redis[site].stop)
            redis[site].start()
        legacy = LegacyServer(root / "legacy", {OLD: DirectoryEntry(OLD_DN, "Old Timer")})
        stack.callback(legacy.stop)
        legacy.start()
        cluster = start_cluster(
            root, ca, SITES,
            site_fields={
                "eu": {"redis": redis["eu"].url, "legacy": {"url": legacy.public_url}},
                "us": {"redis": redis["us"].url, "nodes": [], "srv": SRV},
            },
            top_fields={"dns": {"nameservers": ["127.0.0.1"], "port": dns.port,
                                "timeout_seconds": 1}},
            extra_mailboxes=[{"address": OLD, "site": "eu", "kind": "legacy",
                              "legacy_dn": OLD_DN}],
        )  # fmt: skip
        stack.callback(cluster.stop)
        us_nodes = cluster.sites["us"]
        dns.set_srv(SRV, [(0, 0, n.proxy.port, f"{name}.") for n, name in zip(us_nodes, US_NAMES)])
        for name in US_NAMES:
            dns.set_a(name, ["127.0.0.1"])
        first_eu = cluster.sites["eu"][0]
        dns.set_srv(AUTODISCOVER, [(0, 0, first_eu.proxy.port, "autodiscover.contoso.test.")])
        dns.set_a("autodiscover.contoso.test", ["127.0.0.1"])
        yield Deployment(cluster, redis, legacy)


def doctor(sitemap: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cas", "doctor", "--config", str(sitemap), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def report(deployment: Deployment, *args: str) -> tuple[int, dict[Row, dict[str, Any]]]:
    done = doctor(deployment.sitemap, "--json", *args)
    document = json.loads(done.stdout)
    rows = {(c["site"], c["kind"], c["target"]): c for c in document["checks"]}
    assert len(rows) == len(document["checks"]), "every row names a distinct check"
    assert document["ok"] is (done.returncode == 0)
    return done.returncode, rows


def failures(rows: dict[Row, dict[str, Any]]) -> set[Row]:
    return {row for row, check in rows.items() if not check["ok"]}


def test_a_healthy_deployment_passes_every_check(deployment: Deployment) -> None:
    status, rows = report(deployment)
    assert set(rows) == deployment.expected_rows()
    assert failures(rows) == set(), {r: rows[r]["detail"] for r in failures(rows)}
    assert status == 0
    assert rows[("us", "dns", SRV)]["detail"].startswith("2 records: node-0.us.contoso.test:")
    assert rows[("eu", "legacy", deployment.legacy.public_url)]["detail"].startswith(
        f"answers for {OLD}"
    )
    assert rows[deployment.redis_row("us")]["detail"].startswith("PONG in ")
    table = doctor(deployment.sitemap)
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    assert lines[-1] == f"{len(rows)} checks, all passed (deadline 10 s)"
    for site, kind, target in rows:
        assert any(target in line and f" {kind} " in line and " ok " in line for line in lines)


def test_a_stopped_redis_is_reported_by_name(deployment: Deployment) -> None:
    deployment.redis["us"].stop()
    try:
        status, rows = report(deployment)
    finally:
        deployment.redis["us"].restart()
    assert status == 1
    assert failures(rows) == {deployment.redis_row("us")}
    assert rows[deployment.redis_row("us")]["detail"] == "connection refused"


def test_a_killed_node_is_reported_by_name_in_the_table(deployment: Deployment) -> None:
    node = deployment.cluster.sites["us"][1]
    node.kill()
    try:
        done = doctor(deployment.sitemap)
        status, rows = report(deployment)
    finally:
        node.start()
        deployment.cluster.wait_ready([node])
    assert status == 1 and done.returncode == 1
    assert failures(rows) == deployment.node_rows("us", 1)
    words = {rows[row]["detail"] for row in failures(rows)}
    assert words <= {  # the fault proxy still listens, and drops what it cannot pass on
        "connection reset by the peer",
        "connection closed during the TLS handshake",
        "connection refused",
    }, words
    target = deployment.node_target("us", 1)
    failed_lines = [line for line in done.stdout.splitlines() if " FAIL " in line]
    assert len(failed_lines) == len(NODE_KINDS)
    assert all(target in line for line in failed_lines)
    assert done.stdout.splitlines()[-1].startswith(f"{len(rows)} checks, {len(NODE_KINDS)} failed")


def test_a_node_that_never_answers_fails_at_the_one_deadline(deployment: Deployment) -> None:
    proxy = deployment.cluster.sites["eu"][1].proxy
    proxy.blackhole()
    try:
        status, rows = report(deployment, "--timeout", "3")
    finally:
        proxy.pass_through()
    assert status == 1
    assert failures(rows) == deployment.node_rows("eu", 1)
    assert {rows[row]["detail"] for row in failures(rows)} == {"no answer within 3 s"}


def test_only_the_site_asked_for_is_checked(deployment: Deployment) -> None:
    status, rows = report(deployment, "--site", "us")
    assert status == 0
    assert set(rows) == {row for row in deployment.expected_rows() if row[0] == "us"}


def test_a_stopped_radicale_is_reported_by_name(deployment: Deployment) -> None:
    deployment.cluster.radicales["eu"].stop()  # last: Radicale comes back on another port
    status, rows = report(deployment)
    assert status == 1
    assert failures(rows) == {deployment.caldav_row("eu")}
    assert rows[deployment.caldav_row("eu")]["detail"] == "connection refused"


def test_a_bad_sitemap_is_one_clear_message_and_status_2(tmp_path: Path) -> None:
    sitemap = tmp_path / "sitemap.yaml"
    sitemap.write_text(
        "sites:\n  - name: eu\n    nodes: [https://127.0.0.1:8443]\n    caldav: {url: ftp://x}\n"
    )
    done = doctor(sitemap)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"cas doctor: {sitemap}: sites[0] (eu): caldav.url:")
    missing = doctor(tmp_path / "missing.yaml", "--timeout", "5")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert "Traceback" not in done.stderr + missing.stderr
