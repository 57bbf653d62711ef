"""`sitemap locate` and `sitemap resolve`, against site maps whose `dns` points at a real
loopback responder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from caslab.dnsserver import DnsResponder
from sitemap.cli import build_parser, main

DATA = Path(__file__).resolve().parents[2] / "data" / "sitemaps"
SRV = "_cas._tcp.eu.contoso.test"
ANN_DN = "/o=Contoso/ou=EU/cn=Recipients/cn=ann"


def write_sitemap(tmp_path: Path, port: int) -> str:
    path = tmp_path / "sitemap.yaml"
    path.write_text(
        f"""
domains: [contoso.test]
dns: {{nameservers: [127.0.0.1], port: {port}, timeout_seconds: 0.3}}
sites:
  - {{name: eu, nodes: ["https://127.0.0.1:8443"], srv: {SRV}}}
  - {{name: us, srv: _cas._tcp.us.contoso.test, node_scheme: http, costs: {{eu: 20}}}}
  - {{name: apac}}
mailboxes:
  - {{address: ann@contoso.test, site: eu, legacy_dn: "{ANN_DN}", aliases: [anna@contoso.test]}}
  - {{address: bob@contoso.test, site: us}}
  - {{address: kim@contoso.test, site: apac, kind: legacy}}
""",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def eu_dns(responder: DnsResponder) -> DnsResponder:
    responder.set_srv(SRV, [(0, 10, 8001, "node1.eu.contoso.test"), (1, 0, 8002, "node2")], ttl=30)
    responder.set_a("node1.eu.contoso.test", ["127.0.0.1"], ttl=20)
    responder.set_a("node2", ["127.0.0.2"], ttl=20)
    responder.set_aaaa("node2", ["::1"], ttl=20)
    return responder


def test_locate_prints_the_site_kind_dn_and_the_try_order(
    eu_dns: DnsResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_sitemap(tmp_path, eu_dns.port)
    # lowest-cost group, sorted: [127.0.0.1:8001 (SRV prio 0), 127.0.0.1:8443 (static)];
    # the hash of ann's DN is odd, so index 1 (8443) first; then priority 1's two addresses
    h = int.from_bytes(hashlib.sha256(ANN_DN.casefold().encode()).digest()[:8], "big")
    assert h % 2 == 1
    assert main(["locate", "ANNA@contoso.test", "--config", config]) == 0
    assert capsys.readouterr().out == (
        "address:   ann@contoso.test\n"
        "site:      eu\n"
        "kind:      modern\n"
        f"legacy DN: {ANN_DN}\n"
        "node:      https://127.0.0.1:8443\n"
        "try order (costs from site eu):\n"
        "  1. https://127.0.0.1:8443  cost 0\n"
        "  2. https://127.0.0.1:8001  cost 0\n"
        "  3. https://[::1]:8002      cost 1\n"
        "  4. https://127.0.0.2:8002  cost 1\n"
    )


def test_locate_json_with_costs_from_another_site(
    eu_dns: DnsResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_sitemap(tmp_path, eu_dns.port)
    assert main(["locate", "ann@contoso.test", "--config", config, "--from", "apac", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["site"], found["kind"], found["legacy_dn"], found["key"]) == (
        "eu", "modern", ANN_DN, ANN_DN,
    )  # fmt: skip
    assert found["from_site"] == "apac" and found["node"] == "https://127.0.0.1:8443"
    assert [(n["url"], n["cost"]) for n in found["order"]] == [
        ("https://127.0.0.1:8443", 100),
        ("https://127.0.0.1:8001", 100),
        ("https://[::1]:8002", 101),
        ("https://127.0.0.2:8002", 101),
    ]


def test_locate_in_a_site_without_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_sitemap(tmp_path, 9)  # no DNS is asked for a site without an SRV name
    assert main(["locate", "kim@contoso.test", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "kind:      legacy\n" in out and "node:      none (the site has no nodes)\n" in out


def test_locate_with_static_nodes_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["locate", "kim@contoso.test", "--config", str(DATA / "multisite.yaml")]) == 0
    assert "node:      https://127.0.0.1:9443\n" in capsys.readouterr().out


def test_locate_when_dns_fails_and_no_static_node_is_left(
    responder: DnsResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_sitemap(tmp_path, responder.port)
    responder.fail("_cas._tcp.us.contoso.test")
    assert main(["locate", "bob@contoso.test", "--config", config]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        "sitemap: site us: cannot resolve SRV _cas._tcp.us.contoso.test: the name servers failed"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["locate", "nobody@contoso.test"], "sitemap: nobody@contoso.test: not in the directory"),
        (["locate", "ann@contoso.test", "--from", "mars"], "sitemap: no site named 'mars' in"),
        (["resolve", "mars"], "sitemap: no site named 'mars' in"),
    ],
)
def test_unknown_names_exit_1(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--config", write_sitemap(tmp_path, 9)]) == 1
    assert capsys.readouterr().err.startswith(message)


@pytest.mark.parametrize("command", [["locate", "ann@contoso.test"], ["resolve", "eu"]])
def test_an_invalid_site_map_prints_its_problems(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = DATA / "bad_srv_name.yaml"
    assert main([*command, "--config", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}: sites[0] (eu): srv: not a DNS SRV name")


def test_resolve_prints_static_nodes_and_the_srv_answer(
    eu_dns: DnsResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_sitemap(tmp_path, eu_dns.port)
    assert main(["resolve", "eu", "--config", config]) == 0
    assert capsys.readouterr().out == (
        "site eu: 4 nodes\n"
        "  static  https://127.0.0.1:8443\n"
        f"  SRV {SRV}: 3 answers\n"
        "    https://127.0.0.1:8001  priority 0  weight 10  ttl 20  target node1.eu.contoso.test\n"
        "    https://127.0.0.2:8002  priority 1  weight 0  ttl 20  target node2\n"
        "    https://[::1]:8002      priority 1  weight 0  ttl 20  target node2\n"
    )


def test_resolve_json(
    eu_dns: DnsResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_sitemap(tmp_path, eu_dns.port)
    assert main(["resolve", "eu", "--config", config, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["site"] == "eu" and found["static"] == ["https://127.0.0.1:8443"]
    assert found["srv"]["name"] == SRV
    assert found["srv"]["nodes"][0] == {
        "url": "https://127.0.0.1:8001", "priority": 0, "weight": 10, "port": 8001,
        "target": "node1.eu.contoso.test", "ttl": 20, "address": "127.0.0.1",
    }  # fmt: skip


def test_resolve_uses_the_site_node_scheme(
    responder: DnsResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    responder.set_srv("_cas._tcp.us.contoso.test", [(0, 0, 8080, "node1.us.contoso.test")])
    responder.set_a("node1.us.contoso.test", ["127.0.0.9"])
    assert main(["resolve", "us", "--config", write_sitemap(tmp_path, responder.port)]) == 0
    assert "    http://127.0.0.9:8080  priority 0" in capsys.readouterr().out


def test_resolve_a_site_without_srv_or_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resolve", "apac", "--config", write_sitemap(tmp_path, 9)]) == 0
    assert capsys.readouterr().out == "site apac: 0 nodes\n"
    assert main(["resolve", "apac", "--config", write_sitemap(tmp_path, 9), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"site": "apac", "static": [], "srv": None}


@pytest.mark.parametrize(
    ("breaks", "reason"),
    [("fail", "the name servers failed (SERVFAIL, refused)"), ("silence", "no answer within 0.3 s"),
     ("remove", "no such name (NXDOMAIN)")],
)  # fmt: skip
def test_resolve_when_dns_fails_exits_1_with_the_reason(
    eu_dns: DnsResponder,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    breaks: str,
    reason: str,
) -> None:
    getattr(eu_dns, breaks)(SRV)
    assert main(["resolve", "eu", "--config", write_sitemap(tmp_path, eu_dns.port)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"sitemap: site eu: cannot resolve SRV {SRV}: {reason}")
    assert "Traceback" not in err


def test_the_new_commands_are_listed_and_need_a_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    help_text = build_parser().format_help()
    assert "locate" in help_text and "resolve" in help_text
    assert main(["locate", "ann@contoso.test"]) == 2
    assert main(["resolve", "eu"]) == 2
    assert "--config" in capsys.readouterr().err
