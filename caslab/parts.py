"""The lab's parts as one-container commands: `cas lab-tls`, `lab-radicale`, `lab-dns`, `lab-seed`.

`compose.yaml` runs each part of the lab `cas lab` runs in-process as its own container of one
image; these are the parts' bodies, and `cas.cli` holds only their flags. `prepare_tls` makes
the cluster CA, the node certificate and the random secrets, keeping what exists; `run_radicale`
writes a Radicale's files (`caslab.radicale`) and becomes that Radicale; `serve_zone` answers a
zone file's SRV and A records until SIGTERM or SIGINT; `seed_sitemap` waits for every site's
CalDAV and legacy server, then fills the calendars with `caslab.seed` events and publishes the
legacy mailboxes' free/busy. Each is safe to run again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any, NoReturn
from urllib.parse import quote, unquote, urljoin

import httpx
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from caslab.dnsserver import DnsResponder, SrvRecord
from caslab.oldserver.process import LegacyServerError, publish_ics
from caslab.radicale import (
    RadicaleError,
    calendar_url_for,
    ensure_calendar,
    put_event,
    radicale_command,
    radicale_environment,
    write_server_files,
)
from caslab.seed import SeedEvent, SeedMailbox, generate_calendar
from caslab.tls import CertPair, issue_cert, make_ca
from sitemap.load import SitemapError, load_sitemap
from sitemap.model import Mailbox, SecretUnavailable, Site, Sitemap

__all__ = [
    "LabInputError",
    "LabPartError",
    "SeedReport",
    "TlsResult",
    "Zone",
    "load_zone",
    "prepare_tls",
    "read_password",
    "run_radicale",
    "seed_sitemap",
    "serve_zone",
    "stop_signals",
]

RENEW_BEFORE = timedelta(days=7)
"""A node certificate expiring sooner than this is re-issued even if its names still match."""


class LabPartError(Exception):
    """A lab part could not do its job (a backend never answered); the message says why."""


class LabInputError(LabPartError):
    """A flag or input file the user can fix (a missing password file, a malformed zone)."""


def read_password(path: str | Path) -> str:
    """The password in file `path`, without surrounding white space (as `SecretRef` reads it)."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise LabInputError(f"cannot read password file {path}: {exc.strerror or exc}") from None
    if not value:
        raise LabInputError(f"password file {path} is empty")
    return value


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while inside; the previous handlers come back after."""
    stop = threading.Event()
    wanted = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in wanted}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# --- lab-tls -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsResult:
    """What `prepare_tls` left in place and which parts of it it made this time."""

    ca: CertPair
    node: CertPair
    made_ca: bool
    issued_node: bool
    made_secrets: tuple[str, ...]


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.rstrip(".").lower()


def _node_is_current(node: CertPair, ca_cert: x509.Certificate, names: set[str]) -> bool:
    """Whether `node` exists, is signed by `ca_cert`, is not about to expire and has `names`."""
    if not (node.cert.is_file() and node.key.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(node.cert.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        key = serialization.load_pem_private_key(node.key.read_bytes(), password=None)
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if key.public_key() != cert.public_key():  # a key from another run
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < RENEW_BEFORE:
        return False
    present = {_canonical(n) for n in alt.get_values_for_type(x509.DNSName)}
    present |= {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)}
    return present == names


def _make_secret(path: Path) -> bool:
    """Write a random secret to `path` (mode 0600) unless it exists; True if written now."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32))
    return True


def prepare_tls(out: str | Path, names: Sequence[str], secret_names: Sequence[str]) -> TlsResult:
    """Keep or make `out/tls/ca.{pem,key}`; (re-)issue `out/tls/node.{pem,key}` for `names` only
    when they changed (or the certificate is missing, expiring or from another CA); write each
    missing `out/secrets/<name>`. Raises `LabInputError` for an empty or unusable name."""
    if not names or any(not n.strip() for n in names):
        raise LabInputError("--names needs at least one non-empty DNS name or IP address")
    bad = [n for n in secret_names if not n or n.startswith(".") or "/" in n or "\\" in n]
    if bad:
        raise LabInputError(f"--secrets {bad[0]!r}: not a plain file name")
    root = Path(out)
    tls_dir, secret_dir = root / "tls", root / "secrets"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = CertPair(tls_dir / "ca.pem", tls_dir / "ca.key")
    made_ca = not (ca.cert.is_file() and ca.key.is_file())
    if made_ca:
        ca = make_ca(tls_dir)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    node = CertPair(tls_dir / "node.pem", tls_dir / "node.key")
    wanted = list(dict.fromkeys(_canonical(n.strip()) for n in names))
    issued = not _node_is_current(node, ca_cert, set(wanted))
    if issued:
        fresh = issue_cert(ca, tls_dir, "node.new", wanted)
        os.replace(fresh.key, node.key)
        os.replace(fresh.cert, node.cert)
    secret_dir.mkdir(mode=0o700, exist_ok=True)
    made = tuple(name for name in secret_names if _make_secret(secret_dir / name))
    return TlsResult(ca, node, made_ca, issued, made)


