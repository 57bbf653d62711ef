"""The lab parts as the compose lab runs them: `python -m cas lab-...` processes on loopback.

`lab-radicale` and `lab-dns` start on a free 127.0.0.1 port, answer real clients and stop with
status 0 on SIGTERM (and SIGINT); `lab-seed` fills a real Radicale and a real legacy server from a
small sitemap (one modern and one legacy mailbox), twice, and fails clearly when nothing answers.
Every process started here is stopped by its PID.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
import yaml

from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.process import LegacyServer
from caslab.process import free_port
from caslab.radicale import RadicaleServer, calendar_url_for, ensure_calendar, put_event
from caslab.seed import SeedMailbox, generate_calendar

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
MODERN = "ann@contoso.test"
LEGACY = "old-eu@contoso.test"
LEGACY_DN = "/o=Contoso/ou=EU/cn=Recipients/cn=old-eu"


def cas(*argv: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cas", *argv],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Signal `process` by PID and reap it; kill it if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            return process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
            pytest.fail(f"pid {process.pid} ignored signal {signum}")
    return process.returncode


def secret(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


# --- lab-radicale --------------------------------------------------------------------------------


@pytest.fixture
def lab_radicale(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    port = free_port()
    process = cas(
        "lab-radicale", "--folder", str(tmp_path / "radicale"),
        "--host", "127.0.0.1", "--port", str(port),
        "--user", f"admin={secret(secrets, 'caldav-admin', 'admin-pw')}",
        "--user", f"cas={secret(secrets, 'caldav-cas', 'cas-pw')}",
        "--admin", "admin", "--reader", "cas",
        log=tmp_path / "radicale.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, (tmp_path / "radicale.log").read_text()
            try:
                httpx.request("OPTIONS", url, timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "lab-radicale did not answer"
                time.sleep(0.1)
        yield process, url, tmp_path
    finally:
        stop(process)


async def test_lab_radicale_serves_caldav_to_the_configured_users(
    lab_radicale: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, folder = lab_radicale
    # exec-like: the process compose started is Radicale itself, not a parent waiting for it
    assert b"caslab.radicale_main" in Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert oct((folder / "radicale" / "users").stat().st_mode & 0o777) == oct(0o600)
    mailbox = SeedMailbox(MODERN, "Ann", "Europe/Amsterdam")
    event = generate_calendar(mailbox, start=datetime.now(UTC).date(), days=7, rng_seed=1)[0]
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        calendar = await ensure_calendar(client, url, MODERN, ("admin", "admin-pw"))
        await put_event(client, calendar, event.uid, event.ics, ("admin", "admin-pw"))
        read = await client.request(
            "PROPFIND", calendar, headers={"Depth": "1"}, auth=("cas", "cas-pw")
        )
        assert read.status_code == 207 and ".ics" in read.text
        refused = await client.put(
            f"{calendar}x.ics", content=event.ics.encode(), auth=("cas", "cas-pw"),
            headers={"Content-Type": "text/calendar"},
        )  # fmt: skip
        assert refused.status_code == 403  # the nodes' account reads only
        wrong = await client.request("PROPFIND", calendar, auth=("cas", "nope"))
        assert wrong.status_code == 401


def test_lab_radicale_stops_with_status_0_on_sigterm(
    lab_radicale: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, _ = lab_radicale
    assert stop(process, signal.SIGTERM) == 0
    with pytest.raises(httpx.TransportError):
        httpx.request("OPTIONS", url, timeout=1, trust_env=False)


# --- lab-dns -------------------------------------------------------------------------------------

ZONE = """
ttl: 30
srv:
  _cas._tcp.eu.contoso.test:
    - {priority: 0, weight: 10, port: 8443, target: node-1.eu.contoso.test}
    - {priority: 0, weight: 10, port: 8444, target: node-2.eu.contoso.test}
a:
  node-2.eu.contoso.test: [127.0.0.1]
