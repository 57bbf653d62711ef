"""The lab's parts as one-container commands: `cas lab-tls`, `lab-radicale`, `lab-dns`, `lab-seed`.

`compose.yaml` runs each part of the lab `cas lab` runs in-process as its own container of one
image; these are the parts' bodies, and `cas.cli` holds only their flags. `prepare_tls` makes
the cluster CA, the node certificate and the random secrets, keeping what exists; `run_radicale`
writes a Radicale's files (`caslab.radicale`) and becomes that Radicale; `serve_zone` answers a
zone file's SRV and A records until SIGTERM or SIGINT; `seed_sitemap` waits for every site's
CalDAV and legacy server, then fills the calendars with `caslab.seed` events and publishes the
legacy mailboxes' free/busy (`caslab.seedjob`). Each is safe to run again.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from caslab.dnsserver import DnsResponder, SrvRecord
from caslab.radicale import radicale_command, radicale_environment
from caslab.radicale_files import write_server_files
from caslab.tls import CertPair, issue_cert, make_ca

__all__ = [
    "LabInputError",
    "LabPartError",
    "TlsResult",
    "Zone",
    "load_zone",
    "prepare_tls",
    "read_password",
    "run_radicale",
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
