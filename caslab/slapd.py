"""A real OpenLDAP `slapd` run as a subprocess on loopback, for the tests and the benchmarks.

`SlapdProcess` writes its own `slapd.conf` (old-style `-f`, never the system's configuration)
into its folder: the core, cosine and inetOrgPerson schemas, a small schema with Exchange's
`proxyAddresses` and `legacyExchangeDN`, one MDB database under `suffix` with the memberof
overlay (so `memberOf` follows `groupOfNames`), and access rules under which passwords can
only be bound with. It listens on a free port of 127.0.0.1 (`ldap://`, StartTLS when TLS
files are given, and an `ldaps://` port too), waits until an anonymous bind answers, and is
stopped by PID. Bound users may read the whole directory unless `size_limit` is given (the
limit a real directory puts on searches). `add_ldif(text)` loads entries offline (`slapadd`) before the start, the
quick way to load tens of thousands; `ssha(password)` makes a `{SSHA}` userPassword value.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from caslab.process import ManagedProcess, free_port

__all__ = ["SlapdError", "SlapdProcess", "find_slapd", "ssha"]

DEFAULT_BINARY = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
START_TIMEOUT = 15.0
STOP_GRACE = 5.0

# OIDs: Active Directory's for its attributes; OpenLDAP's experimental arc for the class.
EXCHANGE_SCHEMA = """\
attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.4.655 NAME 'legacyExchangeDN'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'casMailRecipient' AUXILIARY
  MAY ( proxyAddresses $ legacyExchangeDN ) )
"""


class SlapdError(RuntimeError):
    """slapd is missing, or did not start."""


def find_slapd() -> str | None:
    found = shutil.which("slapd")
    if found:
        return found
    return DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None


def ssha(password: str, salt: bytes | None = None) -> str:
    """A salted SHA-1 `userPassword` value, as `slappasswd` makes."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class SlapdProcess:
    """One slapd; `root_dn`/`root_password` may write anything under `suffix`."""

    def __init__(
        self,
        folder: str | Path,
        *,
        suffix: str = "dc=contoso,dc=test",
        root_password: str = "root-secret",
        tls: tuple[str, str, str] | None = None,  # (cert file, key file, CA file)
        binary: str | None = None,
        size_limit: int | None = None,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.size_limit = size_limit  # None: bound users may read everything (paged)
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        self.root_password = root_password
        self.tls = tls
        self.binary = binary
        self.port: int | None = None
        self.tls_port: int | None = None
        self._process = ManagedProcess("slapd", self.folder / "slapd.log", error=SlapdError)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def log_tail(self, chars: int = 2000) -> str:
        return self._process.log_tail(chars)

    def _config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "data").mkdir(exist_ok=True)
        schema = self.folder / "exchange.schema"
        schema.write_text(EXCHANGE_SCHEMA)
        tls = ""
        if self.tls is not None:
            cert, key, ca = self.tls
            tls = f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\nTLSCACertificateFile {ca}\n"
        config = self.folder / "slapd.conf"
        config.write_text(
            "".join(
                f"include {SCHEMA_DIR / n}.schema\n" for n in ("core", "cosine", "inetorgperson")
            )
            + f"include {schema}\n"
            + f"modulepath {MODULE_DIR}\nmoduleload back_mdb\nmoduleload memberof\n"
            + f"pidfile {self.folder / 'slapd.pid'}\nargsfile {self.folder / 'slapd.args'}\n"
            + tls
            + "database mdb\nmaxsize 1073741824\n"
            + f'suffix "{self.suffix}"\nrootdn "{self.root_dn}"\nrootpw {self.root_password}\n'
            + f"directory {self.folder / 'data'}\n"
            + "index objectClass eq\nindex mail,uid,member eq\n"
            + (
                "limits users size=unlimited\n"
                if self.size_limit is None
                else f"limits users size={self.size_limit}\n"
            )
            + "access to attrs=userPassword by anonymous auth by * none\n"
            + "access to * by * read\n"
            + "overlay memberof\n"
        )
        return config

    def add_ldif(self, ldif: str) -> None:
        """Load entries offline with slapadd (before `start`, or while stopped)."""
        if self.running:
            raise SlapdError("slapadd needs slapd stopped")
        config = self._config()
        source = self.folder / "load.ldif"
        source.write_text(ldif, encoding="utf-8")
        slapadd = shutil.which("slapadd") or "/usr/sbin/slapadd"
        result = subprocess.run(
            [slapadd, "-f", str(config), "-l", str(source), "-q"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if result.returncode != 0:
            raise SlapdError(f"slapadd failed: {result.stderr[-2000:]}")

    def start(self) -> Self:
        binary = self.binary or find_slapd()
        if binary is None:
            raise SlapdError(
                "slapd not found (install the Debian package slapd; scripts/setup does it)"
            )
        config = self._config()

        def launch(attempt: int) -> None:
            if attempt > 0 or self.port is None:
                self.port = free_port()
                self.tls_port = free_port() if self.tls else None
            urls = f"ldap://127.0.0.1:{self.port}/"
            if self.tls_port is not None:
                urls += f" ldaps://127.0.0.1:{self.tls_port}/"
            # -d keeps slapd in the foreground, where its PID is ours to stop
            self._process.spawn([binary, "-f", str(config), "-h", urls, "-d", "0"])
            self._process.wait_until(self._answers, START_TIMEOUT, f"on {self.url}")

        self._process.start_retrying(launch, 3, clean_up=lambda: self._process.kill(STOP_GRACE))
        return self

    def _answers(self) -> bool:
        from ldap3 import Connection, Server

        try:
            connection = Connection(Server(self.url, connect_timeout=1), receive_timeout=1)
            ok = bool(connection.bind())
            connection.unbind()
            return ok
        except Exception:
            return False

    def admin(self):  # type: ignore[no-untyped-def]
        """A connection bound as the root DN, for seeding and changing entries."""
        from ldap3 import Connection, Server

        connection = Connection(
            Server(self.url, connect_timeout=5),
            self.root_dn,
            self.root_password,
            receive_timeout=10,
        )
        if not connection.bind():
            raise SlapdError(f"root bind failed: {connection.result}")
        return connection

    def stop(self, grace: float = STOP_GRACE) -> None:
        self._process.stop(grace)

    def kill(self) -> None:
        self._process.kill(STOP_GRACE)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