"""


def query(port: int, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    message = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    ask = dns.query.tcp if tcp else dns.query.udp
    return ask(message, "127.0.0.1", port=port, timeout=1.0)


@pytest.fixture
def lab_dns(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    zone = tmp_path / "zone.yaml"
    zone.write_text(ZONE)
    port = free_port()
    process = cas(
        "lab-dns", "--zone", str(zone), "--host", "127.0.0.1", "--port", str(port),
        log=tmp_path / "dns.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, (tmp_path / "dns.log").read_text()
            try:
                query(port, "_cas._tcp.eu.contoso.test", "SRV")
                break
            except (dns.exception.Timeout, OSError):
                assert time.monotonic() < deadline, "lab-dns did not answer"
                time.sleep(0.1)
        yield process, port
    finally:
        stop(process)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_lab_dns_answers_srv_and_a_from_the_zone_file(
    lab_dns: tuple[subprocess.Popen[bytes], int], tcp: bool
) -> None:
    _, port = lab_dns
    srv = query(port, "_cas._tcp.eu.contoso.test", "SRV", tcp=tcp)
    assert srv.rcode() == dns.rcode.NOERROR
    assert sorted((r.port, r.target.to_text(), srv.answer[0].ttl) for r in srv.answer[0]) == [
        (8443, "node-1.eu.contoso.test.", 30),
        (8444, "node-2.eu.contoso.test.", 30),
    ]
    a = query(port, "node-2.eu.contoso.test", "A", tcp=tcp)
    assert [r.address for r in a.answer[0]] == ["127.0.0.1"]
    # a target without an A record here is left to another resolver (Docker's DNS)
    assert query(port, "node-1.eu.contoso.test", "A", tcp=tcp).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_lab_dns_stops_with_status_0(
    lab_dns: tuple[subprocess.Popen[bytes], int], signum: int
) -> None:
    process, port = lab_dns
    assert stop(process, signum) == 0
    with pytest.raises((dns.exception.Timeout, OSError)):
        query(port, "_cas._tcp.eu.contoso.test", "SRV", tcp=True)


# --- lab-seed ------------------------------------------------------------------------------------


def write_sitemap(folder: Path, caldav_url: str, legacy_url: str) -> Path:
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    document = {
        "domains": ["contoso.test"],
        "sites": [
            {
                "name": "eu",
                "timezone": "Europe/Amsterdam",
                "caldav": {
                    "url": caldav_url,
                    "username": "cas",
                    "password_file": str(secret(secrets, "caldav-cas", "cas-pw")),
                },
                "legacy": {
                    "url": legacy_url,
                    "username": "freebusy",
                    "password_file": str(secret(secrets, "legacy", "legacy-pw")),
                },
            }
        ],
        "mailboxes": [
            {"address": MODERN, "site": "eu", "display_name": "Ann Example"},
            {"address": LEGACY, "site": "eu", "kind": "legacy", "legacy_dn": LEGACY_DN},
        ],
    }
    path = folder / "sitemap.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def seed(sitemap: Path, password_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "cas", "lab-seed", "--sitemap", str(sitemap),
            "--caldav-user", "admin", "--caldav-password-file", str(password_file), *extra,
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def calendar_objects(calendar: str) -> set[str]:
    answer = httpx.request(
        "PROPFIND", calendar, headers={"Depth": "1"}, auth=("cas", "cas-pw"),
        timeout=10, trust_env=False,
    )  # fmt: skip
    assert answer.status_code == 207, answer.text
    return set(re.findall(r"href>([^<]+\.ics)</", answer.text))


def legacy_fbdata(legacy: LegacyServer, address: str) -> str:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=21)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    response = httpx.get(
        legacy.public_url,
        params={
            "cmd": "freebusy", "start": start.strftime(fmt), "end": end.strftime(fmt),
            "interval": "30", "u": f"SMTP:{address}",
        },
        timeout=10, trust_env=False,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.text.split("<a:fbdata>")[-1].split("</a:fbdata>")[0]


def test_lab_seed_fills_caldav_and_publishes_legacy_free_busy(tmp_path: Path) -> None:
    radicale = RadicaleServer(
        tmp_path / "radicale", {"admin": "admin-pw", "cas": "cas-pw"},
        admins=["admin"], readers=["cas"],
    )  # fmt: skip
    legacy = LegacyServer(
        tmp_path / "legacy", {LEGACY: DirectoryEntry(LEGACY_DN, "Old EU Mailbox")}
    )
    password = secret(tmp_path, "caldav-admin", "admin-pw")
    with radicale, legacy:
        sitemap = write_sitemap(tmp_path, radicale.url + "/", legacy.public_url)
        assert legacy_fbdata(legacy, LEGACY).strip("4") == ""  # nothing published yet

        first = seed(sitemap, password)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "seeded 1 calendars" in first.stdout and "published 1 legacy" in first.stdout
        calendar = calendar_url_for(radicale.url, MODERN)
        mailbox = SeedMailbox(MODERN, "Ann Example", "Europe/Amsterdam")
        start = datetime.now(UTC).date() - timedelta(days=7)
        expected = generate_calendar(mailbox, start=start, days=42, rng_seed=0)
        objects = calendar_objects(calendar)
        assert len(objects) == len(expected) >= 9
        digits = legacy_fbdata(legacy, LEGACY)
        assert digits and set(digits) <= set("0123") and set(digits) & set("123")

        again = seed(sitemap, password)  # PUTs replace: the same objects and free/busy
        assert again.returncode == 0, again.stdout + again.stderr
        assert calendar_objects(calendar) == objects
        assert legacy_fbdata(legacy, LEGACY) == digits


def test_lab_seed_fails_clearly_when_a_backend_never_answers(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    sitemap = write_sitemap(tmp_path, dead, dead + "public/")
    began = time.monotonic()
    result = seed(sitemap, secret(tmp_path, "caldav-admin", "x"), "--timeout", "1.5")
    assert result.returncode == 1
    assert time.monotonic() - began < 30
    assert "did not answer within 1.5 s" in result.stderr
    assert "site eu's" in result.stderr and result.stderr.startswith("cas lab-seed: ")


def test_lab_seed_reports_a_bad_sitemap_as_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "sitemap.yaml").write_text("sites: []\n")
    result = seed(tmp_path / "sitemap.yaml", secret(tmp_path, "pw", "x"))
    assert result.returncode == 2 and result.stderr.startswith("cas lab-seed: ")