# --- lab-radicale --------------------------------------------------------------------------------


def run_radicale(
    folder: str | Path,
    host: str,
    port: int,
    users: Mapping[str, str],
    admins: Sequence[str],
    readers: Sequence[str],
) -> NoReturn:
    """Write Radicale's files into `folder`, then replace this process with Radicale.

    Radicale itself (through `caslab.radicale_main`, for its listen backlog) then handles
    SIGTERM and SIGINT by closing its sockets and exiting 0.
    """
    try:
        config = write_server_files(
            folder, users, admins=admins, readers=readers, host=host, port=port
        )
    except ValueError as exc:
        raise LabInputError(str(exc)) from None
    except OSError as exc:
        raise LabInputError(f"cannot write Radicale's files in {folder}: {exc}") from None
    print(
        f"lab-radicale: serving {config.parent / 'collections'} on {host}:{port} "
        f"(admins: {', '.join(admins) or '-'}; readers: {', '.join(readers) or '-'})",
        flush=True,
    )
    sys.stderr.flush()
    os.chdir(config.parent)
    command = radicale_command(config)
    os.execve(command[0], command, radicale_environment())


# --- lab-dns -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Zone:
    """A zone file's records: SRV and A record sets by owner name, all with one TTL."""

    ttl: int
    srv: Mapping[str, tuple[SrvRecord, ...]]
    a: Mapping[str, tuple[str, ...]]


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise LabInputError(f"{where}: expected a mapping of names")
    return value


def _srv_record(raw: Any, where: str) -> SrvRecord:
    fields = ("priority", "weight", "port", "target")
    if not isinstance(raw, dict) or set(raw) != set(fields):
        raise LabInputError(f"{where}: expected exactly {{{', '.join(fields)}}}")
    numbers = [raw[f] for f in fields[:3]]
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 65535 for n in numbers):
        raise LabInputError(f"{where}: priority, weight and port must be integers 0..65535")
    if not isinstance(raw["target"], str) or not raw["target"].strip():
        raise LabInputError(f"{where}: target must be a host name")
    return (numbers[0], numbers[1], numbers[2], raw["target"].strip())


def _ipv4(raw: Any, where: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(raw)))
    except ValueError:
        raise LabInputError(f"{where}: {raw!r} is not an IPv4 address") from None


