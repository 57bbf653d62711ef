"""The lab parts' pure and in-process behaviour: TLS material, zone files, the DNS opt-in, flags.

The parts as real processes against real servers are in tests/integration/test_lab_parts.py.
"""

from __future__ import annotations

import ipaddress
import json
import stat
import threading
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest
import yaml
from cryptography import x509

from cas import cli
from caslab.dnsserver import DnsResponder
from caslab.parts import (
    LabInputError,
    load_zone,
    prepare_tls,
    read_password,
    serve_zone,
)
from caslab.seedjob import _calendar_name
from sitemap.model import CalDavBackendConfig, Mailbox, Site

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["localhost", "127.0.0.1", "cas-eu-1", "node-1.eu.contoso.test"]
SECRETS = ["cluster", "client", "caldav-admin"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def san(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(alt.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in alt.get_values_for_type(x509.IPAddress)
    }


# --- lab-tls -------------------------------------------------------------------------------------


def test_first_run_makes_ca_node_certificate_and_secrets(tmp_path: Path) -> None:
    result = prepare_tls(tmp_path, NAMES, SECRETS)
    assert (result.made_ca, result.issued_node, result.made_secrets) == (True, True, tuple(SECRETS))
    tls = tmp_path / "tls"
    assert san(tls / "node.pem") == set(NAMES)
    node = x509.load_pem_x509_certificate((tls / "node.pem").read_bytes())
    node.verify_directly_issued_by(x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes()))
    assert mode(tls / "ca.key") == mode(tls / "node.key") == 0o600
    assert mode(tmp_path / "secrets") == 0o700
    for name in SECRETS:
        secret = tmp_path / "secrets" / name
        assert mode(secret) == 0o600
        assert len(secret.read_text()) >= 43  # token_urlsafe(32)
    assert len({(tmp_path / "secrets" / n).read_text() for n in SECRETS}) == len(SECRETS)
    assert not list(tls.glob("node.new*"))


def test_second_run_keeps_everything(tmp_path: Path) -> None:
    prepare_tls(tmp_path, NAMES, SECRETS)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = prepare_tls(tmp_path, list(reversed(NAMES)) + ["LOCALHOST"], SECRETS)
    assert (again.made_ca, again.issued_node, again.made_secrets) == (False, False, ())
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_changed_names_reissue_the_node_certificate_only(tmp_path: Path) -> None:
    prepare_tls(tmp_path, NAMES, SECRETS)
    tls = tmp_path / "tls"
    ca, key, old = ((tls / f).read_bytes() for f in ("ca.pem", "node.key", "node.pem"))
    secrets = {n: (tmp_path / "secrets" / n).read_text() for n in SECRETS}
    result = prepare_tls(tmp_path, [*NAMES, "cas-sa-1"], [*SECRETS, "legacy"])
    assert (result.made_ca, result.issued_node, result.made_secrets) == (False, True, ("legacy",))
    assert (tls / "ca.pem").read_bytes() == ca
    assert (tls / "node.pem").read_bytes() != old and (tls / "node.key").read_bytes() != key
    assert san(tls / "node.pem") == {*NAMES, "cas-sa-1"}
    assert mode(tls / "node.key") == 0o600
    assert {n: (tmp_path / "secrets" / n).read_text() for n in SECRETS} == secrets
    fewer = prepare_tls(tmp_path, NAMES[:2], [])
    assert fewer.issued_node and san(tls / "node.pem") == set(NAMES[:2])


def test_a_lost_ca_key_makes_a_new_ca_and_node_certificate(tmp_path: Path) -> None:
    prepare_tls(tmp_path, NAMES, [])
    (tmp_path / "tls" / "ca.key").unlink()
    result = prepare_tls(tmp_path, NAMES, [])
    assert result.made_ca and result.issued_node


def test_a_node_key_that_does_not_match_is_replaced(tmp_path: Path) -> None:
    prepare_tls(tmp_path, NAMES, [])
    other = prepare_tls(tmp_path / "other", NAMES, [])
    (tmp_path / "tls" / "node.key").write_bytes(other.node.key.read_bytes())
    assert prepare_tls(tmp_path, NAMES, []).issued_node
    assert not prepare_tls(tmp_path, NAMES, []).issued_node


def test_ip_names_compare_canonically(tmp_path: Path) -> None:
    prepare_tls(tmp_path, ["::1", "localhost"], [])
    assert not prepare_tls(tmp_path, ["0:0:0:0:0:0:0:1", "localhost."], []).issued_node
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "node.pem").read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]


@pytest.mark.parametrize("names, secrets", [([], []), ([" "], []), (NAMES, ["../x"])])
def test_tls_refuses_bad_names(tmp_path: Path, names: list[str], secrets: list[str]) -> None:
    with pytest.raises(LabInputError):
        prepare_tls(tmp_path, names, secrets)


def test_lab_tls_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lab-tls", "--out", str(tmp_path), "--names", *NAMES, "--secrets", *SECRETS]
    assert cli.main(argv) == 0
    assert "made" in capsys.readouterr().out
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "CA" in out and "kept" in out and "secrets made: none" in out


# --- zone files and lab-dns ----------------------------------------------------------------------

