"""The doctor's node and CalDAV checks against real servers, healthy and misconfigured.

A real node app (fake mailbox backend) serves HTTPS under uvicorn with a trustme certificate
that names only `node-0.us.contoso.test`, as a Kubernetes pod's certificate names its host and
not its address. The checks run exactly as `cas doctor` wires them (`Doctor`); every expected
word comes from how the servers were set up, not from the doctor's code.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from cas.app import create_app
from cas.doctor import Doctor, run_checks
from cas.doctor.nodes import NodeTarget
from cas.doctor.run import CheckResult
from cas.settings import Settings, load_settings
from cas.sources.base import FakeBackend
from caslab.process import free_port
from sitemap.model import CalDavBackendConfig, ClientAuth, Mailbox, SecretRef, Site, Sitemap
from tests.integration.test_peer_tls_names import files
from tests.support.node import ThreadedServer
from tests.support.radicale import MailboxCalendar, RadicaleLab
from tests.unit.test_ews_endpoint import availability

NAME = "node-0.us.contoso.test"


@pytest.fixture(scope="module")
def trust_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("doctor-checks")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def secret_file(trust_root: Path) -> Path:
    path = trust_root / "secret"
    path.write_text(secrets.token_urlsafe(32))
    return path


@pytest.fixture(scope="module")
def node(ca: trustme.CA, trust_root: Path, secret_file: Path) -> Iterator[ThreadedServer]:
    tls = files(ca, trust_root / "us", NAME)
    settings = load_settings({"cluster_secret_file": str(secret_file)}, environ={})
    sitemap = Sitemap(
        source="test",
        sites=(Site("us", nodes=("https://127.0.0.1:1",)), Site("eu")),
        mailboxes=(Mailbox("bob@contoso.test", "us"),),
        auth=ClientAuth(anonymous=True),
    )
    app = create_app(settings, sitemap, "us", backends={"modern": FakeBackend({})})
    with ThreadedServer(app, tls) as server:
        yield server


def settings_for(trust_root: Path, ca: trustme.CA, secret: Path) -> Settings:
    ca_file = trust_root / f"ca-{id(ca)}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return load_settings(
        {"cluster_secret_file": str(secret), "peer_ca_file": str(ca_file)}, environ={}
    )


async def check_node(settings: Settings, target: NodeTarget) -> dict[str, CheckResult]:
    sitemap = Sitemap(source="test", sites=(Site("us"), Site("eu")), mailboxes=())
    doctor = Doctor(sitemap, settings)
    try:
        results = await run_checks(doctor.nodes.checks(target), 10.0)
    finally:
        await doctor.aclose()
    assert all(r.target == target.describe() for r in results)
    return {r.kind: r for r in results}


async def test_a_healthy_node_found_by_name_passes_every_check(
    node: ThreadedServer, trust_root: Path, ca: trustme.CA, secret_file: Path
) -> None:
    from cas import __version__

    found = await check_node(
        settings_for(trust_root, ca, secret_file), NodeTarget("us", node.url, NAME)
    )
    assert sorted(found) == ["breakers", "ready", "tls", "trust", "version"]
    assert all(r.ok for r in found.values()), found
    assert f"verified as {NAME}; certificate names {NAME};" in found["tls"].detail
    assert found["version"].detail == f"cas {__version__}, serving site us"
    assert found["trust"].detail.startswith("accepts this cluster's signature")
    assert found["breakers"].detail == "all 1 closed: modern:us"


async def test_a_node_whose_backend_keeps_failing_reports_its_open_breaker(
    trust_root: Path, ca: trustme.CA, secret_file: Path
) -> None:
    tls = files(ca, trust_root / "failing", NAME)
    settings = load_settings({"breaker_failures": 2}, environ={})
    sitemap = Sitemap(
        source="test",
        sites=(Site("us"),),
        mailboxes=(Mailbox("bob@contoso.test", "us"),),
        auth=ClientAuth(anonymous=True),
    )
    backend = FakeBackend({}, failing={"bob@contoso.test"})
    app = create_app(settings, sitemap, "us", backends={"modern": backend})
    with ThreadedServer(app, tls) as server:
        async with httpx.AsyncClient(verify=False, trust_env=False, timeout=10) as client:
            for _ in range(2):
                answer = await client.post(
                    server.url + "/EWS/Exchange.asmx", content=availability(["bob@contoso.test"])
                )
                assert b"ErrorFreeBusyGenerationFailed" in answer.content
        found = await check_node(
            settings_for(trust_root, ca, secret_file), NodeTarget("us", server.url, NAME)
        )
    assert not found["breakers"].ok
    assert found["breakers"].detail.startswith("modern backend of site us is open (down ")
    assert "last: fake backend refuses bob@contoso.test" in found["breakers"].detail


async def test_a_certificate_without_the_dialled_name_is_reported_with_the_names_it_has(
    node: ThreadedServer, trust_root: Path, ca: trustme.CA, secret_file: Path
) -> None:
    found = await check_node(settings_for(trust_root, ca, secret_file), NodeTarget("us", node.url))
    assert not found["tls"].ok
    assert found["tls"].detail == f"certificate does not name 127.0.0.1 (it names {NAME})"
    assert not found["ready"].ok and "certificate does not name" in found["ready"].detail


async def test_a_certificate_from_another_ca_is_not_trusted(
    node: ThreadedServer, trust_root: Path, secret_file: Path
) -> None:
    settings = settings_for(trust_root, trustme.CA(), secret_file)
    found = await check_node(settings, NodeTarget("us", node.url, NAME))
    assert not found["tls"].ok
    assert found["tls"].detail.startswith("certificate not signed by a trusted CA")
    assert settings.peer_ca_file in found["tls"].detail


async def test_another_secret_and_the_wrong_site_are_refused_by_the_node(
    node: ThreadedServer, trust_root: Path, ca: trustme.CA
) -> None:
    other = trust_root / "other-secret"
    other.write_text(secrets.token_urlsafe(32))
    found = await check_node(settings_for(trust_root, ca, other), NodeTarget("us", node.url, NAME))
    assert found["tls"].ok and found["ready"].ok
    assert not found["trust"].ok
    assert found["trust"].detail.startswith("HTTP 403: the node refuses this cluster's signature")
    assert "bad signature" in found["trust"].detail


async def test_a_node_listed_under_another_site_is_reported(
    node: ThreadedServer, trust_root: Path, ca: trustme.CA, secret_file: Path
) -> None:
    found = await check_node(
        settings_for(trust_root, ca, secret_file), NodeTarget("eu", node.url, NAME)
    )
    assert not found["version"].ok
    assert "serving site us, but the sitemap lists it under eu" in found["version"].detail
    assert not found["trust"].ok and "addressed to site 'eu'" in found["trust"].detail


async def test_a_port_nobody_listens_on_is_connection_refused(
    trust_root: Path, ca: trustme.CA, secret_file: Path
) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    found = await check_node(settings_for(trust_root, ca, secret_file), NodeTarget("us", url))
    assert {kind: (r.ok, r.detail) for kind, r in found.items()} == {
        kind: (False, "connection refused")
        for kind in ("tls", "ready", "version", "trust", "breakers")
    }


# --- CalDAV, against a real Radicale -------------------------------------------------------


async def check_caldav(radicale: RadicaleLab, mailbox: Mailbox, password_env: str) -> CheckResult:
    config = CalDavBackendConfig(
        url=radicale.url + "/", username="cas", password=SecretRef(env=password_env)
    )
    sitemap = Sitemap(source="test", sites=(Site("eu", caldav=config),), mailboxes=(mailbox,))
    doctor = Doctor(sitemap, load_settings({}, environ={}))
    try:
        (result,) = await run_checks(doctor.plan(), 10.0)
    finally:
        await doctor.aclose()
    assert result.kind == "caldav"
    return result


async def test_caldav_answers_with_the_right_credentials_only(
    radicale: RadicaleLab, mailbox_calendar: MailboxCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox(mailbox_calendar.address, "eu")
    monkeypatch.setenv("DOCTOR_CALDAV_OK", radicale.service[1])
    monkeypatch.setenv("DOCTOR_CALDAV_BAD", radicale.service[1] + "-wrong")
    good = await check_caldav(radicale, mailbox, "DOCTOR_CALDAV_OK")
    assert good.ok, good
    assert good.target == mailbox_calendar.calendar_url
    bad = await check_caldav(radicale, mailbox, "DOCTOR_CALDAV_BAD")
    assert not bad.ok
    assert bad.detail == "HTTP 401 from CalDAV: credentials refused (as cas)"
    missing = await check_caldav(radicale, Mailbox("nobody@contoso.test", "eu"), "DOCTOR_CALDAV_OK")
    assert not missing.ok and missing.detail.startswith("HTTP 404 from CalDAV")
    unset = await check_caldav(radicale, mailbox, "DOCTOR_CALDAV_UNSET")
    assert not unset.ok
    assert unset.detail == (
        "CalDAV credentials unavailable: environment variable DOCTOR_CALDAV_UNSET is not set"
    )