def load_zone(path: str | Path) -> Zone:
    """Read `{ttl, srv: {NAME: [{priority, weight, port, target}]}, a: {NAME: [ip]}}` (YAML or
    JSON). SRV targets need no A record here. Raises `LabInputError` naming the bad entry."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LabInputError(f"cannot read zone file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LabInputError(f"{path}: not YAML or JSON: {exc}") from None
    top = _mapping(document, str(path))
    unknown = sorted(set(top) - {"ttl", "srv", "a"})
    if unknown:
        raise LabInputError(f"{path}: unknown key {unknown[0]!r} (known: ttl, srv, a)")
    ttl = top.get("ttl", 60)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 2**31 - 1:
        raise LabInputError(f"{path}: ttl must be a non-negative integer, not {ttl!r}")
    srv: dict[str, tuple[SrvRecord, ...]] = {}
    for name, records in _mapping(top.get("srv"), f"{path}: srv").items():
        if not isinstance(records, list):
            raise LabInputError(f"{path}: srv.{name}: expected a list of records")
        srv[name] = tuple(_srv_record(r, f"{path}: srv.{name}[{i}]") for i, r in enumerate(records))
    a: dict[str, tuple[str, ...]] = {}
    for name, addresses in _mapping(top.get("a"), f"{path}: a").items():
        if not isinstance(addresses, list):
            raise LabInputError(f"{path}: a.{name}: expected a list of IPv4 addresses")
        a[name] = tuple(_ipv4(ip, f"{path}: a.{name}[{i}]") for i, ip in enumerate(addresses))
    return Zone(ttl, srv, a)


def serve_zone(zone: Zone, host: str, port: int, stop: threading.Event) -> int:
    """Answer `zone` over UDP and TCP on `host:port`, any client, until `stop` is set; 0."""
    try:
        responder = DnsResponder(host, port, allow_any_address=True)
    except ValueError as exc:
        raise LabInputError(f"--host {host!r}: not an IP address ({exc})") from None
    for name, records in zone.srv.items():
        responder.set_srv(name, records, ttl=zone.ttl)
    for name, addresses in zone.a.items():
        responder.set_a(name, addresses, ttl=zone.ttl)
    try:
        responder.start()
    except OSError as exc:
        raise LabInputError(f"cannot listen on {host}:{port} (UDP and TCP): {exc}") from None
    try:
        print(
            f"lab-dns: {len(zone.srv)} SRV and {len(zone.a)} A names on {host}:{responder.port} "
            "(UDP, TCP)",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        responder.stop()
    return 0


# --- lab-seed ------------------------------------------------------------------------------------

SEED_DAYS_BACK = 7  # the same range `cas lab` seeds (caslab.runner)
SEED_DAYS = 42
SEED_CONCURRENCY = 8  # Radicale's built-in server resets bursts of more (caslab.radicale)
WAIT_INTERVAL = 0.5
LEGACY_SEED_OFFSET = 1000  # rng_seed of a site's n-th legacy mailbox: 1000 + n, as `cas lab`


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What `seed_sitemap` wrote: calendars and their events, and legacy mailboxes published."""

    calendars: int
    events: int
    legacy: int


def seed_sitemap(
    path: str | Path, caldav_user: str, caldav_password: str, *, timeout: float = 60.0
) -> SeedReport:
    """Wait (at most `timeout` seconds) until every site's CalDAV and legacy server answers,
    then seed every modern mailbox's calendar and publish every legacy mailbox's free/busy over
    [today - 7 days, +42 days). PUTs replace, so a second run rewrites the same data.

    Raises `LabInputError` for an unusable sitemap, `LabPartError` when a server never answers
    or refuses a write."""
    try:
        sitemap = load_sitemap(path)
    except SitemapError as exc:
        raise LabInputError(str(exc)) from None
    return asyncio.run(_Seeder(sitemap, (caldav_user, caldav_password), timeout).run())


def _calendar_name(site: Site, mailbox: Mailbox) -> str:
    """The calendar collection's name, when the node reads it at `<caldav.url><address>/<name>/`
    (the layout `ensure_calendar` makes); `LabInputError` for any other layout."""
    assert site.caldav is not None
    config = site.caldav
    base = config.url if config.url.endswith("/") else config.url + "/"
    path = config.calendar_path.format(
        address=quote(mailbox.address, safe="@+"), local=quote(mailbox.local_part, safe="+")
    )
    wanted = mailbox.calendar_url or urljoin(base, path.lstrip("/"))
    name = unquote(wanted.rstrip("/").rsplit("/", 1)[-1])
    if calendar_url_for(base, mailbox.address, name).rstrip("/") != wanted.rstrip("/"):
        raise LabInputError(
            f"mailbox {mailbox.address}: its calendar is {wanted}; lab-seed makes calendars "
            "only at <caldav.url><address>/<name>/"
        )
    return name