ZONE = {
    "ttl": 30,
    "srv": {
        "_cas._tcp.eu.contoso.test": [
            {"priority": 0, "weight": 10, "port": 8443, "target": "node-1.eu.contoso.test"},
            {"priority": 1, "weight": 5, "port": 9443, "target": "node-2.eu.contoso.test."},
        ]
    },
    "a": {"node-2.eu.contoso.test": ["127.0.0.1"]},
}


@pytest.mark.parametrize("dump", [yaml.safe_dump, json.dumps])
def test_zone_file_in_yaml_or_json(tmp_path: Path, dump: object) -> None:
    path = tmp_path / "zone"
    path.write_text(dump(ZONE))  # type: ignore[operator]
    zone = load_zone(path)
    assert zone.ttl == 30
    assert zone.srv["_cas._tcp.eu.contoso.test"] == (
        (0, 10, 8443, "node-1.eu.contoso.test"),
        (1, 5, 9443, "node-2.eu.contoso.test."),
    )
    assert zone.a == {"node-2.eu.contoso.test": ("127.0.0.1",)}


def test_compose_zone_config_loads(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    path = tmp_path / "zone.yaml"
    path.write_text(compose["configs"]["zone"]["content"])
    zone = load_zone(path)
    assert zone.a == {} and len(zone.srv) == 4


@pytest.mark.parametrize(
    "document, words",
    [
        ("[1, 2]", "mapping"),
        ("ttl: -1", "ttl"),
        ("mx: {}", "unknown key 'mx'"),
        ("srv: {a.test: {port: 1}}", "srv.a.test"),
        ("srv: {a.test: [{priority: 0, weight: 0, port: 70000, target: b.test}]}", "65535"),
        ("srv: {a.test: [{priority: 0, weight: 0, port: 1}]}", "srv.a.test[0]"),
        ("a: {b.test: [not-an-ip]}", "a.b.test[0]"),
        ("srv: [", "not YAML"),
    ],
)
def test_bad_zone_files_name_the_entry(tmp_path: Path, document: str, words: str) -> None:
    path = tmp_path / "zone.yaml"
    path.write_text(document)
    with pytest.raises(LabInputError, match=words.replace("[", r"\[").replace(".", r"\.")):
        load_zone(path)


def test_missing_zone_file(tmp_path: Path) -> None:
    with pytest.raises(LabInputError, match="cannot read zone file"):
        load_zone(tmp_path / "nope.yaml")


def test_dns_responder_needs_the_opt_in_for_other_addresses() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        DnsResponder(host="0.0.0.0")
    DnsResponder(host="0.0.0.0", allow_any_address=True)  # constructed, never bound here


def test_serve_zone_answers_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "zone.yaml"
    path.write_text(yaml.safe_dump(ZONE))
    stop = threading.Event()
    probe = DnsResponder().start()  # a free UDP+TCP port pair, released for serve_zone
    port = probe.port
    probe.stop()
    result: list[int] = []
    zone = load_zone(path)
    thread = threading.Thread(
        target=lambda: result.append(serve_zone(zone, "127.0.0.1", port, stop))
    )
    thread.start()
    try:
        query = dns.message.make_query("_cas._tcp.eu.contoso.test", dns.rdatatype.SRV)
        for _ in range(50):
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
                break
            except dns.exception.Timeout:
                continue
        assert sorted(rd.port for rd in answer.answer[0]) == [8443, 9443]
    finally:
        stop.set()
        thread.join(5)
    assert result == [0] and not thread.is_alive()


# --- small helpers -------------------------------------------------------------------------------


def test_read_password(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert read_password(tmp_path / "pw") == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(LabInputError, match="empty"):
        read_password(tmp_path / "empty")
    with pytest.raises(LabInputError, match="cannot read password file"):
        read_password(tmp_path / "missing")


def test_seed_follows_the_nodes_calendar_layout() -> None:
    site = Site("eu", caldav=CalDavBackendConfig(url="http://radicale-eu:5232"))
    assert _calendar_name(site, Mailbox("ann@contoso.test", "eu")) == "calendar"
    other = Site("eu", caldav=CalDavBackendConfig(url="http://r/", calendar_path="{address}/work/"))
    assert _calendar_name(other, Mailbox("ann@contoso.test", "eu")) == "work"
    odd = Site("eu", caldav=CalDavBackendConfig(url="http://r/", calendar_path="cals/{local}/"))
    with pytest.raises(LabInputError, match="only at"):
        _calendar_name(odd, Mailbox("ann@contoso.test", "eu"))


def test_lab_commands_report_input_problems_as_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = ["lab-dns", "--zone", str(tmp_path / "none.yaml")]
    assert cli.main(zone) == 2
    assert "cas lab-dns: cannot read zone file" in capsys.readouterr().err
    seed = ["lab-seed", "--sitemap", "x.yaml", "--caldav-user", "admin"]
    assert cli.main([*seed, "--caldav-password-file", str(tmp_path / "pw")]) == 2
    assert "cannot read password file" in capsys.readouterr().err
    radicale = ["lab-radicale", "--folder", str(tmp_path), "--user", "admin"]
    assert cli.main(radicale) == 2
    assert "expected NAME=PASSWORD_FILE" in capsys.readouterr().err
