"""Which checks a sitemap calls for, in report order, and config errors before any traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from cas.cli import main
from cas.doctor import Doctor
from cas.errors import ConfigurationError
from cas.settings import load_settings
from sitemap.model import (
    CalDavBackendConfig,
    DnsConfig,
    LegacyServerConfig,
    Mailbox,
    Site,
    Sitemap,
)

EU = Site(
    "eu",
    nodes=("https://127.0.0.11:8443", "http://127.0.0.12:8080"),
    caldav=CalDavBackendConfig(url="http://caldav.eu:5232/"),
    legacy=LegacyServerConfig(url="http://old.eu/public"),
    redis="redis://redis.eu:6379/2",
)
US = Site("us", srv="_cas._tcp.us.contoso.test", caldav=CalDavBackendConfig(url="http://dav.us/"))
MAILBOXES = (
    Mailbox("old@contoso.test", "eu", "legacy"),
    Mailbox("ann@contoso.test", "eu"),
    Mailbox("bob@contoso.test", "us", calendar_url="http://dav.us/custom/bob/"),
)


def planned(sitemap: Sitemap, site: str | None = None, **settings: object) -> list[tuple]:  # type: ignore[type-arg]
    doctor = Doctor(sitemap, load_settings(settings, environ={}))
    return [(c.site, c.kind, c.target) for c in doctor.plan(site)]


def test_every_site_part_is_planned_in_report_order() -> None:
    sitemap = Sitemap("t", (EU, US), MAILBOXES, domains=("contoso.test",), dns=DnsConfig())
    assert planned(sitemap) == [
        ("eu", "tls", "https://127.0.0.11:8443"),
        ("eu", "ready", "https://127.0.0.11:8443"),
        ("eu", "version", "https://127.0.0.11:8443"),
        ("eu", "breakers", "https://127.0.0.11:8443"),
        ("eu", "ready", "http://127.0.0.12:8080"),  # plain HTTP: no TLS check
        ("eu", "version", "http://127.0.0.12:8080"),
        ("eu", "breakers", "http://127.0.0.12:8080"),
        ("eu", "caldav", "http://caldav.eu:5232/ann@contoso.test/calendar/"),
        ("eu", "legacy", "http://old.eu/public/"),
        ("eu", "redis", "redis://redis.eu:6379/2"),
        ("us", "dns", "_cas._tcp.us.contoso.test"),
        ("us", "caldav", "http://dav.us/custom/bob/"),
        (None, "trust", "cluster_secret_file"),  # two sites and no secret: nothing can forward
        (None, "dns", "_autodiscover._tcp.contoso.test"),
    ]


def test_one_site_with_a_secret_gets_trust_checks_and_no_domain_names(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    sitemap = Sitemap("t", (EU, US), MAILBOXES, domains=("contoso.test",), dns=DnsConfig())
    rows = planned(sitemap, "eu", cluster_secret_file=str(secret))
    assert ("eu", "trust", "https://127.0.0.11:8443") in rows
    assert all(site == "eu" for site, _, _ in rows)


def test_without_a_dns_section_the_autodiscover_names_are_not_asked() -> None:
    rows = planned(Sitemap("t", (US,), (), domains=("contoso.test",)))
    assert rows == [("us", "dns", "_cas._tcp.us.contoso.test"), ("us", "caldav", "http://dav.us/")]


def test_an_unusable_secret_or_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    sitemap = Sitemap("t", (EU,), ())
    with pytest.raises(ConfigurationError, match="cluster_secret_file"):
        Doctor(sitemap, load_settings({"cluster_secret_file": str(tmp_path / "no")}, environ={}))
    with pytest.raises(ConfigurationError, match="peer_ca_file"):
        Doctor(sitemap, load_settings({"peer_ca_file": str(tmp_path / "no.pem")}, environ={}))


def test_the_command_reports_configuration_errors_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sitemap = tmp_path / "sitemap.yaml"
    sitemap.write_text(
        f"settings: {{cluster_secret_file: {tmp_path / 'missing'}}}\n"
        "sites:\n  - name: eu\n    nodes: [https://127.0.0.1:1]\n"
    )
    assert main(["doctor", "--config", str(sitemap)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cas doctor: {sitemap}: cluster_secret_file:")
    assert main(["doctor", "--config", str(sitemap), "--site", "us"]) == 2
    assert "--site us: not in" in capsys.readouterr().err
    for bad in ("0", "-3", "nan", "inf"):
        assert main(["doctor", "--config", str(sitemap), "--timeout", bad]) == 2
        assert "--timeout" in capsys.readouterr().err


def test_a_directory_server_gets_one_ldap_check_for_the_whole_sitemap() -> None:
    from sitemap.model import LdapServer

    sitemap = Sitemap("t", (EU,), MAILBOXES, ldap=LdapServer(url="ldaps://ldap.contoso.test"))
    checks = planned(sitemap)
    assert checks[-1] == (None, "ldap", "ldaps://ldap.contoso.test")
    assert (None, "ldap", "ldaps://ldap.contoso.test") not in planned(sitemap, "eu")