class _Seeder:
    """One `seed_sitemap` run: the waits, then one task per mailbox under a shared gate."""

    def __init__(self, sitemap: Sitemap, auth: tuple[str, str], timeout: float) -> None:
        self.sitemap, self.auth, self.timeout = sitemap, auth, timeout
        self.start = datetime.now(UTC).date() - timedelta(days=SEED_DAYS_BACK)
        self.publish_start = datetime.combine(self.start, time(0), UTC)
        self.publish_end = self.publish_start + timedelta(days=SEED_DAYS)
        self.calendars = self.events = self.legacy = 0

    def _jobs(self) -> list[tuple[Site, Mailbox, SeedMailbox, int]]:
        jobs = []
        for site in self.sitemap.sites:
            counts = {"modern": 0, "legacy": LEGACY_SEED_OFFSET}
            for mailbox in self.sitemap.mailboxes_of(site.name):
                legacy = mailbox.kind == "legacy"
                n = counts[mailbox.kind]
                counts[mailbox.kind] += 1
                if (site.legacy if legacy else site.caldav) is None:
                    raise LabInputError(
                        f"{self.sitemap.source}: mailbox {mailbox.address} is {mailbox.kind}, "
                        f"but site {site.name} has no {'legacy' if legacy else 'caldav'} server"
                    )
                if not legacy:
                    _calendar_name(site, mailbox)
                zone = mailbox.timezone or site.timezone
                seed = SeedMailbox(mailbox.address, mailbox.display_name or mailbox.address, zone)
                jobs.append((site, mailbox, seed, n))
        return jobs

    async def run(self) -> SeedReport:
        jobs = self._jobs()
        gate = asyncio.Semaphore(SEED_CONCURRENCY)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            await self._wait_for_servers(client)

            async def one(site: Site, mailbox: Mailbox, seed: SeedMailbox, n: int) -> None:
                async with gate:
                    if mailbox.kind == "legacy":
                        await self._publish_legacy(site, seed, n)
                    else:
                        await self._fill_calendar(client, site, mailbox, seed, n)

            await asyncio.gather(*(one(*job) for job in jobs))
        return SeedReport(self.calendars, self.events, self.legacy)

    async def _wait_for_servers(self, client: httpx.AsyncClient) -> None:
        """Any HTTP answer counts (401 and 400 too); give up after `timeout` seconds."""
        deadline = monotonic() + self.timeout
        targets: dict[str, str] = {}
        for site in self.sitemap.sites:
            if site.caldav is not None:
                targets.setdefault(site.caldav.url, f"site {site.name}'s CalDAV server")
            if site.legacy is not None:
                targets.setdefault(site.legacy.url, f"site {site.name}'s legacy server")

        async def wait(url: str, label: str) -> None:
            while True:
                try:
                    await client.request("OPTIONS", url, timeout=2.0)
                    return
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__} {exc}".strip()
                if monotonic() >= deadline:
                    raise LabPartError(
                        f"{label} at {url} did not answer within {self.timeout:g} s ({last})"
                    )
                await asyncio.sleep(WAIT_INTERVAL)

        await asyncio.gather(*(wait(url, label) for url, label in targets.items()))

    def _events(self, seed: SeedMailbox, n: int) -> list[SeedEvent]:
        return generate_calendar(seed, start=self.start, days=SEED_DAYS, rng_seed=n)

    async def _fill_calendar(
        self, client: httpx.AsyncClient, site: Site, mailbox: Mailbox, seed: SeedMailbox, n: int
    ) -> None:
        assert site.caldav is not None
        name = _calendar_name(site, mailbox)
        try:
            url = await ensure_calendar(client, site.caldav.url, mailbox.address, self.auth, name)
            for event in self._events(seed, n):
                await put_event(client, url, event.uid, event.ics, self.auth)
                self.events += 1
        except RadicaleError as exc:
            raise LabPartError(f"site {site.name}, mailbox {mailbox.address}: {exc}") from None
        self.calendars += 1

    async def _publish_legacy(self, site: Site, seed: SeedMailbox, n: int) -> None:
        assert site.legacy is not None
        config = site.legacy
        auth = None
        if config.username and config.password is not None:
            try:
                auth = httpx.BasicAuth(config.username, config.password.resolve())
            except SecretUnavailable as exc:
                raise LabInputError(f"site {site.name}'s legacy password: {exc}") from None
        # Every event is a whole VCALENDAR: the endpoint reads several in one body, and a PUT
        # replaces the mailbox's stored message, so all the events go in one PUT.
        text = "".join(event.ics for event in self._events(seed, n))
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=30, auth=auth) as client:
                await publish_ics(
                    client, config.url, seed.address, text,
                    publish_start=self.publish_start, publish_end=self.publish_end,
                    tz=seed.timezone,
                )  # fmt: skip
        except (LegacyServerError, httpx.HTTPError) as exc:
            raise LabPartError(f"site {site.name}, mailbox {seed.address}: {exc}") from None
        self.legacy += 1
