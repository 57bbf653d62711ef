"""compose.yaml runs the lab `cas lab` runs: the same sites, nodes, backends, Redis, legacy, DNS.

Both follow `caslab.topology.lab_topology`; these tests read compose.yaml as data (no Docker
engine needed) and compare it with `lab_topology(3, 2)` part by part, including the sitemap and
DNS zone the compose file carries, and the published ports its header documents.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from caslab import runner
from caslab.topology import (
    DOMAIN,
    NODE_PORT,
    SITE_NAMES,
    SITE_ZONES,
    LabTopology,
    lab_topology,
)
from sitemap.load import load_sitemap

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def topology() -> LabTopology:
    return lab_topology(3, 2)


@pytest.fixture(scope="module")
def lab_sitemap(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("compose") / "sitemap.yaml"
    path.write_text(compose["configs"]["sitemap"]["content"])
    return load_sitemap(str(path))


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def flag_values(command: list[str], name: str) -> list[str]:
    """The words after `name` up to the next `--flag`."""
    start = command.index(name) + 1
    values = []
    for word in command[start:]:
        if word.startswith("--"):
            break
        values.append(word)
    return values


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


# --- the description itself ----------------------------------------------------------------------


def test_lab_topology_names_every_part() -> None:
    topology = lab_topology(2, 3)
    assert [s.name for s in topology.sites] == ["eu", "us"]
    assert [n.name for n in topology.site("us").nodes] == ["cas-us-1", "cas-us-2", "cas-us-3"]
    assert topology.site("eu").nodes[0].host == f"node-1.eu.{DOMAIN}"
    assert topology.site("eu").srv == f"_cas._tcp.eu.{DOMAIN}"
    assert topology.site("eu").costs == {"us": 10}
    assert topology.services() == {
        "tls", "seed", "dns", "legacy",
        "radicale-eu", "redis-eu", "cas-eu-1", "cas-eu-2", "cas-eu-3",
        "radicale-us", "redis-us", "cas-us-1", "cas-us-2", "cas-us-3",
    }  # fmt: skip
    assert topology.as_dict()["sites"][1]["nodes"][2] == {
        "name": "cas-us-3",
        "host": f"node-3.us.{DOMAIN}",
    }


@pytest.mark.parametrize("sites, nodes", [(0, 1), (len(SITE_NAMES) + 1, 1), (1, 0)])
def test_lab_topology_refuses_impossible_sizes(sites: int, nodes: int) -> None:
    with pytest.raises(ValueError):
        lab_topology(sites, nodes)


def test_cas_lab_runs_the_topology(tmp_path) -> None:
    assert runner.DOMAIN == DOMAIN
    defaults = runner.LabOptions()
    assert (defaults.sites, defaults.nodes_per_site) == (3, 2)
    lab = runner.Lab(runner.LabOptions(state_dir=str(tmp_path)))
    assert lab.topology.as_dict() == lab_topology(3, 2).as_dict()
    assert [s.name for s in lab.topology.sites] == list(SITE_NAMES[:3])
    assert {s.name: s.timezone for s in lab.topology.sites} == {
        n: SITE_ZONES[n] for n in SITE_NAMES[:3]
    }


# --- compose.yaml against lab_topology(3, 2) -------------------------------------------------------


def test_compose_has_exactly_the_parts_of_the_lab(compose: dict, topology: LabTopology) -> None:
    assert set(compose["services"]) == topology.services()


def test_each_node_serves_its_site_under_its_srv_target_name(
    compose: dict, topology: LabTopology
) -> None:
    services = compose["services"]
    for site in topology.sites:
        for node in site.nodes:
            service = services[node.name]
            command = command_of(service)
            assert command[0] == "serve"
            assert flag(command, "--site") == site.name
            assert flag(command, "--port") == str(NODE_PORT)
            assert flag(command, "--host") == "0.0.0.0"
            assert service["networks"]["lab"]["aliases"] == [node.host]
            needs = service["depends_on"]
            for part in (site.caldav, site.redis, topology.dns, topology.legacy):
                assert needs[part]["condition"] == "service_healthy", (node.name, part)
            for job in topology.jobs:
                assert needs[job]["condition"] == "service_completed_successfully"


def test_each_site_has_its_radicale_and_redis(compose: dict, topology: LabTopology) -> None:
    services = compose["services"]
    for site in topology.sites:
        assert command_of(services[site.caldav])[0] == "lab-radicale"
        assert services[site.redis]["image"].startswith("redis:7")
        assert "healthcheck" in services[site.caldav] and "healthcheck" in services[site.redis]


def test_one_image_runs_every_part_but_redis(compose: dict, topology: LabTopology) -> None:
    images = {
        name: service["image"]
        for name, service in compose["services"].items()
        if not name.startswith("redis-")
    }
    assert len(set(images.values())) == 1
    expected = {topology.legacy: "legacy-server", topology.dns: "lab-dns"}
    expected |= {"tls": "lab-tls", "seed": "lab-seed"}
    for name, first_word in expected.items():
        assert command_of(compose["services"][name])[0] == first_word


def test_node_certificate_covers_every_name_a_node_is_reached_by(
    compose: dict, topology: LabTopology
) -> None:
    names = set(flag_values(command_of(compose["services"]["tls"]), "--names"))
    for node in topology.nodes:
        assert {node.name, node.host} <= names
    assert {"localhost", "127.0.0.1"} <= names


def test_compose_sitemap_is_valid_and_matches_the_topology(
    lab_sitemap: Any, topology: LabTopology
) -> None:
    assert [s.name for s in lab_sitemap.sites] == [s.name for s in topology.sites]
    for expected, site in zip(topology.sites, lab_sitemap.sites, strict=True):
        assert site.srv == expected.srv
        assert str(site.timezone) == expected.timezone
        assert host_of(site.caldav.url) == expected.caldav
        assert host_of(site.redis) == expected.redis
        assert host_of(site.legacy.url) == topology.legacy
        assert {k: v for k, v in dict(site.costs).items() if k != site.name} == expected.costs
    kinds = {(m.site, m.kind) for m in lab_sitemap.mailboxes}
    for site in topology.sites:
        assert {(site.name, "modern"), (site.name, "legacy")} <= kinds


def test_sitemap_points_at_the_dns_service_and_lab_secrets(
    compose: dict, lab_sitemap: Any, topology: LabTopology
) -> None:
    dns_service = compose["services"][topology.dns]
    address = dns_service["networks"]["lab"]["ipv4_address"]
    assert [str(ns) for ns in lab_sitemap.dns.nameservers] == [address]
    assert str(lab_sitemap.dns.port) == flag(command_of(dns_service), "--port")
    secrets = set(flag_values(command_of(compose["services"]["tls"]), "--secrets"))
    content = compose["configs"]["sitemap"]["content"]
    used = set(re.findall(r"/var/lib/caslab/secrets/([a-z-]+)", content))
    assert used <= secrets, f"the sitemap reads secrets the tls job does not make: {used - secrets}"


def test_dns_zone_has_the_srv_records_of_every_site(compose: dict, topology: LabTopology) -> None:
    zone = yaml.safe_load(compose["configs"]["zone"]["content"])
    srv = zone["srv"]
    for site in topology.sites:
        assert [(r["target"], r["port"]) for r in srv[site.srv]] == [
            (node.host, NODE_PORT) for node in site.nodes
        ]
    assert sorted(r["target"] for r in srv[topology.autodiscover_srv]) == sorted(
        node.host for node in topology.nodes
    )
    assert set(srv) == {site.srv for site in topology.sites} | {topology.autodiscover_srv}


def test_legacy_server_knows_the_sitemaps_legacy_mailboxes(
    compose: dict, lab_sitemap: Any, tmp_path: Path
) -> None:
    from caslab.oldserver.directory import load_directory

    path = tmp_path / "legacy-directory.yaml"
    path.write_text(compose["configs"]["legacy-directory"]["content"])
    directory = load_directory(path)
    legacy = {m.address: m.legacy_dn for m in lab_sitemap.mailboxes if m.kind == "legacy"}
    assert {address: entry.legacy_dn for address, entry in directory.items()} == legacy


# --- documented ports ------------------------------------------------------------------------------


def published_ports(compose: dict) -> dict[str, set[int]]:
    ports: dict[str, set[int]] = {}
    for name, service in compose["services"].items():
        for entry in service.get("ports", []):
            host_port = str(entry).split("/")[0].split(":")[-2]
            ports.setdefault(name, set()).add(int(host_port))
    return ports


def documented_ports() -> dict[str, set[int]]:
    """The header table: `#   8411 8412   cas-eu-1, cas-eu-2   HTTPS ...`."""
    ports: dict[str, set[int]] = {}
    for line in COMPOSE.read_text().splitlines():
        match = re.match(r"#\s+((?:\d{4,5}\s+)+)([a-z0-9-]+(?:,\s*[a-z0-9-]+)*)\s", line)
        if match:
            numbers = [int(n) for n in match.group(1).split()]
            names = [n.strip() for n in match.group(2).split(",")]
            if len(names) == len(numbers):
                for n, number in zip(names, numbers, strict=True):
                    ports.setdefault(n, set()).add(number)
            else:
                for n in names:
                    ports.setdefault(n, set()).update(numbers)
    return ports


def test_every_published_port_is_documented_and_on_loopback(compose: dict) -> None:
    assert published_ports(compose) == documented_ports()
    for service in compose["services"].values():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), entry


def test_lab_docs_list_the_published_ports(compose: dict) -> None:
    text = (ROOT / "docs" / "lab.md").read_text()
    for name, numbers in published_ports(compose).items():
        for number in numbers:
            assert re.search(rf"\b{number}\b.*\b{re.escape(name)}\b", text), (name, number)


def test_compose_has_the_labs_requesters_and_permissions(lab_sitemap: Any) -> None:
    import yaml

    from caslab.documents import PERMISSIONS, REQUESTERS
    from sitemap.load import parse_sitemap

    assert [user.username for user in lab_sitemap.auth.users] == list(REQUESTERS)
    text = yaml.safe_dump({"sites": [{"name": "eu"}], "permissions": PERMISSIONS})
    assert lab_sitemap.permissions == parse_sitemap(text, "lab").permissions
